//! The server's bounds and its own counters: connections open and refused, timeouts, oversized
//! requests, and failed tokens per client address (a bounded table), written into `/metrics`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// The whole request head (request line and headers) must arrive within this, unless
/// `[http] header_timeout_secs` says otherwise.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A kept-alive connection with no new request for this long is closed, unless
/// `[http] idle_timeout_secs` says otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Writing a response must finish within this (a client that never reads is dropped).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head; beyond it: 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines; beyond it: 431.
pub const MAX_HEADERS: usize = 64;
/// Largest request body (every method); beyond it: 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest model upload (`POST /api/model`, with the token, one at a time); beyond it: 413.
pub const MAX_MODEL_BYTES: usize = 256 * 1024 * 1024;
/// A model upload's body must arrive within this (a 14 MB model over a slow link).
pub const MODEL_UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections over `max_connections` that still get an answer: `/healthz` is served, anything
/// else gets 503. Beyond these, a connection is closed at once.
pub const OVERFLOW_CONNECTIONS: usize = 32;
/// How long an over-the-limit connection may take to send its request head.
pub const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Threads that run the handlers (JSON, JPEG, reload); `/healthz` is answered without them.
pub const HANDLER_THREADS: usize = 3;
/// Client addresses tracked for failed tokens; the rest are summed under `addr="other"`.
pub const TRACKED_ADDRESSES: usize = 256;

/// The server's own counters.
#[derive(Default)]
pub struct Counters {
    pub open: AtomicUsize,
    pub overflow_open: AtomicUsize,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub too_large: AtomicU64,
    pub bad_requests: AtomicU64,
    failed_tokens: Mutex<FailedTokens>,
}

#[derive(Default)]
struct FailedTokens {
    by_addr: HashMap<IpAddr, u64>,
    other: u64,
}

impl Counters {
    /// A request without the right token from `addr`.
    pub fn failed_token(&self, addr: IpAddr) {
        let mut f = self.failed_tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = f.by_addr.get_mut(&addr) {
            *n += 1;
        } else if f.by_addr.len() < TRACKED_ADDRESSES {
            f.by_addr.insert(addr, 1);
        } else {
            f.other += 1;
        }
    }

    /// Appends this server's samples in the Prometheus text format.
    pub fn prometheus(&self, out: &mut String, max_connections: usize) {
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP lookout_http_connections_open HTTP connections open now (limit: lookout_http_max_connections).\n# TYPE lookout_http_connections_open gauge\nlookout_http_connections_open {}",
            self.open.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP lookout_http_max_connections [http] max_connections.\n# TYPE lookout_http_max_connections gauge\nlookout_http_max_connections {max_connections}"
        );
        counter(
            out,
            "lookout_http_connections_accepted_total",
            "HTTP connections accepted within the limit.",
            self.accepted.load(Relaxed),
        );
        counter(
            out,
            "lookout_http_connections_refused_total",
            "HTTP connections over max_connections (answered 503, or /healthz only, or closed at once).",
            self.refused.load(Relaxed),
        );
        counter(
            out,
            "lookout_http_header_timeouts_total",
            "Connections closed because the request head did not arrive in time.",
            self.header_timeouts.load(Relaxed),
        );
        counter(
            out,
            "lookout_http_requests_too_large_total",
            "Requests refused for their head (431) or body (413) size.",
            self.too_large.load(Relaxed),
        );
        counter(
            out,
            "lookout_http_bad_requests_total",
            "Requests that could not be parsed (400).",
            self.bad_requests.load(Relaxed),
        );
        let f = self.failed_tokens.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP lookout_http_token_failures_total Requests with a missing or wrong token, by client address (at most {TRACKED_ADDRESSES} addresses, the rest as \"other\").\n# TYPE lookout_http_token_failures_total counter"
        );
        let mut rows: Vec<_> = f.by_addr.iter().collect();
        rows.sort();
        for (addr, n) in rows {
            let _ = writeln!(
                out,
                "lookout_http_token_failures_total{{addr=\"{addr}\"}} {n}"
            );
        }
        if f.other > 0 {
            let _ = writeln!(
                out,
                "lookout_http_token_failures_total{{addr=\"other\"}} {}",
                f.other
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failed_token_table_is_bounded() {
        let c = Counters::default();
        for i in 0..(TRACKED_ADDRESSES as u32 + 10) {
            c.failed_token(IpAddr::from(i.to_be_bytes()));
        }
        c.failed_token(IpAddr::from([0, 0, 0, 0]));
        let mut out = String::new();
        c.prometheus(&mut out, 64);
        let rows = out
            .lines()
            .filter(|l| l.starts_with("lookout_http_token_failures_total{"))
            .count();
        assert_eq!(rows, TRACKED_ADDRESSES + 1);
        assert!(out.contains("lookout_http_token_failures_total{addr=\"0.0.0.0\"} 2"));
        assert!(out.contains("lookout_http_token_failures_total{addr=\"other\"} 10"));
    }
}
