//! [`Running`]: a started pipeline's handle, which stops the source, waits for every stage to
//! drain in order and joins the threads within a deadline.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::capture::Reconnect;
use super::fair::FairQueue;
use crate::metrics::{Metrics, Snapshot};
use crate::stop::StopToken;

/// A started pipeline. Dropping it without [`Running::wait`] stops the source and detaches the
/// threads.
pub struct Running {
    pub(super) stop: StopToken,
    pub(super) metrics: Arc<Metrics>,
    /// One capture thread per source, in config order.
    pub(super) captures: Vec<Capturing>,
    /// Kept to start the workers of the next configuration on reload.
    pub(super) queue: Arc<FairQueue>,
    pub(super) generation: Option<Generation>,
    /// Closing it (drop) ends the summary thread.
    pub(super) summary_done: Option<Sender<()>>,
    pub(super) summary: Option<JoinHandle<()>>,
    /// The sources' names joined with `,` (one source: its name), for logs and `/api/status`.
    pub source_name: String,
    /// The sources' names, in config order.
    pub source_names: Vec<String>,
    /// Source reopening back-off, shared by the capture threads (a reload sets it).
    pub(super) reconnect: Arc<Reconnect>,
}

/// One source's capture thread, as [`Running`] keeps it.
pub(super) struct Capturing {
    /// The source's name and its configuration's key (see [`super::SourcePart::key`]).
    pub(super) name: String,
    pub(super) key: String,
    /// This source's own stop, a child of the daemon's: set to remove the source.
    pub(super) stop: StopToken,
    pub(super) thread: JoinHandle<()>,
}

/// The running workers, dispatcher and sinks of one configuration.
pub(super) struct Generation {
    /// Tells the workers to stop taking frames (the frame queue stays for the next generation).
    pub(super) quit: Arc<AtomicBool>,
    /// Workers, dispatcher, sinks: joined in this order.
    pub(super) stages: Vec<(String, JoinHandle<()>)>,
    /// Set by [`join_stages`] [`ABORT_MARGIN`] before the deadline; every sink of this
    /// generation holds a clone (see [`crate::sink::Sink::abort_on`]) and gives up its blocking
    /// work when it is set. Nothing else sets it.
    pub(super) abort: StopToken,
}

/// How long before the join deadline the sinks are told to give up (`abort`): long enough for
/// the longest thing a sink may still be doing then, a command's TERM grace (at most
/// [`crate::sink::command::MAX_KILL_GRACE_SECS`]) or one webhook attempt (at most
/// [`crate::sink::webhook::MAX_TIMEOUT_SECS`]), to end before the deadline.
pub const ABORT_MARGIN: Duration = Duration::from_secs(6);

/// Joins `stages` in order within `deadline`; sets `abort` [`ABORT_MARGIN`] before it (at once
/// when the deadline is closer than that); names the threads left running.
pub(super) fn join_stages(
    stages: Vec<(String, JoinHandle<()>)>,
    until: Instant,
    abort: &StopToken,
) {
    let abort_at = until.checked_sub(ABORT_MARGIN).unwrap_or(until);
    for (name, handle) in stages {
        while !handle.is_finished() && Instant::now() < until {
            if !abort.is_stopped() && Instant::now() >= abort_at {
                log::info!(
                    "Stop deadline near; telling the sinks to give up. ms_left={}",
                    until.saturating_duration_since(Instant::now()).as_millis()
                );
                abort.stop();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if handle.is_finished() {
            if handle.join().is_err() {
                log::error!("Pipeline thread panicked. thread={name}");
            }
        } else {
            log::error!(
                "Pipeline thread did not finish before the deadline; leaving it. thread={name}"
            );
        }
    }
}

impl Running {
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sets each source's lane capacity (`[pipeline] frame_queue`) while they run. A lane
    /// holding more frames than the new capacity drops its oldest ones (counted) at its
    /// source's next frame.
    pub fn set_frame_queue(&self, frames: usize) {
        self.queue.set_capacity(frames);
    }

    /// Sets the reopening back-off (`[pipeline] reconnect_min_secs`, `reconnect_max_secs`):
    /// each source takes it the next time it starts reopening.
    pub fn set_reconnect(&self, min: Duration, max: Duration) {
        self.reconnect.set((min, max));
    }

    /// The reopening back-off in force: first delay and cap.
    pub fn reconnect(&self) -> (Duration, Duration) {
        self.reconnect.get()
    }

    /// Stops the source; the pipeline drains. Call [`Running::wait`] to join it.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Whether every stage has ended (the source finished or was stopped, and all drained).
    pub fn is_finished(&self) -> bool {
        self.capture_finished()
            && self
                .generation
                .as_ref()
                .is_none_or(|g| g.stages.iter().all(|(_, h)| h.is_finished()))
    }

    /// Whether every capture thread has ended (each source finished, or stop was set).
    pub fn capture_finished(&self) -> bool {
        self.captures.iter().all(|c| c.thread.is_finished())
    }

    /// Waits for every source to end (or the stop token), then for every stage to drain, in order.
    /// After `stop` is set, stages get `deadline` in all; threads still running then are left
    /// behind (and named in the log). Returns the final counters.
    pub fn wait(mut self, deadline: Duration) -> Snapshot {
        // Wait for the capture threads: until stop, or the end of every finite source.
        while !self.capture_finished() && !self.stop.is_stopped() {
            std::thread::sleep(crate::stop::POLL);
        }
        let until = Instant::now() + deadline;
        let mut stages: Vec<(String, JoinHandle<()>)> = std::mem::take(&mut self.captures)
            .into_iter()
            .map(|c| (format!("capture-{}", c.name), c.thread))
            .collect();
        let mut abort = StopToken::new();
        if let Some(g) = self.generation.take() {
            stages.extend(g.stages);
            abort = g.abort;
        }
        join_stages(stages, until, &abort);
        self.summary_done.take();
        if let Some(h) = self.summary.take() {
            let _ = h.join();
        }
        self.metrics.snapshot()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.stop();
    }
}
