//! The embedded HTTP server: live view, health, Prometheus metrics, status and recent events.
//!
//! Off unless `[http] listen` is set; the reference config listens on loopback only. Every
//! endpoint except `/healthz` requires the bearer token when `token_env` is set (as an
//! `Authorization: Bearer` header, or `?token=` for the browser page and its requests).
//! The `?token=` form is accepted only on GET of the page's own paths, never on POST, and is
//! never logged. Requests only read shared state (counters, the latest frame), so a slow client
//! never slows the pipeline.
//!
//! Bounded by design: connections are tasks on a one-thread tokio runtime of the server's own
//! (tokio is already built for the MQTT client), at most `max_connections` at a time, each
//! request head within `header_timeout_secs` (5 s) and 16 KiB (else 408/431), each body within
//! 64 KiB (else 413; a model upload, one at a time and only with the token, within 256 MiB and
//! 5 minutes), kept-alive connections closed after `idle_timeout_secs` (15 s); the
//! handlers run on 3 threads, `/healthz` on none (answered on the runtime, also for a few
//! connections over the limit), so the thread count is fixed and descriptors are at most `max_connections` plus a few. The earlier
//! tiny_http server started a thread per connection with no limit or timeout; hyper, the
//! well-kept alternative, is not in this build's tree, so requests are parsed by httparse
//! (see `conn`). Limits and counters: `limits`.
//!
//! | path | what |
//! |---|---|
//! | `/` | the live view page (HTML/JS served from the binary, no external resources) |
//! | `/healthz` | `200 ok` while frames are classified (`ok (degraded: ...)` naming the sources down); `503` and the reason otherwise |
//! | `/metrics` | Prometheus text format: counters, stage latency histograms, sinks, process |
//! | `/api/status` | JSON: device, source, model, health, counters and latency summaries |
//! | `/api/live` | JSON: the first source's latest frame (sequence number, capture time, top-k), and `sources`: each source's health, latest frame, top-k and regions (rectangle, top-k) |
//! | `/api/history?since=MS&source=NAME` | JSON: a source's timeline points (top-k per ~250 ms) after `since` |
//! | `/api/events?limit=N&source=NAME` | JSON: the most recent events (default 50, at most 200), of all sources or of one |
//! | `/frame.jpg?source=NAME` | a source's latest classified frame as JPEG |
//! | `POST /api/reload` | re-read the configuration file (needs `token_env`); 200 and what changed, or 422 and why nothing did |
//! | `/collect`, `/api/collect`, `/collect/image`, `POST /api/collect/label`, `/api/collect/delete` | the labelling page over the `[collect]` dataset and its API ([`collect`]; the POSTs need `token_env`) |
//! | `POST /api/model?name=NAME` | the body (an ONNX file, up to 256 MiB) becomes model NAME's file (default `default`), then a reload (needs `token_env`); 200, or 422 and why, with the previous file kept or back in place ([`crate::deploy`]) |
//!
//! `source=NAME` is optional: the first source by default (all sources for events); a name the
//! daemon does not have is a 404 that lists the names it has.

//!
//! Layout: the config, shared state and the accept loop here; `conn` reads requests and writes
//! responses on one connection, `request` is the parsed request, `limits` holds the bounds and the server's counters, `routes`
//! answers each path (`sources`: `/api/live` with each source's health; `collect`: the labelling page's paths), `respond` builds responses and reads queries and the token, `prometheus`
//! writes `/metrics`.

mod collect;
mod conn;
mod limits;
mod prometheus;
mod request;
mod respond;
mod routes;
mod sources;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::health::Report;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::problems::Problems;

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on, e.g. "127.0.0.1:9090". Unset: no HTTP server.
    #[serde(default)]
    pub listen: Option<String>,
    /// Environment variable holding a bearer token that every endpoint except /healthz requires.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Most connections served at once (default 64). Beyond it a connection gets `/healthz` or
    /// 503 and is closed, counted in `lookout_http_connections_refused_total`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send a whole request head (request line and headers), on a new
    /// connection and for each next request on a kept-alive one; then 408 and closed, counted
    /// in `lookout_http_header_timeouts_total`. Also the limit for a request body. 0.5..60;
    /// default 5.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: f64,
    /// Seconds a kept-alive connection may wait for its next request before it is closed.
    /// 1..3600; default 15.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: f64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            token_env: None,
            max_connections: default_max_connections(),
            header_timeout_secs: default_header_timeout(),
            idle_timeout_secs: default_idle_timeout(),
        }
    }
}

fn default_max_connections() -> usize {
    64
}
fn default_header_timeout() -> f64 {
    limits::DEFAULT_HEADER_TIMEOUT.as_secs_f64()
}
fn default_idle_timeout() -> f64 {
    limits::DEFAULT_IDLE_TIMEOUT.as_secs_f64()
}

/// Pushes a problem unless `secs` is a number of seconds within `range`.
fn check_secs(p: &mut Problems, key: &str, secs: f64, range: (f64, f64), default: f64, why: &str) {
    if !(secs.is_finite() && secs >= range.0 && secs <= range.1) {
        p.push(
            key,
            format!(
                "expected seconds from {} to {} (default {default}; {why}), got {secs}",
                range.0, range.1
            ),
        );
    }
}

impl HttpConfig {
    pub fn validate(&self, p: &mut Problems) {
        if let Some(l) = &self.listen {
            if l.parse::<SocketAddr>().is_err() {
                p.push(
                    "http.listen",
                    format!(
                        "expected an IP address and port such as \"127.0.0.1:9090\", got {l:?}"
                    ),
                );
            }
        }
        if let Some(v) = &self.token_env {
            if v.is_empty() {
                p.push("http.token_env", "must name an environment variable");
            }
        }
        if !(1..=10_000).contains(&self.max_connections) {
            p.push(
                "http.max_connections",
                format!(
                    "must be between 1 and 10000 (default 64), got {}",
                    self.max_connections
                ),
            );
        }
        check_secs(
            p,
            "http.header_timeout_secs",
            self.header_timeout_secs,
            (0.5, 60.0),
            default_header_timeout(),
            "a longer one lets slow clients hold connections longer",
        );
        check_secs(
            p,
            "http.idle_timeout_secs",
            self.idle_timeout_secs,
            (1.0, 3600.0),
            default_idle_timeout(),
            "an idle kept-alive connection holds one of max_connections",
        );
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr} (in use, or not an address of this machine?): {why}")]
    Listen { addr: String, why: String },
    #[error("http.token_env {0:?} is not set; export it, or remove token_env")]
    Token(String),
    #[error("cannot start HTTP thread")]
    Thread(#[source] std::io::Error),
}

/// Static facts for `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub device: String,
    pub source: String,
    pub model: String,
    pub input: Vec<usize>,
    pub quantization: String,
    pub labels: Vec<String>,
    /// Every model loaded (`model`, `input`, `quantization` and `labels` above are the first
    /// one's: `[model]` when a source or region uses it).
    pub models: Vec<ModelInfo>,
    pub version: &'static str,
    /// The validation accuracy on the card of the first model (`NAME.card.json` beside its
    /// file, written by `lookout train`); absent without a card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_card_accuracy: Option<f64>,
}

/// One loaded model, for `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// "default" (`[model]`) or the `[models.NAME]` name.
    pub name: String,
    /// The model file (or the bundled model's name).
    pub path: String,
    /// How many labels (classes) it scores.
    pub classes: usize,
    /// The sources (`source`) and regions (`source.region`) it classifies.
    pub used_by: Vec<String>,
    /// The validation accuracy on its model card (`NAME.card.json` beside the file); absent
    /// without a card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_accuracy: Option<f64>,
}

/// Where the daemon's main loop sends the outcome of a request: what was done, or why nothing
/// was.
pub type Reply = crossbeam_channel::Sender<Result<String, String>>;

/// A request to the daemon's main loop from a write endpoint.
pub enum Control {
    /// `POST /api/reload`: re-read the configuration file.
    Reload(Reply),
    /// `POST /api/model?name=NAME`: install `bytes` as model `model`'s file, then reload.
    Deploy {
        model: String,
        bytes: Vec<u8>,
        reply: Reply,
    },
}

/// Everything the handlers read.
pub struct State {
    pub metrics: Arc<Metrics>,
    pub live: Arc<Live>,
    pub health: Arc<Mutex<Report>>,
    /// Replaced when a reload changes the model.
    pub info: Arc<Mutex<Info>>,
    /// Where `POST /api/reload` and `POST /api/model` send their requests; `None`: neither
    /// is offered.
    pub reload: Option<crossbeam_channel::Sender<Control>>,
    /// The `[collect]` dataset the `/collect` page shows; `None` inside: collecting is off.
    pub collect: crate::collect::Shelf,
}

/// What every connection reads.
pub(crate) struct Shared {
    state: State,
    token: Option<String>,
    started: Instant,
    max_connections: usize,
    /// `[http] header_timeout_secs` and `idle_timeout_secs`.
    header_timeout: Duration,
    idle_timeout: Duration,
    counters: limits::Counters,
    /// A model upload is being read or handled (one at a time).
    uploading: Arc<std::sync::atomic::AtomicBool>,
}

/// A running server; [`Server::stop`] ends it.
pub struct Server {
    stop: tokio::sync::watch::Sender<bool>,
    thread: JoinHandle<()>,
    pub addr: SocketAddr,
}

const PAGE: &str = include_str!("../../web/index.html");

impl Server {
    pub fn start(cfg: &HttpConfig, state: State) -> Result<Option<Server>, HttpError> {
        let Some(listen) = &cfg.listen else {
            return Ok(None);
        };
        let token = match &cfg.token_env {
            Some(var) => Some(
                std::env::var(var)
                    .ok()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| HttpError::Token(var.clone()))?,
            ),
            None => None,
        };
        let listen_err = |why: String| HttpError::Listen {
            addr: listen.clone(),
            why,
        };
        let listener =
            std::net::TcpListener::bind(listen.as_str()).map_err(|e| listen_err(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| listen_err(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| listen_err(e.to_string()))?;
        if !addr.ip().is_loopback() && token.is_none() {
            log::warn!("HTTP server listens on {addr}, beyond this machine, without a token: anyone on the network can watch the camera. Set [http] token_env.");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(limits::HANDLER_THREADS)
            .thread_name("http-handler")
            .build()
            .map_err(HttpError::Thread)?;
        let shared = Arc::new(Shared {
            state,
            token,
            started: Instant::now(),
            max_connections: cfg.max_connections,
            header_timeout: Duration::from_secs_f64(cfg.header_timeout_secs),
            idle_timeout: Duration::from_secs_f64(cfg.idle_timeout_secs),
            counters: limits::Counters::default(),
            uploading: Arc::default(),
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, shared, stopped));
                // A reload request can keep a handler waiting; do not wait for it.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(HttpError::Thread)?;
        log::info!("HTTP server listening. url=http://{addr}/");
        Ok(Some(Server { stop, thread, addr }))
    }

    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

/// A connection's place in the count (`true`: an overflow one), given back when its task ends,
/// however it ends.
struct Slot(Arc<Shared>, bool);

impl Drop for Slot {
    fn drop(&mut self) {
        let c = &self.0.counters;
        if self.1 { &c.overflow_open } else { &c.open }.fetch_sub(1, Relaxed);
    }
}

/// Accepts connections until told to stop: within `max_connections` each is served; over it,
/// up to [`limits::OVERFLOW_CONNECTIONS`] more get `/healthz` or 503; the rest are closed.
async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("HTTP server cannot use its socket; no HTTP. error={e}");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, most likely: wait for some to close.
                log::warn!("HTTP server cannot accept a connection; retrying in 0.1 s. error={e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let c = &shared.counters;
        if c.open.load(Relaxed) < shared.max_connections {
            c.open.fetch_add(1, Relaxed);
            c.accepted.fetch_add(1, Relaxed);
            let slot = Slot(Arc::clone(&shared), false);
            tokio::spawn(async move {
                conn::serve(stream, peer.ip(), Arc::clone(&slot.0)).await;
                drop(slot);
            });
            continue;
        }
        c.refused.fetch_add(1, Relaxed);
        if c.overflow_open.load(Relaxed) < limits::OVERFLOW_CONNECTIONS {
            c.overflow_open.fetch_add(1, Relaxed);
            let slot = Slot(Arc::clone(&shared), true);
            tokio::spawn(async move {
                conn::overflow(stream, peer.ip(), Arc::clone(&slot.0)).await;
                drop(slot);
            });
        }
        // else: dropped here, closed at once.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_defaults_to_64_and_is_validated_with_its_key() {
        let cfg: HttpConfig = toml::from_str("listen = \"127.0.0.1:9090\"").expect("parses");
        assert_eq!(cfg.max_connections, 64);
        let mut p = Problems::default();
        cfg.validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
        let cfg: HttpConfig = toml::from_str("max_connections = 0").expect("parses");
        let mut p = Problems::default();
        cfg.validate(&mut p);
        assert_eq!(p.0.len(), 1, "{p:?}");
        assert_eq!(p.0[0].key, "http.max_connections");
        assert!(p.0[0].message.contains("between 1 and 10000"), "{p:?}");
    }

    #[test]
    fn timeouts_default_to_5_and_15_s_and_are_validated_with_their_keys() {
        let cfg: HttpConfig = toml::from_str("").expect("parses");
        assert_eq!(
            (cfg.header_timeout_secs, cfg.idle_timeout_secs),
            (5.0, 15.0)
        );
        let cfg: HttpConfig =
            toml::from_str("header_timeout_secs = 2.5\nidle_timeout_secs = 120").expect("parses");
        let mut p = Problems::default();
        cfg.validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
        for (toml, key, want) in [
            (
                "header_timeout_secs = 0",
                "http.header_timeout_secs",
                "from 0.5 to 60",
            ),
            (
                "header_timeout_secs = 61",
                "http.header_timeout_secs",
                "from 0.5 to 60",
            ),
            (
                "header_timeout_secs = nan",
                "http.header_timeout_secs",
                "got NaN",
            ),
            (
                "idle_timeout_secs = 0.5",
                "http.idle_timeout_secs",
                "from 1 to 3600",
            ),
            ("idle_timeout_secs = -1", "http.idle_timeout_secs", "got -1"),
            (
                "idle_timeout_secs = inf",
                "http.idle_timeout_secs",
                "from 1 to 3600",
            ),
        ] {
            let cfg: HttpConfig = toml::from_str(toml).expect(toml);
            let mut p = Problems::default();
            cfg.validate(&mut p);
            assert_eq!(p.0.len(), 1, "{toml}: {p:?}");
            assert_eq!(p.0[0].key, key, "{toml}");
            assert!(p.0[0].message.contains(want), "{toml}: {p:?}");
        }
        let e = toml::from_str::<HttpConfig>("header_timeout_secs = \"5\"").expect_err("a string");
        assert!(e.to_string().contains("header_timeout_secs"), "{e}");
    }
}
