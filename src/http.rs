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

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::health::Report;
use crate::live::Live;
use crate::metrics::{Histogram, Metrics};

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
const PAGE: &str = include_str!("../web/index.html");

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

type Resp = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and ASCII values")
}

fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Resp {
    tiny_http::Response::from_data(body.into())
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"))
}

fn json(value: &impl Serialize) -> Resp {
    match serde_json::to_vec(value) {
        Ok(body) => text(200, "application/json", body),
        Err(e) => text(
            500,
            "text/plain; charset=utf-8",
            format!("cannot encode JSON: {e}\n"),
        ),
    }
}

/// Query parameter `key`, percent-decoded.
fn query(url: &str, key: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn authorized(req: &tiny_http::Request, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let bearer = req.headers().iter().any(|h| {
        h.field.equiv("Authorization")
            && h.value
                .as_str()
                .strip_prefix("Bearer ")
                .is_some_and(|t| t.trim() == token)
    });
    bearer || query(req.url(), "token").as_deref() == Some(token)
}

fn handle(req: tiny_http::Request, state: &State, token: Option<&str>, started: Instant) {
    let url = req.url().to_owned();
    let path = url.split('?').next().unwrap_or("");
    let method = req.method().clone();
    let resp = if path == "/api/reload" {
        if method != tiny_http::Method::Post {
            text(405, "text/plain; charset=utf-8", "POST to reload\n")
                .with_header(header("Allow", "POST"))
        } else if token.is_none() {
            text(
                403,
                "text/plain; charset=utf-8",
                "reloading over HTTP needs a token: set [http] token_env (or send SIGHUP)\n",
            )
        } else if !authorized(&req, token) {
            text(
                401,
                "text/plain; charset=utf-8",
                "missing or wrong bearer token\n",
            )
            .with_header(header("WWW-Authenticate", "Bearer"))
        } else {
            reload(state)
        }
    } else if method != tiny_http::Method::Get && method != tiny_http::Method::Head {
        text(
            405,
            "text/plain; charset=utf-8",
            "only GET is served here\n",
        )
        .with_header(header("Allow", "GET, HEAD"))
    } else if path == "/healthz" {
        healthz(state)
    } else if !authorized(&req, token) {
        text(
            401,
            "text/plain; charset=utf-8",
            "missing or wrong bearer token (Authorization: Bearer <token>, or ?token=)\n",
        )
        .with_header(header("WWW-Authenticate", "Bearer"))
    } else {
        match path {
            "/" | "/index.html" => text(200, "text/html; charset=utf-8", PAGE),
            "/metrics" => text(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                prometheus(state, started),
            ),
            "/api/status" => json(&status(state, started)),
            "/api/live" => json(&state.live.latest()),
            "/api/history" => {
                let since = query(&url, "since")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                json(&state.live.history_since(since))
            }
            "/api/events" => {
                let limit = query(&url, "limit")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(50usize)
                    .min(crate::live::RECENT_EVENTS);
                let (events, total) = state.live.recent_events(limit);
                let events: Vec<&crate::event::Event> = events.iter().map(|e| &**e).collect();
                json(&serde_json::json!({ "total": total, "events": events }))
            }
            "/frame.jpg" => match state.live.jpeg() {
                Some(Ok((seq, bytes))) => text(200, "image/jpeg", bytes.as_slice())
                    .with_header(header("X-Frame-Seq", &seq.to_string())),
                Some(Err(e)) => text(500, "text/plain; charset=utf-8", format!("{e}\n")),
                None => text(
                    404,
                    "text/plain; charset=utf-8",
                    "no frame classified yet\n",
                ),
            },
            _ => text(
                404,
                "text/plain; charset=utf-8",
                "not found; see / for the live view\n",
            ),
        }
    };
    if let Err(e) = req.respond(resp) {
        log::debug!("HTTP client went away. path={path} error={e}");
    }
}

fn reload(state: &State) -> Resp {
    let Some(tx) = &state.reload else {
        return text(
            503,
            "text/plain; charset=utf-8",
            "reloading is not available\n",
        );
    };
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
    if tx.try_send(reply_tx).is_err() {
        return text(
            503,
            "text/plain; charset=utf-8",
            "a reload is already under way; try again\n",
        );
    }
    match reply_rx.recv_timeout(std::time::Duration::from_secs(300)) {
        Ok(Ok(msg)) => text(200, "text/plain; charset=utf-8", format!("{msg}\n")),
        Ok(Err(why)) => text(
            422,
            "text/plain; charset=utf-8",
            format!("not reloaded; the running configuration stays: {why}\n"),
        ),
        Err(_) => text(
            503,
            "text/plain; charset=utf-8",
            "the daemon is shutting down\n",
        ),
    }
}

fn healthz(state: &State) -> Resp {
    let report = state
        .health
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if report.ok {
        text(200, "text/plain; charset=utf-8", "ok\n")
    } else {
        text(
            503,
            "text/plain; charset=utf-8",
            format!(
                "unhealthy: {}\n",
                report.reason.as_deref().unwrap_or("unknown")
            ),
        )
    }
}

#[derive(Serialize)]
struct Status {
    info: Info,
    health: Report,
    uptime_secs: f64,
    counters: crate::metrics::Snapshot,
}

fn status(state: &State, started: Instant) -> Status {
    Status {
        info: state.info.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        health: state
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        uptime_secs: started.elapsed().as_secs_f64(),
        counters: state.metrics.snapshot(),
    }
}

/// Prometheus bucket bounds, seconds.
const LE: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

fn histogram(out: &mut String, name: &str, help: &str, labels: &str, h: &Histogram, head: bool) {
    if head {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    }
    let cumulative = h.cumulative();
    let sep = if labels.is_empty() { "" } else { "," };
    for le in LE {
        // Observations in buckets whose upper bound is within `le`: a lower bound of the true
        // count, exact to the ~10% bucket width.
        let n = cumulative
            .iter()
            .take_while(|(ms, _)| *ms <= le * 1000.0 + 1e-9)
            .last()
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        h.count()
    );
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        out,
        "{name}_sum{braces} {}",
        h.mean_ms() * h.count() as f64 / 1000.0
    );
    let _ = writeln!(out, "{name}_count{braces} {}", h.count());
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn prometheus(state: &State, started: Instant) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &state.metrics;
    let info = state.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut o = String::with_capacity(16 * 1024);
    let _ = writeln!(
        o,
        "# HELP lookout_info Static facts about this daemon.\n# TYPE lookout_info gauge\nlookout_info{{version=\"{}\",device=\"{}\",source=\"{}\",model=\"{}\"}} 1",
        info.version,
        escape(&info.device),
        escape(&info.source),
        escape(&info.model)
    );
    let health = state.health.lock().unwrap_or_else(|e| e.into_inner()).ok;
    gauge(
        &mut o,
        "lookout_healthy",
        "1 while frames are classified (what /healthz reports).",
        if health { 1.0 } else { 0.0 },
    );
    gauge(
        &mut o,
        "lookout_uptime_seconds",
        "Seconds since the daemon started.",
        started.elapsed().as_secs_f64(),
    );
    counter(
        &mut o,
        "lookout_frames_captured_total",
        "Frames delivered by the source.",
        m.captured.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_frames_dropped_total",
        "Frames dropped unprocessed because workers were busy (oldest first).",
        m.dropped.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_frames_classified_total",
        "Frames classified.",
        m.inferred.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_frames_failed_total",
        "Frames that could not be decoded or classified.",
        m.failed.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_source_errors_total",
        "Source failures and stalls.",
        m.source_errors.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_source_reconnects_total",
        "Successful reopenings of the source.",
        m.reconnects.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_events_total",
        "Events produced by the rules.",
        m.events.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_reloads_total",
        "Configuration reloads applied.",
        m.reloads.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_reload_failures_total",
        "Configuration reloads refused (the running configuration was kept).",
        m.reload_failures.load(Relaxed),
    );
    for (name, help, h) in [
        (
            "lookout_queue_wait_seconds",
            "Capture to a worker taking the frame.",
            &m.queue_wait,
        ),
        ("lookout_decode_seconds", "Frame decode to RGB.", &m.decode),
        (
            "lookout_preprocess_seconds",
            "Resize and normalise to the model input.",
            &m.preprocess,
        ),
        ("lookout_inference_seconds", "Model run.", &m.infer),
        (
            "lookout_frame_seconds",
            "Capture to classification done.",
            &m.total,
        ),
        (
            "lookout_event_latency_seconds",
            "Capture to event.",
            &m.event_latency,
        ),
    ] {
        histogram(&mut o, name, help, "", h, true);
    }
    for (name, help, get) in [
        (
            "lookout_sink_sent_total",
            "Events delivered, per sink.",
            0usize,
        ),
        (
            "lookout_sink_failed_total",
            "Deliveries that failed after retries, per sink.",
            1,
        ),
        (
            "lookout_sink_dropped_total",
            "Events dropped because the sink's queue was full, per sink.",
            2,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in &m.sinks() {
            let v = [&s.sent, &s.failed, &s.dropped][get].load(Relaxed);
            let _ = writeln!(o, "{name}{{sink=\"{}\"}} {v}", escape(&s.name));
        }
    }
    for (i, s) in m.sinks().iter().enumerate() {
        histogram(
            &mut o,
            "lookout_sink_latency_seconds",
            "Capture to delivery, per sink.",
            &format!("sink=\"{}\"", escape(&s.name)),
            &s.latency,
            i == 0,
        );
    }
    let p = crate::health::process_stats();
    gauge(
        &mut o,
        "lookout_process_resident_memory_bytes",
        "Resident set size.",
        p.rss_bytes as f64,
    );
    gauge(
        &mut o,
        "lookout_process_open_fds",
        "Open file descriptors.",
        p.open_fds as f64,
    );
    gauge(
        &mut o,
        "lookout_process_threads",
        "Threads.",
        p.threads as f64,
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_and_decoded() {
        assert_eq!(
            query("/x?a=1&token=ab%2Fc+d", "token").as_deref(),
            Some("ab/c d")
        );
        assert_eq!(query("/x?a=1", "token"), None);
        assert_eq!(query("/x", "a"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn histogram_export_is_cumulative_and_complete() {
        let h = Histogram::default();
        for ms in [0.5, 3.0, 3.0, 40.0, 4000.0, 90_000.0] {
            h.record(std::time::Duration::from_secs_f64(ms / 1000.0));
        }
        let mut out = String::new();
        histogram(&mut out, "x_seconds", "help", "", &h, true);
        let value = |le: &str| -> u64 {
            out.lines()
                .find(|l| l.starts_with(&format!("x_seconds_bucket{{le=\"{le}\"}}")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .expect("bucket line")
        };
        assert_eq!(value("0.001"), 1);
        assert_eq!(value("0.005"), 3);
        assert_eq!(value("0.05"), 4);
        assert_eq!(value("5"), 5);
        assert_eq!(value("30"), 5);
        assert_eq!(value("+Inf"), 6);
        assert!(out.contains("x_seconds_count 6"), "{out}");
    }
}
