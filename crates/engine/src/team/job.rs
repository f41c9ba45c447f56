//! One split of a leader's work ([`Job`]: `n` parts of one function, taken in turn by the
//! leader and any attached helper) and its retirement ([`Retire`]: when the leader is done
//! with it, or unwinds, no helper can reach it any more). When parts are split and who takes
//! them is [`super`]'s.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::*};

use super::Gang;

/// One [`super::for_each`] or [`super::beside`] call.
pub(super) struct Job {
    /// The parts' function, its lifetime erased: the caller keeps it alive until the job is
    /// retired ([`Retire`]) and no helper can reach it.
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

impl Job {
    /// A job of `n` parts, `f(0)` to `f(n - 1)`.
    ///
    /// # Safety
    /// The job is retired ([`Retire`]) before `f` goes out of scope: helpers reach `f` through
    /// a pointer whose lifetime is erased, and after the retirement no helper can.
    pub(super) unsafe fn new(f: &(dyn Fn(usize) + Sync), n: usize) -> Job {
        Job {
            // SAFETY: only the lifetime changes (the caller's contract).
            f: unsafe {
                std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f)
            },
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }

    /// Takes parts until none is left; returns how many this thread ran.
    ///
    /// A part that panics still counts as done (so that no thread waits for it forever); the
    /// first payload is returned, for the leader to re-raise once no helper holds the job.
    ///
    /// # Safety
    /// `self.f` is alive.
    pub(super) unsafe fn work(&self) -> (usize, Option<Box<dyn std::any::Any + Send>>) {
        let (mut ran, mut payload) = (0, None);
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= self.n {
                return (ran, payload);
            }
            // SAFETY: the caller's contract.
            let f = unsafe { &*self.f };
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| f(i))) {
                payload.get_or_insert(p);
            }
            ran += 1;
            self.done.fetch_add(1, Release);
        }
    }
}

/// An open job of the leader's: helpers may take its parts until it is dropped. Dropping it
/// (when the leader is done with the job, or unwinds) claims every part no thread has taken
/// (they will not run), waits for the parts helpers took, closes the job, and waits until no
/// helper can still reach it.
pub(super) struct Retire<'a> {
    gang: &'a Gang,
    job: &'a Job,
}

impl<'a> Retire<'a> {
    pub(super) fn open(gang: &'a Gang, job: &'a Job) -> Retire<'a> {
        gang.job.store(job as *const Job as *mut Job, SeqCst);
        gang.open.store(true, SeqCst);
        Retire { gang, job }
    }
}

impl Drop for Retire<'_> {
    fn drop(&mut self) {
        let job = self.job;
        // Parts below `taken` were taken by some thread and will be counted done; the rest are
        // now this thread's, and will not run.
        let taken = job.next.fetch_add(job.n, Relaxed).min(job.n);
        while job.done.load(Acquire) < taken {
            std::hint::spin_loop();
        }
        self.gang.open.store(false, SeqCst);
        // A helper that looked at the job before it closed may still hold the pointer (it takes
        // no part: none is left); wait until it has let go.
        while self.gang.inside.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}
