//! The embedded HTTP server: live view, health, Prometheus metrics, status and recent events.
//!
//! Off unless `[http] listen` is set; the reference config listens on loopback only. Every
//! endpoint except `/healthz` requires the bearer token when `token_env` is set (as an
//! `Authorization: Bearer` header, or `?token=` for the browser page and its requests).
//! Requests are served by a few threads of their own; they only read shared state (counters,
//! the latest frame), so a slow client never slows the pipeline.
//!
//! | path | what |
//! |---|---|
//! | `/` | the live view page (HTML/JS served from the binary, no external resources) |
//! | `/healthz` | `200 ok` while frames are classified; `503` and the reason otherwise |
//! | `/metrics` | Prometheus text format: counters, stage latency histograms, sinks, process |
//! | `/api/status` | JSON: device, source, model, health, counters and latency summaries |
//! | `/api/live` | JSON: the latest frame's sequence number, capture time and top-k |
//! | `/api/history?since=MS` | JSON: timeline points (top-k per ~250 ms) after `since` |
//! | `/api/events?limit=N` | JSON: the most recent events (default 50, at most 200) |
//! | `/frame.jpg` | the latest classified frame as JPEG |
//! | `POST /api/reload` | re-read the configuration file (needs `token_env`); 200 and what changed, or 422 and why nothing did |

//!
//! Layout: the config, shared state and server threads here; `routes` answers each path,
//! `respond` builds responses and reads queries and the token, `prometheus` writes `/metrics`.

mod prometheus;
mod respond;
mod routes;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::health::Report;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::problems::Problems;
use routes::handle;

/// `[http]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on, e.g. "127.0.0.1:9090". Unset: no HTTP server.
    #[serde(default)]
    pub listen: Option<String>,
    /// Environment variable holding a bearer token that every endpoint except /healthz requires.
    #[serde(default)]
    pub token_env: Option<String>,
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
    pub version: &'static str,
}

/// A reload request to the daemon's main loop, with where to send the outcome.
pub type ReloadRequest = crossbeam_channel::Sender<Result<String, String>>;

/// Everything the handlers read.
pub struct State {
    pub metrics: Arc<Metrics>,
    pub live: Arc<Live>,
    pub health: Arc<Mutex<Report>>,
    /// Replaced when a reload changes the model.
    pub info: Arc<Mutex<Info>>,
    /// Where `POST /api/reload` sends its request; `None`: reloading is not offered.
    pub reload: Option<crossbeam_channel::Sender<ReloadRequest>>,
}

/// A running server; [`Server::stop`] ends it.
pub struct Server {
    server: Arc<tiny_http::Server>,
    threads: Vec<JoinHandle<()>>,
    pub addr: SocketAddr,
}

const THREADS: usize = 3;
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
        let server = tiny_http::Server::http(listen.as_str()).map_err(|e| HttpError::Listen {
            addr: listen.clone(),
            why: e.to_string(),
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| HttpError::Listen {
                addr: listen.clone(),
                why: "not an IP socket".into(),
            })?;
        if !addr.ip().is_loopback() && token.is_none() {
            log::warn!("HTTP server listens on {addr}, beyond this machine, without a token: anyone on the network can watch the camera. Set [http] token_env.");
        }
        let server = Arc::new(server);
        let shared = Arc::new((state, token, Instant::now()));
        let mut threads = Vec::new();
        for i in 0..THREADS {
            let (server, shared) = (Arc::clone(&server), Arc::clone(&shared));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("http-{i}"))
                    .spawn(move || {
                        let (state, token, started) = &*shared;
                        while let Ok(req) = server.recv() {
                            handle(req, state, token.as_deref(), *started);
                        }
                    })
                    .map_err(HttpError::Thread)?,
            );
        }
        log::info!("HTTP server listening. url=http://{addr}/");
        Ok(Some(Server {
            server,
            threads,
            addr,
        }))
    }

    pub fn stop(self) {
        for _ in &self.threads {
            self.server.unblock();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}
