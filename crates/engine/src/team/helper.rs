//! The helper's side of the team: an idle worker that took an invitation runs the leader's
//! parts until the frame ends or work of its own arrives ([`help`]). What a part is, and how
//! it is handed over, is [`super::job`]'s.

use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use super::Gang;

/// After this long without a part to run, a helper yields its core between looks.
const SPIN: Duration = Duration::from_micros(200);

/// Helps `gang`'s leader until its frame is done or `leave()` says this thread has work of its
/// own (checked between parts). Returns how many parts this thread ran.
pub fn help(gang: &Gang, leave: impl Fn() -> bool) -> usize {
    // Taken off the queue: the leader may post again, for another idle worker.
    gang.posted.store(false, SeqCst);
    gang.helpers.fetch_add(1, SeqCst);
    let mut ran = 0;
    let mut idle_since = Instant::now();
    loop {
        ran += help_frame(gang, &leave, &mut idle_since);
        gang.helpers.fetch_sub(1, SeqCst);
        // The leader may have begun its next frame while this thread was leaving, and found
        // it still counted as attached, so posted no invitation for it (see
        // [`Member::invite`]): then stay for that frame. Either this sees the new frame, or
        // the leader saw this thread gone and invited again (both sides act in SeqCst order).
        if gang.ended.load(SeqCst) || leave() {
            return ran;
        }
        gang.helpers.fetch_add(1, SeqCst);
    }
}

/// [`help`]'s loop over one frame: parts until the frame ends or `leave()`. Returns how many
/// parts this thread ran.
fn help_frame(gang: &Gang, leave: &impl Fn() -> bool, idle_since: &mut Instant) -> usize {
    let mut ran = 0;
    while !gang.ended.load(Acquire) && !leave() {
        gang.inside.fetch_add(1, SeqCst);
        let mut got = 0;
        if gang.open.load(SeqCst) {
            let job = gang.job.load(SeqCst);
            // SAFETY: `open` was seen after `inside` was raised, so the leader has not yet
            // passed its wait for `inside` to fall to 0: `job` and its function are alive.
            let (n, payload) = unsafe { (*job).work() };
            if payload.is_some() {
                // The leader panics in its place: a part never panics on valid tensors.
                gang.poisoned.store(true, SeqCst);
            }
            got = n;
        }
        gang.inside.fetch_sub(1, SeqCst);
        if got > 0 {
            ran += got;
            *idle_since = Instant::now();
        } else if idle_since.elapsed() > SPIN {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    ran
}
