//! The capture loop: one thread per source that owns it, numbers its frames (per source, from 0)
//! and puts them in its lane of the shared [`FairQueue`]. A live source never waits: when its
//! lane is full the oldest frame is dropped and counted; a finite source waits for a worker. A
//! failed source is reopened with capped back-off; the loop ends at the stop token or the
//! source's end, and closes its lane.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::fair::FairQueue;
use crate::metrics::{now_ms, Metrics, SourceMetrics};
use crate::retry::{chain, Backoff};
use crate::source::FrameSource;
use crate::stop::StopToken;

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
    pub(super) reconnect: (Duration, Duration),
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
    } = c;
    let name = &sm.name;
    let mut seq = 0u64;
    let mut backoff = Backoff::new(reconnect.0, reconnect.1);
    let beat = || {
        let now = now_ms();
        m.capture_beat.store(now, Relaxed);
        sm.capture_beat.store(now, Relaxed);
    };
    sm.up.store(1, Relaxed);
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
                loop {
                    if stop.sleep(backoff.next_delay()) {
                        break 'frames;
                    }
                    beat();
                    match source.open() {
                        Ok(()) => {
                            m.reconnects.fetch_add(1, Relaxed);
                            sm.reconnects.fetch_add(1, Relaxed);
                            sm.up.store(1, Relaxed);
                            backoff.reset();
                            log::info!("Source reopened. source={name}");
                            break;
                        }
                        Err(e) => {
                            m.source_errors.fetch_add(1, Relaxed);
                            sm.source_errors.fetch_add(1, Relaxed);
                            log::debug!("Source still failing. source={name} error={}", chain(&e));
                        }
                    }
                }
            }
        }
    }
    source.close();
    sm.ended.store(1, Relaxed);
    queue.close(lane);
}
