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
/// reload; a reopening source looks at them each time it wakes (see `reopen`).
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

    /// Applies to each source's reopening from its next slice of waiting on (its back-off
    /// starts again from the new first delay).
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

/// The longest one sleep of the reopening back-off lasts before the thread beats and looks at
/// the delays again.
const REOPEN_SLICE: Duration = Duration::from_millis(250);

/// Opens `source` again and again, with back-off from `reconnect`'s delays (read again while
/// waiting, so a reload changes them at once), until it opens (true) or `stop` is set (false).
fn reopen(
    source: &mut dyn FrameSource,
    reconnect: &Reconnect,
    stop: &StopToken,
    m: &Metrics,
    sm: &SourceMetrics,
    beat: &dyn Fn(),
) -> bool {
    let name = &sm.name;
    let mut delays = reconnect.get();
    let mut backoff = Backoff::new(delays.0, delays.1);
    'attempts: loop {
        // Sleep in slices, with a heartbeat each (a thread sleeping on purpose is not stuck)
        // and the delays read again each: a reload that shortens them takes effect within a
        // slice instead of after a long delay set by the old ones.
        let mut left = backoff.next_delay();
        while !left.is_zero() {
            let slice = left.min(REOPEN_SLICE);
            if stop.sleep(slice) {
                return false;
            }
            left -= slice;
            beat();
            let now = reconnect.get();
            if now != delays {
                delays = now;
                backoff = Backoff::new(delays.0, delays.1);
                continue 'attempts;
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;
    use crate::frame::Frame;
    use crate::metrics::InputStats;
    use crate::source::SourceError;

    /// A source that never opens, counting the attempts.
    struct Broken(Arc<AtomicUsize>);

    impl FrameSource for Broken {
        fn describe(&self) -> String {
            "broken".into()
        }
        fn live(&self) -> bool {
            true
        }
        fn open(&mut self) -> Result<(), SourceError> {
            self.0.fetch_add(1, Relaxed);
            Err(SourceError::Input("never opens".into()))
        }
        fn next_frame(&mut self, _stop: &StopToken) -> Result<Option<Frame>, SourceError> {
            Ok(None)
        }
    }

    #[test]
    fn a_reload_that_shortens_the_back_off_applies_while_a_source_waits() {
        let opens = Arc::new(AtomicUsize::new(0));
        let reconnect = Arc::new(Reconnect::new((
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        )));
        let stop = StopToken::new();
        let m = Arc::new(Metrics::default());
        let sm = Arc::new(SourceMetrics::new("cam", Arc::new(InputStats::default())));
        let beats = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (opens, reconnect, stop, m, sm, beats) = (
                Arc::clone(&opens),
                Arc::clone(&reconnect),
                stop.clone(),
                Arc::clone(&m),
                Arc::clone(&sm),
                Arc::clone(&beats),
            );
            std::thread::spawn(move || {
                let beat = || {
                    beats.fetch_add(1, Relaxed);
                };
                reopen(&mut Broken(opens), &reconnect, &stop, &m, &sm, &beat)
            })
        };
        // Waiting on the hour-long first delay: the thread still beats.
        let deadline = Instant::now() + Duration::from_secs(20);
        while beats.load(Relaxed) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(beats.load(Relaxed) >= 2, "no heartbeat while waiting");
        assert_eq!(opens.load(Relaxed), 0, "opened before its delay");
        // A reload shortens the delays: the waiting thread retries without the old hour.
        reconnect.set((Duration::from_millis(1), Duration::from_millis(2)));
        while opens.load(Relaxed) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(opens.load(Relaxed) >= 3, "the new delays were not applied");
        assert!(
            sm.source_errors.load(Relaxed) >= 2,
            "failed opens not counted"
        );
        stop.stop();
        assert!(
            !thread.join().expect("reopen thread"),
            "stopped, not opened"
        );
    }
}
