//! Idle workers help a busy one: intra-operator parallelism that costs nothing under load.
//!
//! A pipeline's workers share a [`Team`]. A worker classifies a frame inside [`Member::lead`] and
//! posts an invitation as it takes the frame ([`invite`]); a worker with no frame of its own
//! that picks it up [`help`]s until the frame is done or a frame of its own arrives. Inside the
//! model, the convolutions split their work into independent parts with [`for_each`]; while a
//! helper is attached, the leader and its helpers take the parts in turn, otherwise the leader
//! runs them all, in order, as before. Before the model, a JPEG frame's decode runs [`beside`]
//! the resize of the rows already decoded. Under load no worker is idle, no one answers, and each
//! frame runs on one core as in the single-threaded benchmark; when frames come slower than the
//! workers keep up with, the idle cores shorten each frame's latency.
//!
//! A helper stays attached for the whole frame and spins between parts (a part takes tens of
//! microseconds; waking a sleeping thread for each would cost as much), so the parts of one
//! operator are handed over through a few atomics and nothing is allocated per part.
//!
//! This file holds the team, its members and the leader's side; a split's parts and their
//! hand-over are in `job.rs`, the helper's loop in `helper.rs`, and the disjoint output
//! ranges the parts write in `shared.rs`. What a part computes is the caller's (the kernels').

use std::cell::Cell;
use std::panic;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

mod helper;
mod job;
mod shared;

pub use helper::help;
use job::{Job, Retire};
pub use shared::{bounds, Shared};

/// The invitations of one pipeline's workers.
#[derive(Debug)]
pub struct Team {
    tx: Sender<Arc<Gang>>,
    rx: Receiver<Arc<Gang>>,
    workers: usize,
}

impl Team {
    /// A team of `workers` workers.
    pub fn new(workers: usize) -> Arc<Team> {
        let (tx, rx) = bounded(workers.max(1));
        Arc::new(Team { tx, rx, workers })
    }

    /// One worker's place in the team.
    pub fn member(self: &Arc<Team>) -> Member {
        Member {
            team: Arc::clone(self),
            gang: Arc::new(Gang::default()),
        }
    }
}

/// One worker of a [`Team`]: it leads its own frames, and helps others' between them.
#[derive(Debug)]
pub struct Member {
    team: Arc<Team>,
    /// This worker's frames' state, reused from frame to frame (nothing is allocated per
    /// frame): an invitation to an earlier frame that no one took is an invitation to this one.
    gang: Arc<Gang>,
}

impl Member {
    /// What this worker waits on when it has no frame (next to its frames): each message is
    /// another worker's invitation, to pass to [`help`].
    pub fn invitations(&self) -> &Receiver<Arc<Gang>> {
        &self.team.rx
    }

    /// Runs `f` (one frame's work) on this thread; idle workers [`invite`]d inside it help with
    /// the [`for_each`] calls made inside it.
    pub fn lead<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.team.workers < 2 {
            return f();
        }
        self.gang.ended.store(false, SeqCst);
        let _end = End(&self.gang);
        let previous = CURRENT.with(|c| c.replace(self as *const Member));
        let _restore = Restore(previous);
        f()
    }

    /// Posts this worker's invitation unless one is already waiting to be taken or every other
    /// worker already helps: at most one per worker is ever queued, so the queue (one place per
    /// worker) never refuses one.
    fn invite(&self) {
        let gang = &self.gang;
        if gang.helpers.load(SeqCst) + 1 >= self.team.workers {
            return;
        }
        if !gang.posted.swap(true, SeqCst) && self.team.tx.try_send(Arc::clone(gang)).is_err() {
            gang.posted.store(false, SeqCst);
        }
    }
}

/// Invites idle workers to help with the frame this thread leads (no-op outside
/// [`Member::lead`]). [`for_each`] invites too, but a parked worker takes a while to wake (up to
/// a millisecond on a busy VM): the pipeline invites as it takes the frame, before decoding, so
/// that the helper is there when the model starts. It spins through the decode; inviting only
/// after it saved a tenth of a core at 50 frames/s but measured 5-15% slower frames.
pub fn invite() {
    let member = CURRENT.with(|c| c.get());
    if !member.is_null() && !IN_PART.with(|p| p.get()) {
        // SAFETY: CURRENT points at the member whose `lead` is running on this thread.
        unsafe { &*member }.invite();
    }
}

/// The gang of the frame this thread leads, outside any part.
///
/// # Safety
/// The reference is used only before the function that called this returns (inside the
/// running [`Member::lead`]).
unsafe fn current_gang<'a>() -> Option<&'a Gang> {
    let member = CURRENT.with(|c| c.get());
    let nested = IN_PART.with(|p| p.get());
    // SAFETY: CURRENT points at the member whose `lead` is running on this thread (it is reset
    // before `lead` returns), and the caller's contract.
    (!member.is_null() && !nested).then(|| unsafe { &*(*member).gang })
}

/// One frame's shared state between its leader and its helpers.
#[derive(Debug, Default)]
pub struct Gang {
    /// Set when the leader's frame is done: helpers go back to waiting.
    ended: AtomicBool,
    /// Helpers attached now.
    helpers: AtomicUsize,
    /// An invitation to this gang is queued (see [`Member::invite`]).
    posted: AtomicBool,
    /// Helpers between "announce" and "leave" of a look at `job` (see [`help`]).
    inside: AtomicUsize,
    /// Whether `job` is open to helpers.
    open: AtomicBool,
    /// The open job, on the leader's stack; valid while `open` (and until `inside` is 0).
    job: AtomicPtr<Job>,
    /// A part panicked on a helper; the leader panics with it.
    poisoned: AtomicBool,
}

thread_local! {
    /// The member whose frame this thread runs ([`Member::lead`]).
    static CURRENT: Cell<*const Member> = const { Cell::new(ptr::null()) };
    /// Set while this thread runs a part: a nested [`for_each`] runs serially.
    static IN_PART: Cell<bool> = const { Cell::new(false) };
}

struct Restore(*const Member);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

struct End<'a>(&'a Gang);

impl Drop for End<'_> {
    fn drop(&mut self) {
        self.0.ended.store(true, Release);
    }
}

/// Whether [`for_each`] called here now would share its parts with a helper: kernels whose
/// finer split costs something on one thread split finer only then.
pub fn helping() -> bool {
    // SAFETY: used only here.
    unsafe { current_gang() }.is_some_and(|g| g.helpers.load(Acquire) > 0)
}

/// Calls `f(0)`, ..., `f(n - 1)`, each exactly once, in any order and possibly on several
/// threads at once: each part must write only what no other part touches. Serial (in order, on
/// this thread) unless this thread leads a frame that a helper is attached to.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    if n > 1 {
        invite();
    }
    // SAFETY: used only in this call.
    let Some(gang) = unsafe { current_gang() }.filter(|g| n > 1 && g.helpers.load(Acquire) > 0)
    else {
        (0..n).for_each(f);
        return;
    };
    // SAFETY: `job` is retired below, before `f` goes out of scope.
    let job = unsafe { Job::new(&f, n) };
    let retire = Retire::open(gang, &job);
    IN_PART.with(|p| p.set(true));
    // SAFETY: `f` is alive for this whole function.
    let (_, payload) = unsafe { job.work() };
    IN_PART.with(|p| p.set(false));
    drop(retire);
    if let Some(p) = payload {
        panic::resume_unwind(p);
    }
    if gang.poisoned.swap(false, SeqCst) {
        panic!("a part of a parallel operator panicked on a helper thread");
    }
}

/// Runs `main` on this thread while a helper, if one is attached or attaches meanwhile, runs
/// `side` beside it; if no helper has taken `side` when `main` returns, this thread runs it
/// then. Both have run, once each, when this returns (unless `main` panics: then `side` may not
/// run at all). Outside a frame led with helpers possible: `main`, then `side`.
///
/// `side` may wait for what `main` does (a decode's rows, say), but must stop waiting once
/// `main` has returned or unwound, as it may run after it, or before it ends on another thread.
/// `main` runs any [`for_each`] serially.
pub fn beside<R>(main: impl FnOnce() -> R, side: impl Fn() + Sync) -> R {
    // SAFETY: used only in this call.
    let Some(gang) = (unsafe { current_gang() }) else {
        let r = main();
        side();
        return r;
    };
    invite();
    let part = |_: usize| side();
    // SAFETY: `job` is retired below, before `part` goes out of scope, whether `main` returns
    // or unwinds.
    let job = unsafe { Job::new(&part, 1) };
    let retire = Retire::open(gang, &job);
    let r = {
        IN_PART.with(|p| p.set(true));
        let _serial = Serial;
        main()
    };
    // SAFETY: `part` is alive for this whole function.
    let (_, payload) = unsafe { job.work() };
    drop(retire);
    if let Some(p) = payload {
        panic::resume_unwind(p);
    }
    if gang.poisoned.swap(false, SeqCst) {
        panic!("a part run beside the frame's work panicked on a helper thread");
    }
    r
}

/// Clears [`IN_PART`] when dropped (on unwinding too).
struct Serial;

impl Drop for Serial {
    fn drop(&mut self) {
        IN_PART.with(|p| p.set(false));
    }
}

#[cfg(test)]
mod tests;
