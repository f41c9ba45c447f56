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

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

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

/// One [`for_each`] or [`beside`] call.
struct Job {
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
    unsafe fn new(f: &(dyn Fn(usize) + Sync), n: usize) -> Job {
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
    unsafe fn work(&self) -> (usize, Option<Box<dyn std::any::Any + Send>>) {
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

/// An open job of the leader's: helpers may take its parts until it is dropped. Dropping it
/// (when the leader is done with the job, or unwinds) claims every part no thread has taken
/// (they will not run), waits for the parts helpers took, closes the job, and waits until no
/// helper can still reach it.
struct Retire<'a> {
    gang: &'a Gang,
    job: &'a Job,
}

impl<'a> Retire<'a> {
    fn open(gang: &'a Gang, job: &'a Job) -> Retire<'a> {
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

/// A mutable slice that [`for_each`]'s parts write disjoint ranges of.
pub struct Shared<'a, T> {
    ptr: *mut T,
    len: usize,
    _slice: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: parts only reach the slice through `range`, whose contract is that no two live
// ranges overlap.
unsafe impl<T: Send> Sync for Shared<'_, T> {}
unsafe impl<T: Send> Send for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    pub fn new(s: &'a mut [T]) -> Self {
        Shared {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _slice: std::marker::PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The first value's address, for kernels that store through pointers: the same contract
    /// as [`Self::range`] holds for every value they write.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `start..end` of the slice.
    ///
    /// # Safety
    /// No other range in use at the same time overlaps it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, start: usize, end: usize) -> &mut [T] {
        assert!(
            start <= end && end <= self.len,
            "{start}..{end} of {}",
            self.len
        );
        // SAFETY: in bounds (asserted); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

/// Splits `n` items into at most `parts` contiguous ranges of nearly equal size: part `i` of
/// `split(n, parts)` is `bounds(n, parts, i)`.
pub fn bounds(n: usize, parts: usize, i: usize) -> (usize, usize) {
    let parts = parts.max(1);
    (n * i / parts, n * (i + 1) / parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A worker that helps every invitation until told to stop.
    fn helper(team: &Arc<Team>, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
        let (rx, stop) = (team.member().invitations().clone(), Arc::clone(stop));
        std::thread::spawn(move || {
            let mut ran = 0;
            while !stop.load(SeqCst) {
                if let Ok(g) = rx.recv_timeout(Duration::from_millis(5)) {
                    ran += help(&g, || stop.load(SeqCst));
                }
            }
            ran
        })
    }

    /// Invites until a helper is attached (again and again, as a frame's splits do: the
    /// helper thread may still be starting, or leaving another frame).
    fn wait_for_helper() {
        // SAFETY: used only in this call, inside `lead`.
        let g = unsafe { current_gang() }.expect("called inside lead");
        let t = Instant::now();
        while g.helpers.load(SeqCst) == 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "no helper came");
            invite();
            std::thread::yield_now();
        }
    }

    #[test]
    fn every_part_runs_once_with_a_helper_and_the_helper_takes_some() {
        let team = Team::new(2);
        let stop = Arc::new(AtomicBool::new(false));
        let h = helper(&team, &stop);
        let team = team.member();
        let mut led = 0;
        for round in 0..50 {
            let counts: Vec<AtomicU32> = (0..97).map(|_| AtomicU32::new(0)).collect();
            team.lead(|| {
                wait_for_helper();
                for _ in 0..20 {
                    for_each(counts.len(), |i| {
                        // Long enough parts that both threads get some.
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_micros(20) {}
                        counts[i].fetch_add(1, SeqCst);
                    });
                }
            });
            for (i, c) in counts.iter().enumerate() {
                assert_eq!(c.load(SeqCst), 20, "round {round}: part {i}");
            }
            led += 1;
        }
        stop.store(true, SeqCst);
        let helped = h.join().unwrap();
        assert_eq!(led, 50);
        assert!(helped > 0, "the helper ran no part");
    }

    #[test]
    fn without_a_helper_parts_run_in_order_on_this_thread() {
        let team = Team::new(2).member();
        let seen = std::sync::Mutex::new(Vec::new());
        let me = std::thread::current().id();
        team.lead(|| {
            for_each(5, |i| {
                assert_eq!(std::thread::current().id(), me);
                seen.lock().unwrap().push(i);
            })
        });
        for_each(3, |i| seen.lock().unwrap().push(10 + i));
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3, 4, 10, 11, 12]);
    }

    #[test]
    fn a_split_invites_and_a_frame_queues_one_invitation_at_most() {
        let team = Team::new(2);
        let (leader, idle) = (team.member(), team.member());
        let queued = idle.invitations();
        for frame in 0..3 {
            leader.lead(|| {
                // A call with one part is not split: it invites no one.
                for_each(1, |_| {});
                assert_eq!(
                    queued.len(),
                    if frame == 0 { 0 } else { 1 },
                    "frame {frame}"
                );
                for _ in 0..10 {
                    for_each(4, |_| {});
                    invite();
                }
                assert_eq!(queued.len(), 1, "frame {frame}");
            });
        }
        // Outside a frame nothing is posted.
        invite();
        for_each(4, |_| {});
        assert_eq!(queued.len(), 1);
        // Taken: the gang may be posted again (for another idle worker).
        let gang = queued.try_recv().unwrap();
        assert_eq!(help(&gang, || false), 0, "the frame has ended");
        leader.lead(|| {
            invite();
            assert_eq!(queued.len(), 1);
        });
        // Not while every other worker already helps.
        let gang = queued.try_recv().unwrap();
        help(&gang, || false);
        gang.helpers.fetch_add(1, SeqCst);
        leader.lead(invite);
        assert!(queued.is_empty(), "the only other worker already helps");
        gang.helpers.fetch_sub(1, SeqCst);
        leader.lead(invite);
        assert_eq!(queued.len(), 1);
    }

    #[test]
    fn a_helper_that_leaves_mid_frame_leaves_nothing_undone() {
        let team = Team::new(2).member();
        let leave = Arc::new(AtomicBool::new(false));
        let (rx, l) = (team.invitations().clone(), Arc::clone(&leave));
        let h = std::thread::spawn(move || {
            let g = rx.recv().unwrap();
            help(&g, || l.load(SeqCst))
        });
        let counts: Vec<AtomicU32> = (0..64).map(|_| AtomicU32::new(0)).collect();
        team.lead(|| {
            wait_for_helper();
            for round in 0..40 {
                if round == 20 {
                    leave.store(true, SeqCst);
                }
                for_each(counts.len(), |i| {
                    counts[i].fetch_add(1, SeqCst);
                });
            }
        });
        h.join().unwrap();
        assert!(counts.iter().all(|c| c.load(SeqCst) == 40));
    }

    #[test]
    fn nested_calls_run_serially_inside_a_part() {
        let team = Team::new(2);
        let stop = Arc::new(AtomicBool::new(false));
        let h = helper(&team, &stop);
        let team = team.member();
        let total = AtomicU32::new(0);
        team.lead(|| {
            wait_for_helper();
            for_each(8, |_| {
                for_each(8, |_| {
                    total.fetch_add(1, SeqCst);
                })
            });
        });
        stop.store(true, SeqCst);
        h.join().unwrap();
        assert_eq!(total.load(SeqCst), 64);
    }

    #[test]
    fn beside_runs_main_then_side_here_when_no_helper_can_come() {
        let seen = std::sync::Mutex::new(Vec::new());
        let me = std::thread::current().id();
        let side = || {
            assert_eq!(std::thread::current().id(), me);
            seen.lock().unwrap().push("side");
        };
        // Outside a frame, and inside one of a team where no helper answers.
        beside(|| seen.lock().unwrap().push("main"), side);
        let r = Team::new(2).member().lead(|| {
            beside(
                || {
                    seen.lock().unwrap().push("main");
                    7
                },
                side,
            )
        });
        assert_eq!(r, 7);
        assert_eq!(*seen.lock().unwrap(), vec!["main", "side", "main", "side"]);
    }

    #[test]
    fn beside_runs_side_on_a_helper_while_main_runs() {
        let team = Team::new(2);
        let stop = Arc::new(AtomicBool::new(false));
        let h = helper(&team, &stop);
        let team = team.member();
        let me = std::thread::current().id();
        for round in 0..20 {
            let (started, main_done, runs) = (
                AtomicBool::new(false),
                AtomicBool::new(false),
                AtomicU32::new(0),
            );
            let overlapped = team.lead(|| {
                wait_for_helper();
                beside(
                    || {
                        // Returns only once `side` has started on the helper (or gives up).
                        let t = Instant::now();
                        while !started.load(SeqCst) && t.elapsed() < Duration::from_secs(10) {
                            std::hint::spin_loop();
                        }
                        main_done.store(true, SeqCst);
                        started.load(SeqCst)
                    },
                    || {
                        runs.fetch_add(1, SeqCst);
                        assert_ne!(std::thread::current().id(), me, "side ran on the leader");
                        started.store(true, SeqCst);
                        while !main_done.load(SeqCst) {
                            std::hint::spin_loop();
                        }
                    },
                )
            });
            assert!(overlapped, "round {round}: side did not run beside main");
            assert_eq!(runs.load(SeqCst), 1, "round {round}");
        }
        stop.store(true, SeqCst);
        assert!(h.join().unwrap() >= 20);
    }

    #[test]
    fn a_main_that_panics_beside_a_helper_leaves_the_frame_usable() {
        let team = Team::new(2);
        let stop = Arc::new(AtomicBool::new(false));
        let h = helper(&team, &stop);
        let team = team.member();
        let (side_runs, parts) = (AtomicU32::new(0), AtomicU32::new(0));
        team.lead(|| {
            wait_for_helper();
            let caught = panic::catch_unwind(AssertUnwindSafe(|| {
                beside(
                    || panic!("main fails"),
                    || {
                        side_runs.fetch_add(1, SeqCst);
                    },
                )
            }));
            assert!(caught.is_err());
            // The job is closed and no part is lost: the next split of the frame runs whole.
            for_each(16, |_| {
                parts.fetch_add(1, SeqCst);
            });
        });
        stop.store(true, SeqCst);
        h.join().unwrap();
        assert!(side_runs.load(SeqCst) <= 1);
        assert_eq!(parts.load(SeqCst), 16);
    }

    #[test]
    fn shared_ranges_write_disjoint_parts() {
        let team = Team::new(2);
        let stop = Arc::new(AtomicBool::new(false));
        let h = helper(&team, &stop);
        let team = team.member();
        let mut v = vec![0u32; 1000];
        team.lead(|| {
            wait_for_helper();
            let s = Shared::new(&mut v);
            for_each(7, |i| {
                let (a, b) = bounds(s.len(), 7, i);
                // SAFETY: bounds() ranges are disjoint.
                for (j, x) in unsafe { s.range(a, b) }.iter_mut().enumerate() {
                    *x = (a + j) as u32;
                }
            });
        });
        stop.store(true, SeqCst);
        h.join().unwrap();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    }

    #[test]
    fn bounds_cover_everything_once() {
        for n in [0, 1, 5, 64, 97] {
            for parts in 1..10 {
                let mut next = 0;
                for i in 0..parts {
                    let (a, b) = bounds(n, parts, i);
                    assert_eq!(a, next);
                    next = b;
                }
                assert_eq!(next, n);
            }
        }
    }
}
