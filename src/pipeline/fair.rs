//! The frame queue shared by every source and worker: one bounded lane per source, taken from
//! in round-robin order so that a fast source cannot starve a slow one.
//!
//! Each source's capture thread puts its frames in its own lane (capacity `frame_queue`). A live
//! source's lane never makes the capture thread wait: when it is full its oldest frame is
//! dropped and counted. A source that is not live (files, synthetic with `fps = 0`) waits for
//! room instead, so every frame of it is classified. A worker takes one frame from the next lane
//! (after the one it took from last) that holds any; from a live lane, when no other worker is
//! waiting, it takes the newest and drops the older ones (counted per source), so a frame taken
//! under overload is at most one frame interval old. Under overload every source with frames
//! waiting therefore gets an equal share of the workers.
//!
//! Lanes are never removed: a source whose capture thread ended is closed and skipped. The queue
//! is finished once every lane is closed and empty; the workers then end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::frame::Frame;
use crate::metrics::{Metrics, SourceMetrics};
use crate::source::regions::Region;
use crate::stop::{StopToken, POLL};

/// Wake-up tokens held at most: one is sent per frame put in (dropped when this many wait),
/// and a worker waits for one when the queue is empty. A lost token only costs a worker one
/// [`POLL`] interval, since workers also look at the queue between waits.
const TOKENS: usize = 1024;

/// A frame taken by a worker, with its source's counters.
pub(crate) struct Taken {
    pub(crate) source: Arc<SourceMetrics>,
    /// The source's regions (empty: the whole frame is classified).
    pub(crate) regions: Arc<[Region]>,
    /// The model of the source's whole frames (by name).
    pub(crate) model: Arc<str>,
    pub(crate) frame: Frame,
}

struct Lane {
    source: Arc<SourceMetrics>,
    regions: Arc<[Region]>,
    model: Arc<str>,
    live: bool,
    /// False once the source's capture thread has ended.
    open: bool,
    frames: VecDeque<Frame>,
}

struct State {
    lanes: Vec<Lane>,
    /// The lane the next take starts looking at.
    next: usize,
}

/// See the module doc. Shared as `Arc<FairQueue>` by the capture threads (which put) and the
/// workers (which take); it outlives configuration reloads.
pub(crate) struct FairQueue {
    /// Frames waiting, per lane; locked briefly by every put and take.
    state: Mutex<State>,
    /// Notified when a frame is taken: a capture thread of a source that is not live waits on it
    /// for room in its lane.
    room: Condvar,
    /// Wake-up tokens, capture threads -> workers (see [`TOKENS`]). Never closes (the queue
    /// holds both ends); workers end on [`FairQueue::finished`].
    ready_tx: Sender<()>,
    ready_rx: Receiver<()>,
    /// Frames per lane (at least 1); a reload may change it.
    capacity: AtomicUsize,
    /// The totals beside each source's counters (drops are counted in both).
    metrics: Arc<Metrics>,
}

impl FairQueue {
    /// A queue with no lanes; each lane holds up to `capacity` frames (at least 1).
    pub(crate) fn new(capacity: usize, metrics: Arc<Metrics>) -> FairQueue {
        let (ready_tx, ready_rx) = bounded(TOKENS);
        FairQueue {
            state: Mutex::new(State {
                lanes: Vec::new(),
                next: 0,
            }),
            room: Condvar::new(),
            ready_tx,
            ready_rx,
            capacity: AtomicUsize::new(capacity.max(1)),
            metrics,
        }
    }

    /// Frames each lane holds at most.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(Relaxed)
    }

    /// Sets the frames each lane holds (at least 1). A live lane over it drops its oldest
    /// frames at its next put; a lane that is not live waits until it is under it.
    pub(crate) fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Relaxed);
        // Non-live sources waiting for room see the new capacity at once.
        self.room.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only whole frames behind: carry on with them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a lane for a source; returns its index, for [`FairQueue::put`] and
    /// [`FairQueue::close`].
    pub(crate) fn add_lane(
        &self,
        source: Arc<SourceMetrics>,
        live: bool,
        regions: Arc<[Region]>,
        model: Arc<str>,
    ) -> usize {
        let mut s = self.lock();
        let lane = Lane {
            source,
            regions,
            model,
            live,
            open: true,
            frames: VecDeque::with_capacity(self.capacity()),
        };
        // A lane whose source a reload removed is taken over once it is empty.
        if let Some(i) = s.lanes.iter().position(|l| !l.open && l.frames.is_empty()) {
            s.lanes[i] = lane;
            return i;
        }
        s.lanes.push(lane);
        s.lanes.len() - 1
    }

    /// Puts a frame in `lane`. A live lane that is full drops its oldest frame; a lane that is
    /// not live waits for room, waking on `stop`. Returns false when stopped before the frame
    /// went in (or `lane` does not exist).
    pub(crate) fn put(&self, lane: usize, frame: Frame, stop: &StopToken) -> bool {
        let mut s = self.lock();
        loop {
            let Some(l) = s.lanes.get_mut(lane) else {
                return false;
            };
            let capacity = self.capacity();
            if l.frames.len() < capacity {
                l.frames.push_back(frame);
                break;
            }
            if l.live {
                // More than one over when a reload made the lanes shorter.
                while l.frames.len() >= capacity {
                    l.frames.pop_front();
                    l.source.dropped.fetch_add(1, Relaxed);
                    self.metrics.dropped.fetch_add(1, Relaxed);
                }
                l.frames.push_back(frame);
                break;
            }
            if stop.is_stopped() {
                return false;
            }
            s = self
                .room
                .wait_timeout(s, POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(s);
        let _ = self.ready_tx.try_send(());
        true
    }

    /// Takes up to `n` frames, one at a time from successive lanes in round-robin order.
    /// `newest`: no other worker waits, so a live lane gives its newest frame and drops the
    /// older ones; otherwise the oldest, leaving the next to another worker.
    pub(crate) fn take(&self, n: usize, newest: bool) -> Vec<Taken> {
        let mut out = Vec::new();
        let mut s = self.lock();
        let count = s.lanes.len();
        while out.len() < n {
            let start = s.next;
            let Some(i) = (0..count)
                .map(|k| (start + k) % count)
                .find(|&i| !s.lanes[i].frames.is_empty())
            else {
                break;
            };
            s.next = (i + 1) % count;
            let l = &mut s.lanes[i];
            let frame = if l.live && newest {
                let stale = l.frames.len() as u64 - 1;
                if stale > 0 {
                    l.source.dropped.fetch_add(stale, Relaxed);
                    self.metrics.dropped.fetch_add(stale, Relaxed);
                }
                let f = l.frames.pop_back();
                l.frames.clear();
                f
            } else {
                l.frames.pop_front()
            };
            if let Some(frame) = frame {
                out.push(Taken {
                    source: Arc::clone(&l.source),
                    regions: Arc::clone(&l.regions),
                    model: Arc::clone(&l.model),
                    frame,
                });
            }
        }
        drop(s);
        if !out.is_empty() {
            self.room.notify_all();
        }
        out
    }

    /// Marks `lane`'s source as ended: its frames still waiting are taken, then it is skipped.
    pub(crate) fn close(&self, lane: usize) {
        if let Some(l) = self.lock().lanes.get_mut(lane) {
            l.open = false;
        }
        let _ = self.ready_tx.try_send(());
    }

    /// Lanes of sources still capturing.
    pub(crate) fn lanes(&self) -> usize {
        self.lock().lanes.iter().filter(|l| l.open).count()
    }

    /// No frame waits in any lane.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().lanes.iter().all(|l| l.frames.is_empty())
    }

    /// Every lane is closed and empty: no frame will come any more.
    pub(crate) fn finished(&self) -> bool {
        self.lock()
            .lanes
            .iter()
            .all(|l| !l.open && l.frames.is_empty())
    }

    /// Wake-up tokens: a worker with nothing to take waits on this (see [`TOKENS`]).
    pub(crate) fn ready(&self) -> &Receiver<()> {
        &self.ready_rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue of lanes (name, live) with `capacity` frames each.
    fn queue(lanes: &[(&str, bool)], capacity: usize) -> (FairQueue, Arc<Metrics>) {
        let m = Arc::new(Metrics::new(&[]));
        let q = FairQueue::new(capacity, Arc::clone(&m));
        for (name, live) in lanes {
            q.add_lane(m.add_source(name), *live, Arc::from([]), "default".into());
        }
        (q, m)
    }

    fn frame(seq: u64) -> Frame {
        let mut f = Frame::new(crate::frame::PixelFormat::Gray8, 1, 1, vec![0]);
        f.seq = seq;
        f
    }

    fn put_all(q: &FairQueue, lane: usize, seqs: std::ops::Range<u64>) {
        for seq in seqs {
            assert!(q.put(lane, frame(seq), &StopToken::new()));
        }
    }

    /// (source, seq) of each frame taken.
    fn names(taken: Vec<Taken>) -> Vec<(String, u64)> {
        taken
            .into_iter()
            .map(|t| (t.source.name.to_string(), t.frame.seq))
            .collect()
    }

    #[test]
    fn takes_go_round_robin_across_sources() {
        let (q, _) = queue(&[("a", false), ("b", false), ("c", false)], 8);
        put_all(&q, 0, 0..4);
        put_all(&q, 1, 0..1);
        put_all(&q, 2, 0..2);
        let got: Vec<(String, u64)> = (0..7).flat_map(|_| names(q.take(1, false))).collect();
        let want = [
            ("a", 0),
            ("b", 0),
            ("c", 0),
            ("a", 1),
            ("c", 1),
            ("a", 2),
            ("a", 3),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        assert_eq!(got, want);
        assert!(q.take(1, false).is_empty());
        // A batch take visits the lanes in the same order.
        put_all(&q, 0, 4..6);
        put_all(&q, 1, 1..2);
        let got = names(q.take(3, false));
        assert_eq!(
            got,
            [("b".into(), 1), ("a".into(), 4), ("a".into(), 5)],
            "the round continues after the last lane taken from (a)"
        );
    }

    #[test]
    fn a_live_lane_gives_its_newest_frame_and_counts_the_older_as_dropped() {
        let (q, m) = queue(&[("fast", true), ("slow", true)], 4);
        put_all(&q, 0, 0..3);
        put_all(&q, 1, 0..1);
        assert_eq!(names(q.take(1, true)), [("fast".into(), 2)]);
        assert_eq!(names(q.take(1, true)), [("slow".into(), 0)]);
        let s = m.snapshot();
        assert_eq!(
            (s.sources[0].dropped, s.sources[1].dropped, s.dropped),
            (2, 0, 2)
        );
        // Another worker waits: the oldest is taken, nothing dropped.
        put_all(&q, 0, 3..5);
        assert_eq!(names(q.take(1, false)), [("fast".into(), 3)]);
        assert_eq!(m.snapshot().dropped, 2);
    }

    #[test]
    fn a_full_live_lane_drops_its_oldest_and_only_its_own() {
        let (q, m) = queue(&[("a", true), ("b", true)], 2);
        put_all(&q, 0, 0..5);
        put_all(&q, 1, 0..2);
        let s = m.snapshot();
        assert_eq!((s.sources[0].dropped, s.sources[1].dropped), (3, 0));
        let got: Vec<(String, u64)> = (0..4).flat_map(|_| names(q.take(1, false))).collect();
        let want: Vec<(String, u64)> = [("a", 3), ("b", 0), ("a", 4), ("b", 1)]
            .iter()
            .map(|(n, s)| (n.to_string(), *s))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_fast_source_does_not_starve_a_slow_one_under_overload() {
        // 6 frames of "fast" for each of "slow" arrive, and only 2 takes happen per round: each
        // source still gets one of them.
        let (q, m) = queue(&[("fast", true), ("slow", true)], 2);
        let mut got = [0u32; 2];
        for round in 0..50u64 {
            put_all(&q, 0, round * 6..round * 6 + 6);
            put_all(&q, 1, round..round + 1);
            for t in q.take(1, true).into_iter().chain(q.take(1, true)) {
                got[usize::from(&*t.source.name == "slow")] += 1;
            }
        }
        assert_eq!(got, [50, 50]);
        let s = m.snapshot();
        assert_eq!(s.sources[0].dropped, 50 * 5);
        assert_eq!(s.sources[1].dropped, 0);
    }

    #[test]
    fn a_lane_that_is_not_live_waits_for_room_and_keeps_every_frame() {
        let (q, m) = queue(&[("files", false)], 1);
        let q = Arc::new(q);
        put_all(&q, 0, 0..1);
        let stop = StopToken::new();
        let (q2, st) = (Arc::clone(&q), stop.clone());
        let putter = std::thread::spawn(move || q2.put(0, frame(1), &st));
        // The put waits (bounded: the taker below frees room, so it cannot wait forever).
        std::thread::sleep(POLL * 3);
        assert!(
            !putter.is_finished(),
            "a full lane that is not live makes the put wait"
        );
        assert_eq!(names(q.take(1, true)), [("files".into(), 0)]);
        assert!(putter.join().expect("putter"));
        assert_eq!(names(q.take(1, true)), [("files".into(), 1)]);
        assert_eq!(m.snapshot().dropped, 0);
        // Stopped while waiting: the put gives up.
        put_all(&q, 0, 2..3);
        stop.stop();
        assert!(!q.put(0, frame(3), &stop));
    }

    #[test]
    fn finished_once_every_lane_is_closed_and_empty() {
        let (q, _) = queue(&[("a", true), ("b", false)], 2);
        put_all(&q, 1, 0..1);
        q.close(0);
        assert!(!q.finished());
        q.close(1);
        assert!(!q.finished(), "b's frame still waits");
        assert_eq!(q.take(4, true).len(), 1);
        assert!(q.finished() && q.is_empty());
    }

    #[test]
    fn shorter_lanes_drop_a_live_lanes_oldest_at_its_next_frame() {
        let (q, m) = queue(&[("cam", true), ("files", false)], 4);
        put_all(&q, 0, 0..4);
        q.set_capacity(2);
        assert_eq!(q.capacity(), 2);
        // The lane keeps its four until its source's next frame, then holds the newest two.
        put_all(&q, 0, 4..5);
        assert_eq!(m.snapshot().sources[0].dropped, 3);
        assert_eq!(
            names(q.take(4, false)),
            [("cam".into(), 3), ("cam".into(), 4)]
        );
        q.set_capacity(0);
        assert_eq!(q.capacity(), 1, "a lane holds at least one frame");
    }

    #[test]
    fn longer_lanes_let_a_waiting_source_go_on() {
        let (q, m) = queue(&[("files", false)], 1);
        let q = Arc::new(q);
        put_all(&q, 0, 0..1);
        let stop = StopToken::new();
        let (q2, st) = (Arc::clone(&q), stop.clone());
        let putter = std::thread::spawn(move || q2.put(0, frame(1), &st));
        std::thread::sleep(POLL * 3);
        assert!(!putter.is_finished(), "the lane is full: the put waits");
        q.set_capacity(2);
        // Bounded: with room for two frames the put goes in without any take.
        assert!(putter.join().expect("putter"));
        assert_eq!(
            names(q.take(2, false)),
            [("files".into(), 0), ("files".into(), 1)]
        );
        assert_eq!(m.snapshot().dropped, 0);
    }
}
