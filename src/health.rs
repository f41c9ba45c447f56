//! Is the pipeline making progress? The answer feeds systemd's watchdog (and the log).
//!
//! Two stages can hang in ways the pipeline cannot recover from itself, and both are detected
//! from the counters alone:
//! - the workers (or the dispatcher behind them): frames keep arriving, but none has been
//!   classified or rejected for `stall`;
//! - the capture thread: it has not come back from the source for `capture_limit`. A source
//!   that fails is not stuck: the capture thread reports back between reconnection attempts,
//!   so a camera that is unplugged for hours keeps the watchdog fed (it is reopened forever).
//!
//! A source that delivers nothing at all (a stalled stream) is the source's business: its
//! `stall_timeout` turns that into an error and a reconnection. It does make the daemon
//! unhealthy for `/healthz` ([`Report`]): no frame classified for [`IDLE_LIMIT`].
//!
//! With several sources, a source is *down* while it is being reopened after an error, or when
//! it has delivered no frame for [`IDLE_LIMIT`] (a source whose input ended is not down). Some
//! sources down while frames are still classified: healthy but `degraded`, naming them; no
//! frame classified for [`IDLE_LIMIT`] (every source down, for instance): unhealthy, naming the
//! sources that are down.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::{now_ms, Metrics};

/// `/healthz` turns 503 when no frame was classified for this long (stuck or not).
pub const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// What `/healthz` reports, refreshed every second by the supervisor.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub ok: bool,
    /// A stage is hung (the watchdog stops being fed); implies not ok.
    pub stuck: bool,
    /// Why not, when not ok; which sources are down, when degraded.
    pub reason: Option<String>,
    /// Some sources are down while others keep frames coming (ok stays true).
    pub degraded: bool,
    /// The sources that are down, in config order.
    pub down: Vec<String>,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            ok: false,
            stuck: false,
            reason: Some("starting".into()),
            degraded: false,
            down: Vec::new(),
        }
    }
}

/// Why a source counts as down now, or `None` while it is up (or its input has ended).
pub fn source_down(s: &crate::metrics::SourceMetrics, now: u64) -> Option<String> {
    if s.ended.load(Relaxed) == 1 {
        return None;
    }
    if s.up.load(Relaxed) == 0 {
        return Some(format!(
            "source {} is being reopened after an error (errors {}, reconnects {})",
            s.name,
            s.source_errors.load(Relaxed),
            s.reconnects.load(Relaxed)
        ));
    }
    // No frame yet: starting (a source that never delivers is reopened by its stall timeout).
    let last = s.last_frame.load(Relaxed);
    let quiet = now.saturating_sub(last);
    (last != 0 && quiet > IDLE_LIMIT.as_millis() as u64).then(|| {
        format!(
            "source {} delivered no frame for {:.0} s",
            s.name,
            quiet as f64 / 1000.0
        )
    })
}

/// Tracks the counters between checks.
#[derive(Debug)]
pub struct Watch {
    stall: Duration,
    /// Milliseconds; shared with whoever changes the back-off (a reload), see
    /// [`Watch::capture_limit`].
    capture_limit_ms: Arc<AtomicU64>,
    processed: u64,
    processed_at: u64,
    /// When `processed` last changed (idle time does not reset it).
    progress_at: u64,
    captured: u64,
}

impl Watch {
    /// `stall`: longest time frames may wait with no frame processed. `capture_limit`: longest
    /// time the capture thread may stay inside the source (one read or one back-off delay).
    pub fn new(stall: Duration, capture_limit: Duration) -> Watch {
        Watch {
            stall,
            capture_limit_ms: Arc::new(AtomicU64::new(capture_limit.as_millis() as u64)),
            processed: 0,
            processed_at: now_ms(),
            progress_at: now_ms(),
            captured: 0,
        }
    }

    /// The capture limit in milliseconds, to change it while the watch runs (a reload that
    /// changes `reconnect_max_secs`).
    pub fn capture_limit(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.capture_limit_ms)
    }

    /// `Ok` while the pipeline makes progress, else what is stuck.
    pub fn check(&mut self, m: &Metrics) -> Result<(), String> {
        let now = now_ms();
        let processed = m.inferred.load(Relaxed) + m.failed.load(Relaxed);
        let captured = m.captured.load(Relaxed);
        if processed != self.processed {
            self.processed = processed;
            self.processed_at = now;
            self.progress_at = now;
        } else if captured == self.captured {
            // Nothing arrived and nothing was processed: idle, not stuck.
            self.processed_at = now;
        }
        self.captured = captured;
        let waiting = now.saturating_sub(self.processed_at);
        if waiting > self.stall.as_millis() as u64 {
            return Err(format!(
                "no frame processed for {:.0} s while frames arrive (workers or dispatcher hung)",
                waiting as f64 / 1000.0
            ));
        }
        let sources = m.sources();
        let beats: Vec<(String, u64)> = if sources.is_empty() {
            vec![(String::new(), m.capture_beat.load(Relaxed))]
        } else {
            sources
                .iter()
                .filter(|s| s.ended.load(Relaxed) == 0)
                .map(|s| (format!(" {}", s.name), s.capture_beat.load(Relaxed)))
                .collect()
        };
        for (name, beat) in beats {
            let quiet = now.saturating_sub(beat);
            if beat != 0 && quiet > self.capture_limit_ms.load(Relaxed) {
                return Err(format!(
                    "the capture thread has not returned from the source{name} for {:.0} s",
                    quiet as f64 / 1000.0
                ));
            }
        }
        Ok(())
    }
}

impl Watch {
    /// The `/healthz` verdict: stuck (see [`Watch::check`]), or no frame classified for
    /// [`IDLE_LIMIT`] (the source is down or silent), with counters that say which.
    pub fn report(&mut self, m: &Metrics) -> Report {
        let now = now_ms();
        let sources = m.sources();
        let why_down: Vec<(String, String)> = sources
            .iter()
            .filter_map(|s| source_down(s, now).map(|why| (s.name.to_string(), why)))
            .collect();
        let down: Vec<String> = why_down.iter().map(|(n, _)| n.clone()).collect();
        let reasons: Vec<&str> = why_down.iter().map(|(_, w)| w.as_str()).collect();
        if let Err(why) = self.check(m) {
            return Report {
                ok: false,
                stuck: true,
                reason: Some(format!("stuck: {why}")),
                degraded: false,
                down,
            };
        }
        let idle = now.saturating_sub(self.progress_at);
        if idle > IDLE_LIMIT.as_millis() as u64 {
            let mut why = format!(
                "no frame classified for {:.0} s (source errors {}, reconnects {}, frames captured {})",
                idle as f64 / 1000.0,
                m.source_errors.load(Relaxed),
                m.reconnects.load(Relaxed),
                m.captured.load(Relaxed)
            );
            if !reasons.is_empty() {
                why = format!("{why}: {}", reasons.join("; "));
            }
            return Report {
                ok: false,
                stuck: false,
                reason: Some(why),
                degraded: false,
                down,
            };
        }
        Report {
            ok: true,
            stuck: false,
            reason: (!down.is_empty()).then(|| reasons.join("; ")),
            degraded: !down.is_empty(),
            down,
        }
    }
}

/// Resource use of this process, from /proc (zeros where unavailable).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    pub open_fds: u64,
    pub threads: u64,
}

pub fn process_stats() -> ProcessStats {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    ProcessStats {
        rss_bytes: field("VmRSS:") * 1024,
        threads: field("Threads:"),
        open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        let m = Metrics::new(&[]);
        m.capture_beat.store(now_ms(), Relaxed);
        m
    }

    #[test]
    fn progress_and_idleness_are_healthy() {
        let m = metrics();
        let mut w = Watch::new(Duration::from_millis(50), Duration::from_secs(60));
        for i in 1..5 {
            m.captured.store(i, Relaxed);
            m.inferred.store(i, Relaxed);
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(w.check(&m), Ok(()));
        }
        // Idle: nothing captured, nothing processed, for longer than `stall`.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(w.check(&m), Ok(()));
        }
    }

    #[test]
    fn frames_arriving_without_processing_is_stuck() {
        let m = metrics();
        let mut w = Watch::new(Duration::from_millis(50), Duration::from_secs(60));
        assert_eq!(w.check(&m), Ok(()));
        let mut verdict = Ok(());
        for i in 1..10 {
            m.captured.store(i, Relaxed);
            std::thread::sleep(Duration::from_millis(20));
            verdict = w.check(&m);
        }
        let err = verdict.expect_err("workers hung");
        assert!(err.contains("no frame processed"), "{err}");
        // Processing resumes: healthy again.
        m.failed.store(1, Relaxed);
        assert_eq!(w.check(&m), Ok(()));
    }

    #[test]
    fn process_stats_are_read() {
        let p = process_stats();
        assert!(
            p.rss_bytes > 1_000_000 && p.threads >= 1 && p.open_fds >= 3,
            "{p:?}"
        );
    }

    #[test]
    fn a_capture_thread_that_never_returns_is_stuck() {
        let m = metrics();
        let mut w = Watch::new(Duration::from_secs(60), Duration::from_millis(40));
        assert_eq!(w.check(&m), Ok(()));
        std::thread::sleep(Duration::from_millis(80));
        let err = w.check(&m).expect_err("capture hung");
        assert!(err.contains("capture thread"), "{err}");
        m.capture_beat.store(now_ms(), Relaxed);
        assert_eq!(w.check(&m), Ok(()));
    }
}
