//! Counters and latency histograms shared by every stage.
//!
//! One [`Metrics`] is created per pipeline run and shared as `Arc<Metrics>`: each counter is an
//! atomic written by exactly one stage (noted at the field) and read by anyone (the periodic
//! summary, `bench`, tests). Histograms use fixed log-spaced buckets, so recording is lock-free
//! and memory does not grow with run time.

mod models;

pub use models::ModelTimes;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// Number of histogram buckets: 10 µs * 1.1^k covers 10 µs .. ~8 minutes.
const BUCKETS: usize = 190;
const FIRST_US: f64 = 10.0;
const GROWTH: f64 = 1.1;

/// A lock-free latency histogram (microsecond resolution, ~10% bucket width).
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

/// Upper bound of bucket `i`, in microseconds.
fn bound_us(i: usize) -> f64 {
    FIRST_US * GROWTH.powi(i as i32)
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = if us <= FIRST_US {
            0
        } else {
            ((us / FIRST_US).ln() / GROWTH.ln()).ceil() as usize
        };
        self.buckets[i.min(BUCKETS - 1)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us as u64, Relaxed);
        self.max_us.fetch_max(us as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The `q` quantile (0..1) in milliseconds: the upper bound of the bucket holding it.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                let max_ms = self.max_us.load(Relaxed) as f64 / 1000.0;
                return (bound_us(i) / 1000.0).min(max_ms.max(FIRST_US / 1000.0));
            }
        }
        self.max_us.load(Relaxed) as f64 / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum_us.load(Relaxed) as f64 / n as f64 / 1000.0
        }
    }

    pub fn snapshot(&self) -> LatencySummary {
        LatencySummary {
            count: self.count(),
            mean: self.mean_ms(),
            p50: self.quantile_ms(0.5),
            p90: self.quantile_ms(0.9),
            p99: self.quantile_ms(0.99),
            max: self.max_us.load(Relaxed) as f64 / 1000.0,
        }
    }

    /// Cumulative counts per upper bound (ms), for Prometheus-style export.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                total += b.load(Relaxed);
                (bound_us(i) / 1000.0, total)
            })
            .collect()
    }
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Delivery counters of one sink. Written by that sink's thread, except `dropped` (dispatcher).
#[derive(Debug, Default)]
pub struct SinkMetrics {
    pub name: String,
    /// Events delivered.
    pub sent: AtomicU64,
    /// Deliveries that failed (after the sink's own retries).
    pub failed: AtomicU64,
    /// Events not queued because the sink's queue was full (dispatcher).
    pub dropped: AtomicU64,
    /// Time from capture to delivery.
    pub latency: Histogram,
    /// The counters of a sink that keeps its own link to a device (modbus): set by the pipeline
    /// each time it starts that sink (a reloaded sink brings new counters), read by `/metrics` and
    /// `/api/status`; `None` for the other sinks.
    pub link: std::sync::Mutex<Option<Arc<LinkStats>>>,
}

impl SinkMetrics {
    /// The device link's counters, when the sink has a link.
    pub fn link(&self) -> Option<Arc<LinkStats>> {
        self.link.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A device link's counters, for a sink whose own thread writes to it (modbus): written by that
/// thread, read by `/metrics` and `/api/status`.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Write requests the device acknowledged.
    pub writes: AtomicU64,
    /// Write requests that failed (no connection, timeout, exception reply).
    pub write_failures: AtomicU64,
    /// Connections (re)established.
    pub connects: AtomicU64,
    /// 1 while connected, 0 while not.
    pub connected: AtomicU64,
    /// Time of each acknowledged write request.
    pub write_latency: Histogram,
}

/// Why a source refused a frame before handing it on (the `reason` label of
/// `lookout_source_frames_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Larger than the source's `max_frame_bytes` (found or declared), dropped unbuffered.
    Oversized,
    /// Framing the source could not read (a stream part whose headers never end).
    Malformed,
}

impl Rejected {
    pub const ALL: [Rejected; 2] = [Rejected::Oversized, Rejected::Malformed];

    pub fn label(self) -> &'static str {
        match self {
            Rejected::Oversized => "oversized",
            Rejected::Malformed => "malformed",
        }
    }
}

/// What a source threw away before a frame was made, written by its reader thread (the `pipe`
/// and `http_mjpeg` producers) through the `Arc` handed to it by
/// [`crate::source::FrameSource::count_into`], read by `/metrics`, `/api/status` and the
/// summary. Frames a worker cannot decode (a truncated JPEG handed on) are [`Metrics::failed`].
#[derive(Debug, Default)]
pub struct InputStats {
    pub oversized: AtomicU64,
    pub malformed: AtomicU64,
    /// Bytes read from the source that ended up in no frame: garbage between images, and the
    /// bytes of rejected frames.
    pub skipped_bytes: AtomicU64,
    /// The totals over every source ([`Metrics::input`]), counted into as well; `None` for the
    /// totals themselves.
    total: Option<Arc<InputStats>>,
}

impl InputStats {
    /// One source's counters, also counted into `total`.
    pub fn within(total: Arc<InputStats>) -> InputStats {
        InputStats {
            total: Some(total),
            ..InputStats::default()
        }
    }

    pub fn reject(&self, why: Rejected) {
        self.counter(why).fetch_add(1, Relaxed);
        if let Some(t) = &self.total {
            t.reject(why);
        }
    }

    pub fn counter(&self, why: Rejected) -> &AtomicU64 {
        match why {
            Rejected::Oversized => &self.oversized,
            Rejected::Malformed => &self.malformed,
        }
    }

    pub fn skipped(&self, bytes: u64) {
        if bytes > 0 {
            self.skipped_bytes.fetch_add(bytes, Relaxed);
            if let Some(t) = &self.total {
                t.skipped(bytes);
            }
        }
    }
}

/// The counters of one source, beside the totals in [`Metrics`]: written by that source's
/// capture thread, except `inferred`/`failed`/`dropped` by newest-first takes (workers).
#[derive(Debug)]
pub struct SourceMetrics {
    /// The source's name (`[[sources]]` `name`), as events carry it.
    pub name: Arc<str>,
    /// Frames the source delivered.
    pub captured: AtomicU64,
    /// Frames of this source dropped unprocessed (its queue full, or older than the newest one
    /// a worker took).
    pub dropped: AtomicU64,
    /// Frames of this source classified, and those that could not be (workers).
    pub inferred: AtomicU64,
    pub failed: AtomicU64,
    /// Open/read failures and stalls, and successful reopenings.
    pub source_errors: AtomicU64,
    pub reconnects: AtomicU64,
    /// When the capture thread last came back from this source ([`now_ms`]; 0 = not yet).
    pub capture_beat: AtomicU64,
    /// When the source last delivered a frame ([`now_ms`]; 0 = never).
    pub last_frame: AtomicU64,
    /// 1 while the source is open and delivering, 0 while it is being reopened.
    pub up: AtomicU64,
    /// 1 once its capture thread has ended (the input ended, or the daemon stops).
    pub ended: AtomicU64,
    /// What this source refused or skipped before making a frame (its reader thread, through
    /// [`crate::source::FrameSource::count_into`]); counted into [`Metrics::input`] too.
    pub input: Arc<InputStats>,
}

impl SourceMetrics {
    pub fn new(name: &str, input: Arc<InputStats>) -> SourceMetrics {
        SourceMetrics {
            name: name.into(),
            captured: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            inferred: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            source_errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            capture_beat: AtomicU64::new(0),
            last_frame: AtomicU64::new(0),
            up: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            input,
        }
    }

    pub fn snapshot(&self) -> SourceSnapshot {
        SourceSnapshot {
            name: self.name.to_string(),
            up: self.up.load(Relaxed) == 1,
            ended: self.ended.load(Relaxed) == 1,
            captured: self.captured.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            inferred: self.inferred.load(Relaxed),
            failed: self.failed.load(Relaxed),
            source_errors: self.source_errors.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            rejected_oversized: self.input.oversized.load(Relaxed),
            rejected_malformed: self.input.malformed.load(Relaxed),
            skipped_bytes: self.input.skipped_bytes.load(Relaxed),
        }
    }
}

/// Everything counted in one pipeline run.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Frames the source delivered (capture thread).
    pub captured: AtomicU64,
    /// Frames dropped unprocessed: the oldest when the frame queue was full (capture thread),
    /// and those older than the newest frame a worker took (live sources).
    pub dropped: AtomicU64,
    /// Frames classified (workers).
    pub inferred: AtomicU64,
    /// Frames that could not be decoded or classified: counted and skipped (workers).
    pub failed: AtomicU64,
    /// Source errors (open/read failures, stalls) (capture thread).
    pub source_errors: AtomicU64,
    /// Successful reopenings of the source after an error (capture thread).
    pub reconnects: AtomicU64,
    /// What the source refused or skipped before making a frame (its reader thread).
    pub input: Arc<InputStats>,
    /// Events produced by the dispatcher.
    pub events: AtomicU64,
    /// Most frames captured after a frame before a worker took it: how stale the oldest frame
    /// ever worked on was, in frames (workers). Bounded by the frame queue and worker count.
    pub max_staleness: AtomicU64,
    /// When the capture thread last came back from the source ([`now_ms`]; 0 = not yet): read
    /// by the watchdog to tell a hung source read from a slow one.
    pub capture_beat: AtomicU64,
    /// Classified frames with a known true label, and how many of those had it as top-1 (dispatcher).
    pub truth_total: AtomicU64,
    pub truth_correct: AtomicU64,
    /// Capture -> a worker takes the frame.
    pub queue_wait: Histogram,
    /// Frame -> RGB.
    pub decode: Histogram,
    /// RGB -> input tensor.
    pub preprocess: Histogram,
    /// Model run.
    pub infer: Histogram,
    /// Model run, per model (the workers record it).
    pub models: ModelTimes,
    /// Capture -> classification done.
    pub total: Histogram,
    /// Capture -> event built by the dispatcher.
    pub event_latency: Histogram,
    /// Configuration reloads applied, and refused (invalid config, model or sinks).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// One entry per source, in config order (capture threads write them; see
    /// [`SourceMetrics`]). Set at start by [`Metrics::add_source`].
    sources: std::sync::RwLock<Vec<Arc<SourceMetrics>>>,
    /// One entry per configured sink, in config order; replaced on reload (a sink keeps its
    /// counters when its name stays).
    sinks: std::sync::RwLock<Vec<Arc<SinkMetrics>>>,
    /// The latest drift figures per source and region (the dispatcher writes, `/metrics` and
    /// `/api/live` read; see [`crate::drift::Board`]).
    pub drift: Arc<crate::drift::Board>,
    /// Exact per-frame times, kept only when tracing was asked for ([`Metrics::tracing`]).
    trace: Option<std::sync::Mutex<Vec<FrameTimes>>>,
}

/// The stage times of one classified frame (workers).
#[derive(Debug, Clone, Default)]
pub struct FrameTimes {
    /// The frame's source (`[[sources]]` `name`), for per-source figures (`bench --sources`).
    pub source: Option<Arc<str>>,
    pub queue_wait: Duration,
    pub decode: Duration,
    pub preprocess: Duration,
    pub infer: Duration,
    /// Capture -> classification done.
    pub total: Duration,
}

/// Frames a trace holds at most (96 bytes each: 48 MB); later frames are counted in the
/// histograms only.
const TRACE_CAP: usize = 1 << 19;

/// Milliseconds on a monotonic clock that starts at 1 when first read in this process.
pub fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch =
        *EPOCH.get_or_init(|| std::time::Instant::now() - std::time::Duration::from_millis(1));
    epoch.elapsed().as_millis() as u64
}

/// A plain copy of the counters at one moment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    pub captured: u64,
    pub dropped: u64,
    pub inferred: u64,
    pub failed: u64,
    pub source_errors: u64,
    pub reconnects: u64,
    /// Frames the source refused before handing them on, and bytes that made no frame.
    pub rejected_oversized: u64,
    pub rejected_malformed: u64,
    pub skipped_bytes: u64,
    pub events: u64,
    pub max_staleness: u64,
    /// Top-1 accuracy against the source's true labels, when it has them.
    pub accuracy: Option<f64>,
    pub truth_total: u64,
    pub queue_wait_ms: LatencySummary,
    pub decode_ms: LatencySummary,
    pub preprocess_ms: LatencySummary,
    pub infer_ms: LatencySummary,
    pub total_ms: LatencySummary,
    pub event_latency_ms: LatencySummary,
    /// Per source, in config order.
    pub sources: Vec<SourceSnapshot>,
    pub sinks: Vec<SinkSnapshot>,
}

/// One source's counters at one moment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceSnapshot {
    pub name: String,
    /// Open and delivering (false while it is being reopened).
    pub up: bool,
    /// Its input ended (a finite source) or the daemon is stopping.
    pub ended: bool,
    pub captured: u64,
    pub dropped: u64,
    pub inferred: u64,
    pub failed: u64,
    pub source_errors: u64,
    pub reconnects: u64,
    /// What the source refused or skipped before making a frame ([`InputStats`]).
    pub rejected_oversized: u64,
    pub rejected_malformed: u64,
    pub skipped_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SinkSnapshot {
    pub name: String,
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    /// A device link's counters (modbus sinks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkSnapshot>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkSnapshot {
    pub connected: bool,
    pub writes: u64,
    pub write_failures: u64,
    pub connects: u64,
    pub write_ms: LatencySummary,
}

impl Metrics {
    pub fn new(sink_names: &[String]) -> Metrics {
        let m = Metrics::default();
        m.replace_sinks(sink_names);
        m
    }

    /// Like [`Metrics::new`], and also keeps every frame's exact stage times (for `bench`,
    /// whose ratios need better than the histograms' 10% buckets).
    pub fn tracing(sink_names: &[String]) -> Metrics {
        Metrics {
            trace: Some(std::sync::Mutex::new(Vec::new())),
            ..Metrics::new(sink_names)
        }
    }

    /// Records one classified frame in the histograms (and the trace, when kept). Its
    /// `queue_wait` goes to the trace only: the worker records that histogram when it takes the
    /// frame, for frames that then fail too.
    pub fn record_frame(&self, t: FrameTimes) {
        self.decode.record(t.decode);
        self.preprocess.record(t.preprocess);
        self.infer.record(t.infer);
        self.total.record(t.total);
        if let Some(trace) = &self.trace {
            let mut v = trace.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() < TRACE_CAP {
                v.push(t);
            }
        }
    }

    /// The traced frames, in completion order; empty unless made by [`Metrics::tracing`].
    pub fn frame_times(&self) -> Vec<FrameTimes> {
        self.trace.as_ref().map_or_else(Vec::new, |t| {
            t.lock().unwrap_or_else(|e| e.into_inner()).clone()
        })
    }

    /// Adds a source's counters (a name already present gets its existing ones back).
    pub fn add_source(&self, name: &str) -> Arc<SourceMetrics> {
        self.add_counted_source(name, self.source_input(name))
    }

    /// The input counters for source `name`: its own if it is listed (a source restarted by a
    /// reload keeps counting where it was), else new ones counted into the totals. Handed to
    /// the source before it opens, then to [`Metrics::add_counted_source`].
    pub fn source_input(&self, name: &str) -> Arc<InputStats> {
        let g = self.sources.read().unwrap_or_else(|e| e.into_inner());
        match g.iter().find(|s| &*s.name == name) {
            Some(s) => Arc::clone(&s.input),
            None => Arc::new(InputStats::within(Arc::clone(&self.input))),
        }
    }

    /// Lists source `name` (or returns its counters if listed), counting its input into `input`.
    pub fn add_counted_source(&self, name: &str, input: Arc<InputStats>) -> Arc<SourceMetrics> {
        let mut g = self.sources.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = g.iter().find(|s| &*s.name == name) {
            return Arc::clone(s);
        }
        let s = Arc::new(SourceMetrics::new(name, input));
        g.push(Arc::clone(&s));
        s
    }

    /// Drops a removed source's counters.
    pub fn remove_source(&self, name: &str) {
        let mut g = self.sources.write().unwrap_or_else(|e| e.into_inner());
        g.retain(|s| &*s.name != name);
    }

    /// Puts the sources' counters in `names` order (those not named last).
    pub fn order_sources(&self, names: &[String]) {
        let mut g = self.sources.write().unwrap_or_else(|e| e.into_inner());
        g.sort_by_key(|s| {
            names
                .iter()
                .position(|n| **n == *s.name)
                .unwrap_or(usize::MAX)
        });
    }

    /// The sources' counters, in config order.
    pub fn sources(&self) -> Vec<Arc<SourceMetrics>> {
        self.sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current sinks' counters, in config order.
    pub fn sinks(&self) -> Vec<Arc<SinkMetrics>> {
        self.sinks.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the sink list (at start and on reload): a name already present keeps its counters.
    pub fn replace_sinks(&self, names: &[String]) -> Vec<Arc<SinkMetrics>> {
        let mut g = self.sinks.write().unwrap_or_else(|e| e.into_inner());
        let new: Vec<Arc<SinkMetrics>> = names
            .iter()
            .map(|n| {
                g.iter().find(|s| &s.name == n).cloned().unwrap_or_else(|| {
                    Arc::new(SinkMetrics {
                        name: n.clone(),
                        ..Default::default()
                    })
                })
            })
            .collect();
        *g = new.clone();
        new
    }

    pub fn snapshot(&self) -> Snapshot {
        let truth_total = self.truth_total.load(Relaxed);
        Snapshot {
            captured: self.captured.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            inferred: self.inferred.load(Relaxed),
            failed: self.failed.load(Relaxed),
            source_errors: self.source_errors.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            rejected_oversized: self.input.oversized.load(Relaxed),
            rejected_malformed: self.input.malformed.load(Relaxed),
            skipped_bytes: self.input.skipped_bytes.load(Relaxed),
            events: self.events.load(Relaxed),
            max_staleness: self.max_staleness.load(Relaxed),
            accuracy: (truth_total > 0)
                .then(|| self.truth_correct.load(Relaxed) as f64 / truth_total as f64),
            truth_total,
            queue_wait_ms: self.queue_wait.snapshot(),
            decode_ms: self.decode.snapshot(),
            preprocess_ms: self.preprocess.snapshot(),
            infer_ms: self.infer.snapshot(),
            total_ms: self.total.snapshot(),
            event_latency_ms: self.event_latency.snapshot(),
            sources: self.sources().iter().map(|s| s.snapshot()).collect(),
            sinks: self
                .sinks()
                .iter()
                .map(|s| SinkSnapshot {
                    name: s.name.clone(),
                    sent: s.sent.load(Relaxed),
                    failed: s.failed.load(Relaxed),
                    dropped: s.dropped.load(Relaxed),
                    link: s.link().map(|l| LinkSnapshot {
                        connected: l.connected.load(Relaxed) == 1,
                        writes: l.writes.load(Relaxed),
                        write_failures: l.write_failures.load(Relaxed),
                        connects: l.connects.load(Relaxed),
                        write_ms: l.write_latency.snapshot(),
                    }),
                })
                .collect(),
        }
    }
}

impl Snapshot {
    /// The one-line `info` summary: a sentence, then key=value fields.
    pub fn summary_line(&self) -> String {
        let mut s = format!(
            "Pipeline summary. captured={} dropped={} inferred={} failed={} events={} source_errors={} \
             infer_p50_ms={:.1} total_p50_ms={:.1} total_p99_ms={:.1}",
            self.captured,
            self.dropped,
            self.inferred,
            self.failed,
            self.events,
            self.source_errors,
            self.infer_ms.p50,
            self.total_ms.p50,
            self.total_ms.p99,
        );
        let rejected = self.rejected_oversized + self.rejected_malformed;
        if rejected > 0 || self.skipped_bytes > 0 {
            s.push_str(&format!(
                " rejected={rejected} skipped_bytes={}",
                self.skipped_bytes
            ));
        }
        if let Some(acc) = self.accuracy {
            s.push_str(&format!(
                " accuracy={:.3} labelled={}",
                acc, self.truth_total
            ));
        }
        if self.sources.len() > 1 {
            for src in &self.sources {
                s.push_str(&format!(
                    " source.{0}.captured={1} source.{0}.dropped={2} source.{0}.inferred={3} source.{0}.up={4}",
                    src.name, src.captured, src.dropped, src.inferred, src.up
                ));
            }
        }
        for sink in &self.sinks {
            s.push_str(&format!(
                " sink.{}.sent={} sink.{}.failed={} sink.{}.dropped={}",
                sink.name, sink.sent, sink.name, sink.failed, sink.name, sink.dropped
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_ms(0.5);
        let p99 = h.quantile_ms(0.99);
        assert!((50.0..=55.0).contains(&p50), "p50={p50}");
        assert!((99.0..=100.0).contains(&p99), "p99={p99}");
        assert_eq!(h.count(), 100);
        assert!((h.mean_ms() - 50.5).abs() < 0.01);
    }

    #[test]
    fn empty_and_extreme_values() {
        let h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), 0.0);
        h.record(Duration::from_secs(100_000));
        h.record(Duration::ZERO);
        assert_eq!(h.count(), 2);
        assert!(h.quantile_ms(1.0) > 1000.0);
    }
}
