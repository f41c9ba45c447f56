//! The team with real helper threads: every part runs exactly once, with or without a helper;
//! invitations are queued at most once; a helper may leave mid-frame; nested splits and
//! `beside` behave, also when the main work panics.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use super::*;

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
