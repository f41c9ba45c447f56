//! The one shutdown signal: a flag that stops the source.
//!
//! SIGINT/SIGTERM (see [`crate::daemon`]) or a test sets it; the capture thread checks it between
//! frames and sources check it while they wait (pacing, back-off), so a stop is seen within
//! [`POLL`]. Every later stage stops on its own when its input channel disconnects: nothing else
//! reads this flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a waiting source looks at the flag.
pub const POLL: Duration = Duration::from_millis(20);

/// A cloneable stop flag. Clones share one `AtomicBool`: any holder may set it (signal handler,
/// test, `files` source at end of input); the capture thread and sources read it. A
/// [`StopToken::child`] is stopped by its own flag or by its parent's (a reload stops one
/// source's capture thread with its child token; the daemon's stop ends them all).
#[derive(Clone, Debug, Default)]
pub struct StopToken {
    flag: Arc<AtomicBool>,
    parent: Option<Box<StopToken>>,
}

impl StopToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared flag, for `signal_hook::flag::register`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst) || self.parent.as_ref().is_some_and(|p| p.is_stopped())
    }

    /// A token stopped by `stop` on itself or by this one's stop; stopping it leaves this one
    /// running.
    pub fn child(&self) -> StopToken {
        StopToken {
            flag: Arc::new(AtomicBool::new(false)),
            parent: Some(Box::new(self.clone())),
        }
    }

    /// Sleeps for `dur`, waking early on stop. Returns `true` if stopped.
    pub fn sleep(&self, dur: Duration) -> bool {
        let deadline = Instant::now() + dur;
        loop {
            if self.is_stopped() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep((deadline - now).min(POLL));
        }
    }

    /// Sleeps until `deadline`, waking early on stop. Returns `true` if stopped.
    pub fn sleep_until(&self, deadline: Instant) -> bool {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_wakes_early_when_stopped() {
        let stop = StopToken::new();
        let other = stop.clone();
        let t = std::thread::spawn(move || other.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        stop.stop();
        assert!(t.join().expect("sleeper thread"));
    }

    #[test]
    fn a_child_stops_with_its_parent_but_not_the_other_way() {
        let parent = StopToken::new();
        let (a, b) = (parent.child(), parent.child());
        a.stop();
        assert!(a.is_stopped() && !b.is_stopped() && !parent.is_stopped());
        parent.stop();
        assert!(b.is_stopped());
    }

    #[test]
    fn sleep_runs_to_deadline_without_stop() {
        let stop = StopToken::new();
        assert!(!stop.sleep(Duration::from_millis(5)));
    }
}
