//! The pipeline: threads and bounded queues from source to sinks.
//!
//! ```text
//! [capture per source] --frames (a bounded lane per source, drop-oldest when live)-->
//!                                 [worker 1..N: round-robin over sources, newest first when live]
//! [worker]   --classifications (bounded, blocking)----->  [dispatcher]
//! [dispatcher] --events (bounded per sink, drop-newest)-> [sink thread per sink]
//! ```
//!
//! Shutdown has one trigger: the [`StopToken`] (or the end of every finite source) ends the
//! capture loops, which close their lanes; each later stage ends when its input disconnects, after
//! finishing what it holds; sinks flush last. Nothing is lost between the dispatcher and the
//! sinks except what a full sink queue refuses, and that is counted. Run-time errors (a bad
//! frame, a failed delivery, a broken source) are logged, counted and never stop the loop.

//!
//! # Layout
//!
//! - [`start`](start()): opens the sources and starts every thread ([`Parts`] in, [`Running`]
//!   out).
//! - `capture`: the capture loop, one thread per source: frames into its lane of the frame
//!   queue, reopening a failed source with back-off.
//! - `fair`: the frame queue, one bounded lane per source, taken from round-robin.
//! - `sources`: opening sources into lanes, their capture threads, and a reload's changes to
//!   the list (unchanged sources keep running).
//! - `worker`: the worker loop, one thread per worker: decode, preprocess, classify, help an
//!   idle worker's neighbour (the team).
//! - `dispatch`: the dispatcher loop: rules, events, fan-out to each sink's queue.
//! - `deliver`: the sink loop, one thread per sink.
//! - `running`: [`Running`], the handle that stops and joins the stages; `reload` replaces
//!   everything downstream of the frame queue ([`Downstream`]) while the source runs.

mod capture;
mod deliver;
mod dispatch;
mod fair;
mod reload;
mod running;
mod sources;
mod start;
mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::event::Event;
use crate::frame::Frame;
use crate::live::Live;
use crate::model::{Model, ModelError};
use crate::rules::RuleSet;
use crate::sink::Sink;
use crate::source::regions::Region;
use crate::source::{FrameSource, SourceError};

pub use running::{Running, ABORT_MARGIN};
pub use sources::SourceChanges;
pub use start::{start, try_sessions};

/// Everything a pipeline needs, built and validated by the caller.
pub struct Parts {
    /// The sources, in config order (at least one).
    pub sources: Vec<SourcePart>,
    /// The models the sources and regions name (at least one), each with its rules.
    pub models: Vec<ModelPart>,
    /// Sinks with their names, in config order (rule sink indices refer to this order).
    pub sinks: Vec<(String, Box<dyn Sink>)>,
    pub workers: usize,
    /// Idle workers help a busy one with its frame's convolutions ([`lookout_engine::team`]).
    pub assist: bool,
    pub frame_queue: usize,
    pub sink_queue: usize,
    pub top_k: usize,
    pub device: String,
    /// Interval of the `info` summary line; `None` for none.
    pub summary_every: Option<Duration>,
    /// Source reopening back-off: first delay and cap (doubling, +-20% jitter).
    pub reconnect: (Duration, Duration),
    /// Latest frame, scores and events for the live view, when the HTTP server runs.
    pub live: Option<Arc<Live>>,
    /// `[collect]`: the frames worth labelling kept in a dataset.
    pub collect: Option<crate::collect::Collecting>,
    /// Keep every frame's exact stage times ([`Metrics::frame_times`]); for benchmarks.
    pub trace_frames: bool,
}

/// One source of a pipeline: its name, the source, and the regions classified in each of its
/// frames (empty: the whole frame).
pub struct SourcePart {
    pub name: String,
    /// The source's configuration as text: a reload keeps a running source whose name and key
    /// are unchanged, and restarts one whose key changed.
    pub key: String,
    pub source: Box<dyn FrameSource>,
    pub regions: Vec<Region>,
    /// The name of the model of its whole frames (a [`ModelPart::name`]); its regions name
    /// their own.
    pub model: Arc<str>,
}

/// One model of a pipeline: every worker opens a session on it, and the frames and regions
/// that name it are classified with it and go through the rules as they apply to its labels.
pub struct ModelPart {
    /// The name sources and regions give (`default`: `[model]`).
    pub name: Arc<str>,
    pub model: Arc<Model>,
    /// The rules resolved against this model's labels ([`RuleSet::build_for_model`]).
    pub rules: RuleSet,
    /// Drift figures for the frames and regions it classifies; `None` without `[drift]`.
    pub drift: Option<crate::drift::ModelDrift>,
}

/// Errors that prevent the pipeline from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open source {source_name}")]
    Source {
        source_name: String,
        #[source]
        source: SourceError,
    },
    #[error("cannot start a session of model {model:?}")]
    Session {
        model: String,
        #[source]
        source: ModelError,
    },
    #[error("cannot start thread {name}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// A classified frame, worker -> dispatcher.
struct Classified {
    /// The source's name.
    pub(super) source: Arc<str>,
    /// The region's name; `None` for the whole frame.
    pub(super) region: Option<Arc<str>>,
    /// The region's rectangle (fractions of the frame), for the collector's crop.
    pub(super) rect: Option<[f64; 4]>,
    /// The model that produced `probs`: an index into the generation's models.
    pub(super) model: usize,
    /// The frame's number within its source.
    pub(super) seq: u64,
    pub(super) captured_at: SystemTime,
    pub(super) captured: Instant,
    pub(super) origin: Option<Arc<str>>,
    pub(super) truth: Option<Arc<str>>,
    pub(super) probs: Vec<f32>,
    /// The frame itself, kept only when a sink wants frames (snapshots), the live view runs or
    /// frames are collected; one frame's regions share it.
    pub(super) frame: Option<Arc<Frame>>,
}

/// An event on its way to one sink, dispatcher -> sink thread.
struct Delivery {
    pub(super) event: Arc<Event>,
    pub(super) captured: Instant,
    /// The triggering frame, for sinks that want frames.
    pub(super) frame: Option<Arc<Frame>>,
}

/// Everything downstream of the frame queue: what a configuration reload replaces while the
/// sources keep running.
pub struct Downstream {
    /// As [`Parts::models`].
    pub models: Vec<ModelPart>,
    /// Sinks with their names, in config order (rule sink indices refer to this order).
    pub sinks: Vec<(String, Box<dyn Sink>)>,
    pub workers: usize,
    /// Idle workers help a busy one with its frame's convolutions ([`lookout_engine::team`]).
    pub assist: bool,
    pub sink_queue: usize,
    pub top_k: usize,
    pub device: String,
    pub live: Option<Arc<Live>>,
    pub collect: Option<crate::collect::Collecting>,
}

/// Logs a recurring run-time problem at `warn` at most once per interval and at `debug`
/// otherwise, saying how many occurrences were not shown.
pub(super) struct Throttled {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    pub(super) fn new(every: Duration) -> Throttled {
        Throttled {
            every,
            last: None,
            suppressed: 0,
        }
    }

    pub(super) fn warn(&mut self, msg: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= self.every)
        {
            if self.suppressed > 0 {
                log::warn!(
                    "{msg} (and {} more like it since the last report)",
                    self.suppressed
                );
            } else {
                log::warn!("{msg}");
            }
            self.last = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
            log::debug!("{msg}");
        }
    }
}

pub(super) fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|source| StartError::Thread {
            name: name.to_owned(),
            source,
        })
}
