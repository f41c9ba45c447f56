//! The running sources: opening a source into its lane of the frame queue, starting its
//! capture thread, and a reload's changes to the list: sources whose configuration did not
//! change keep their capture thread (their frames and frame numbers go on), removed ones are
//! stopped, added or changed ones opened and started.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capture::{capture_loop, Capture, Reconnect};
use super::fair::FairQueue;
use super::running::{Capturing, Running};
use super::{spawn, SourcePart, StartError};
use crate::metrics::{InputStats, Metrics, SourceMetrics};
use crate::retry::chain;
use crate::source::FrameSource;
use crate::stop::StopToken;

/// A source opened, with its counters and lane, not yet capturing.
pub(super) struct Opened {
    name: String,
    key: String,
    source: Box<dyn FrameSource>,
    sm: Arc<SourceMetrics>,
    lane: usize,
    /// It did not open (startup with other sources that did): its capture thread reopens it.
    unopened: bool,
}

impl Opened {
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// What to do when a source does not open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum OnFailure {
    /// Close the ones opened and return the error: nothing is left behind (one source, and a
    /// reload's added or changed sources).
    Refuse,
    /// Keep going without it while at least one other opens: it gets its lane, is marked down
    /// and its capture thread reopens it with back-off (startup with several sources). When
    /// none opens, the first error is returned.
    Reopen,
}

/// Opens every source of `parts` and gives each a lane. A source that does not open is
/// handled as `on_failure` says.
pub(super) fn open_all(
    parts: Vec<SourcePart>,
    queue: &FairQueue,
    metrics: &Metrics,
    on_failure: OnFailure,
) -> Result<Vec<Opened>, StartError> {
    let mut opened: Vec<(SourcePart, Arc<InputStats>, bool)> = Vec::with_capacity(parts.len());
    let mut first_error: Option<StartError> = None;
    for mut part in parts {
        // Before opening: the reader thread it starts counts what it rejects into these.
        let input = metrics.source_input(&part.name);
        part.source.count_into(Arc::clone(&input));
        match part.source.open() {
            Ok(()) => opened.push((part, input, false)),
            Err(e) if on_failure == OnFailure::Reopen => {
                log::error!(
                    "Source did not open; starting without it and reopening it with back-off (its health is down until it opens). source={} error={}",
                    part.name,
                    chain(&e)
                );
                first_error.get_or_insert(StartError::Source {
                    source_name: part.name.clone(),
                    source: e,
                });
                opened.push((part, input, true));
            }
            Err(e) => {
                for (mut p, _, _) in opened {
                    p.source.close();
                }
                return Err(StartError::Source {
                    source_name: part.name,
                    source: e,
                });
            }
        }
    }
    if let Some(e) = first_error {
        if opened.iter().all(|(_, _, unopened)| *unopened) {
            return Err(e);
        }
    }
    Ok(opened
        .into_iter()
        .map(|(part, input, unopened)| {
            let sm = metrics.add_counted_source(&part.name, input);
            if unopened {
                sm.source_errors.fetch_add(1, Relaxed);
                metrics.source_errors.fetch_add(1, Relaxed);
            }
            sm.up.store(u64::from(!unopened), Relaxed);
            sm.ended.store(0, Relaxed);
            let lane = queue.add_lane(
                Arc::clone(&sm),
                part.source.live(),
                part.regions.into(),
                part.model,
            );
            Opened {
                name: part.name,
                key: part.key,
                source: part.source,
                sm,
                lane,
                unopened,
            }
        })
        .collect())
}

/// Starts the capture thread of an opened source, stopped by a child of `stop`.
pub(super) fn start_capture(
    o: Opened,
    queue: &Arc<FairQueue>,
    metrics: &Arc<Metrics>,
    stop: &StopToken,
    reconnect: &Arc<Reconnect>,
) -> Result<Capturing, StartError> {
    let own = stop.child();
    // A restarted source's counters were marked ended by its previous capture thread.
    o.sm.ended.store(0, Relaxed);
    o.sm.up.store(u64::from(!o.unopened), Relaxed);
    let c = Capture {
        source: o.source,
        queue: Arc::clone(queue),
        lane: o.lane,
        m: Arc::clone(metrics),
        sm: o.sm,
        stop: own.clone(),
        reconnect: Arc::clone(reconnect),
        unopened: o.unopened,
    };
    let thread = spawn(&format!("capture-{}", o.name), move || capture_loop(c))?;
    Ok(Capturing {
        name: o.name,
        key: o.key,
        stop: own,
        thread,
    })
}

/// What [`Running::update_sources`] did, by source name.
#[derive(Debug, Default, PartialEq)]
pub struct SourceChanges {
    pub kept: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Sources whose configuration changed: stopped and started again (their frame numbers
    /// start over).
    pub restarted: Vec<String>,
}

impl SourceChanges {
    /// `kept=a,b added=c ...` for the log, the empty lists left out.
    pub fn describe(&self) -> String {
        [
            ("kept", &self.kept),
            ("added", &self.added),
            ("removed", &self.removed),
            ("restarted", &self.restarted),
        ]
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(k, l)| format!("{k}={}", l.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

impl Running {
    /// Makes the running sources those of `wanted`, in its order: a source whose name and key
    /// are unchanged keeps running untouched; one that is gone (or whose key changed) is
    /// stopped, waiting up to `deadline` for its capture thread; new ones are opened first, so
    /// that one that does not open changes nothing (the error says which).
    pub fn update_sources(
        &mut self,
        wanted: Vec<SourcePart>,
        deadline: Duration,
    ) -> Result<SourceChanges, StartError> {
        let mut changes = SourceChanges::default();
        let same = |c: &Capturing, p: &SourcePart| c.name == p.name && c.key == p.key;
        let (keep, fresh): (Vec<SourcePart>, Vec<SourcePart>) = wanted
            .into_iter()
            .partition(|p| self.captures.iter().any(|c| same(c, p)));
        let order: Vec<String> = keep.iter().chain(&fresh).map(|p| p.name.clone()).collect();
        let opened = open_all(fresh, &self.queue, &self.metrics, OnFailure::Refuse)?;
        // Stop the sources that are not kept, all at once, then wait for them.
        let (kept, gone): (Vec<Capturing>, Vec<Capturing>) = std::mem::take(&mut self.captures)
            .into_iter()
            .partition(|c| keep.iter().any(|p| same(c, p)));
        for c in &gone {
            c.stop.stop();
        }
        let until = Instant::now() + deadline;
        for c in gone {
            while !c.thread.is_finished() && Instant::now() < until {
                std::thread::sleep(crate::stop::POLL);
            }
            if !c.thread.is_finished() {
                log::error!(
                    "A removed source's capture thread did not finish before the deadline; leaving it. source={}",
                    c.name
                );
            }
            if opened.iter().any(|o| o.name == c.name) {
                changes.restarted.push(c.name.clone());
            } else {
                self.metrics.remove_source(&c.name);
                changes.removed.push(c.name.clone());
            }
        }
        changes.kept = kept.iter().map(|c| c.name.clone()).collect();
        self.captures = kept;
        for o in opened {
            if !changes.restarted.contains(&o.name) {
                changes.added.push(o.name.clone());
            }
            let c = start_capture(o, &self.queue, &self.metrics, &self.stop, &self.reconnect)?;
            self.captures.push(c);
        }
        self.captures
            .sort_by_key(|c| order.iter().position(|n| *n == c.name));
        self.metrics.order_sources(&order);
        self.source_names = order;
        self.source_name = self.source_names.join(",");
        Ok(changes)
    }
}
