//! The capture loop: one thread per source that owns it, numbers its frames (per source, from 0)
//! and puts them in its lane of the shared [`FairQueue`]. A live source never waits: when its
//! lane is full the oldest frame is dropped and counted; a finite source waits for a worker. A
//! failed source (or one that did not open at startup) is reopened with capped back-off, whose
//! delays a reload may change ([`Reconnect`]); the loop ends at the stop token or the source's
//! end, and closes its lane.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::fair::FairQueue;
use crate::metrics::{now_ms, Metrics, SourceMetrics};
use crate::retry::{chain, Backoff};
use crate::source::FrameSource;
use crate::stop::StopToken;

/// The reopening back-off's first delay and cap, shared by every capture thread and set by a
/// reload; a source takes the current values each time it starts reopening.
#[derive(Debug)]
pub struct Reconnect {
    min_us: AtomicU64,
    max_us: AtomicU64,
}

impl Reconnect {
    pub(super) fn new((min, max): (Duration, Duration)) -> Reconnect {
        let r = Reconnect {
            min_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        };
        r.set((min, max));
        r
    }

    /// First delay and cap.
    pub fn get(&self) -> (Duration, Duration) {
        (
            Duration::from_micros(self.min_us.load(Relaxed)),
            Duration::from_micros(self.max_us.load(Relaxed)),
        )
    }

    /// Applies to each source's next reopening (one in the middle of one goes on with its
    /// current delays until it has reopened).
    pub(super) fn set(&self, (min, max): (Duration, Duration)) {
        self.min_us.store(min.as_micros() as u64, Relaxed);
        self.max_us.store(max.as_micros() as u64, Relaxed);
    }
}

/// One source's capture thread: what it reads, where it puts frames, what it counts.
pub(super) struct Capture {
    pub(super) source: Box<dyn FrameSource>,
    pub(super) queue: Arc<FairQueue>,
    pub(super) lane: usize,
    /// The totals, and this source's own counters.
    pub(super) m: Arc<Metrics>,
    pub(super) sm: Arc<SourceMetrics>,
    /// This source's stop: the daemon's, or the one a reload sets to remove the source.
    pub(super) stop: StopToken,
    pub(super) reconnect: Arc<Reconnect>,
    /// The source did not open at startup: the loop starts by reopening it.
    pub(super) unopened: bool,
}

pub(super) fn capture_loop(c: Capture) {
    let Capture {
        mut source,
        queue,
        lane,
        m,
        sm,
        stop,
        reconnect,
        unopened,
    } = c;
    let name = &sm.name;
    let mut seq = 0u64;
    let beat = || {
        let now = now_ms();
        m.capture_beat.store(now, Relaxed);
        sm.capture_beat.store(now, Relaxed);
    };
    if unopened {
        sm.up.store(0, Relaxed);
        if !reopen(&mut *source, &reconnect, &stop, &m, &sm, &beat) {
            source.close();
            sm.ended.store(1, Relaxed);
            queue.close(lane);
            return;
        }
    } else {
        sm.up.store(1, Relaxed);
    }
    'frames: while !stop.is_stopped() {
        beat();
        match source.next_frame(&stop) {
            Ok(Some(mut frame)) => {
                frame.seq = seq;
                seq += 1;
                m.captured.fetch_add(1, Relaxed);
                sm.captured.fetch_add(1, Relaxed);
                sm.last_frame.store(now_ms(), Relaxed);
                if !queue.put(lane, frame, &stop) {
                    break 'frames;
                }
            }
            Ok(None) => {
                if stop.is_stopped() {
                    log::info!("Source stopped. source={name} frames={seq}");
                } else {
                    log::info!("Source ended: no more frames. source={name} frames={seq}");
                }
                break;
            }
            Err(e) => {
                m.source_errors.fetch_add(1, Relaxed);
                sm.source_errors.fetch_add(1, Relaxed);
                sm.up.store(0, Relaxed);
                log::warn!(
                    "Source failed; reopening with back-off. source={name} error={}",
                    chain(&e)
                );
                source.close();
                if !reopen(&mut *source, &reconnect, &stop, &m, &sm, &beat) {
                    break 'frames;
                }
            }
        }
    }
    source.close();
    sm.ended.store(1, Relaxed);
    queue.close(lane);
}

/// Opens `source` again and again, with back-off from `reconnect`'s current delays, until it
/// opens (true) or `stop` is set (false).
fn reopen(
    source: &mut dyn FrameSource,
    reconnect: &Reconnect,
    stop: &StopToken,
    m: &Metrics,
    sm: &SourceMetrics,
    beat: &dyn Fn(),
) -> bool {
    let name = &sm.name;
    let (min, max) = reconnect.get();
    let mut backoff = Backoff::new(min, max);
    loop {
        if stop.sleep(backoff.next_delay()) {
            return false;
        }
        beat();
        match source.open() {
            Ok(()) => {
                m.reconnects.fetch_add(1, Relaxed);
                sm.reconnects.fetch_add(1, Relaxed);
                sm.up.store(1, Relaxed);
                log::info!("Source reopened. source={name}");
                return true;
            }
            Err(e) => {
                m.source_errors.fetch_add(1, Relaxed);
                sm.source_errors.fetch_add(1, Relaxed);
                log::debug!("Source still failing. source={name} error={}", chain(&e));
            }
        }
    }
}
