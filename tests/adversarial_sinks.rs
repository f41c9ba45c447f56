//! Hostile sinks (issue #35): a command that ignores SIGTERM, a command that exits leaving a
//! background child, a webhook server that accepts and never answers, an MQTT broker that stalls
//! mid-handshake, a snapshot directory that turns into a file. Each runs a real `lookout run` (real processes and loopback sockets, no mocks), sends it
//! SIGTERM and checks that every pipeline thread finished before the stop deadline (the daemon
//! logs "did not finish before the deadline" otherwise), that nothing it started is left
//! running, and that what could not be delivered is counted or kept. Waits are bounded; nothing
//! asserts on speed.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::{log_of, metrics, sample, wait_metrics, wait_until, Daemon};

/// The daemon's stop deadline (`lookout::daemon::SHUTDOWN_DEADLINE`) plus time to exit.
const EXIT_LIMIT: Duration = Duration::from_secs(15);

/// Sends SIGTERM and waits (bounded) for the exit; returns its status and how long it took.
fn sigterm(d: &mut Daemon, dir: &Path) -> (ExitStatus, Duration) {
    let t = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let mut status = None;
    wait_until(EXIT_LIMIT, || {
        status = d.child.try_wait().expect("try_wait");
        status.is_some()
    });
    let took = t.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "lookout still running {EXIT_LIMIT:?} after SIGTERM\n--- log ---\n{}",
            log_of(dir)
        )
    });
    eprintln!("SIGTERM to exit: {:.2} s", took.as_secs_f64());
    (status, took)
}

/// Fails when the daemon left a pipeline thread behind at the stop deadline.
fn assert_all_threads_finished(log: &str) {
    assert!(
        !log.contains("did not finish before the deadline"),
        "a pipeline thread outlived the stop deadline:\n{log}"
    );
}

/// A `key=value` counter of the final "Stopped." summary line.
fn final_counter(log: &str, key: &str) -> u64 {
    let summary = log
        .lines()
        .find(|l| l.contains("Stopped."))
        .unwrap_or_else(|| panic!("final summary logged:\n{log}"));
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {summary}"))
}

/// Live (not zombie) processes whose process group is one of `pgids`, as "pid state cmdline".
fn live_in_groups(pgids: &[i32]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, pgrp) = (fields[0], fields[2].parse::<i32>().unwrap_or(-1));
        if pgids.contains(&pgrp) && state != "Z" {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid} {state} {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    found
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

#[test]
fn a_command_ignoring_sigterm_leaves_no_process_and_stop_meets_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    // Ignores TERM (the ignore is inherited by its child, a grandchild of lookout) and records
    // its pid, which is its process group's id when lookout starts it in a group of its own.
    let prog = script(
        dir.path(),
        "stubborn.sh",
        &format!(
            "trap '' TERM\necho $$ >> '{}'\nsleep 1000\nsleep 1000",
            pids.display()
        ),
    );
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            [source]
            type = "synthetic"
            fps = 20
            [[sinks]]
            type = "command"
            name = "stubborn"
            command = [{prog:?}]
            timeout_secs = 2.0
            "#
        ),
        "",
        &[],
    );
    wait_metrics(&d, dir.path(), "a timed-out run was counted", |m| {
        sample(m, "lookout_sink_failed_total{sink=\"stubborn\"}") >= 1.0
    });
    // One more run in progress when SIGTERM comes.
    let started = |n: usize| {
        std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .count()
            >= n
    };
    assert!(wait_until(Duration::from_secs(30), || started(2)));
    let (status, _took) = sigterm(&mut d, dir.path());
    let log = log_of(dir.path());
    assert!(status.success(), "clean exit: {status:?}\n{log}");
    assert_all_threads_finished(&log);
    assert!(log.contains("Sent SIGTERM"), "TERM logged:\n{log}");
    assert!(log.contains("Sent SIGKILL"), "KILL logged:\n{log}");
    let groups: Vec<i32> = std::fs::read_to_string(&pids)
        .expect("pids")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(groups.len() >= 2, "{groups:?}");
    // SIGKILLed members are reaped by init; give that a bounded moment.
    let mut left = Vec::new();
    wait_until(Duration::from_secs(5), || {
        left = live_in_groups(&groups);
        left.is_empty()
    });
    assert!(
        left.is_empty(),
        "processes started by lookout outlived it: {left:?}\n{log}"
    );
    assert!(final_counter(&log, "sink.stubborn.failed") >= 2, "{log}");
}

#[test]
fn background_children_a_command_leaves_behind_are_stopped_once_it_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    // Exits 0 at once, leaving a `sleep` in its process group (whose id is the script's pid).
    let prog = script(
        dir.path(),
        "leaves-a-child.sh",
        &format!(
            "echo $$ >> '{}'
sleep 300 &
exit 0",
            pids.display()
        ),
    );
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            [source]
            type = "synthetic"
            fps = 20
            [[sinks]]
            type = "command"
            name = "leaver"
            command = [{prog:?}]
            "#
        ),
        "",
        &[],
    );
    wait_metrics(&d, dir.path(), "three runs delivered", |m| {
        sample(m, "lookout_sink_sent_total{sink=\"leaver\"}") >= 3.0
    });
    let groups: Vec<i32> = std::fs::read_to_string(&pids)
        .expect("pids")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(groups.len() >= 3, "{groups:?}");
    // While lookout keeps running (not at its stop): each group is emptied once its program
    // has exited, so every group listed so far is gone within a bounded moment.
    let mut left = Vec::new();
    wait_until(Duration::from_secs(10), || {
        left = live_in_groups(&groups);
        left.is_empty()
    });
    if !left.is_empty() {
        // Clean up before failing: stop lookout starting more, then every group it started.
        let _ = d.child.kill();
        let _ = d.child.wait();
        let all = std::fs::read_to_string(&pids).unwrap_or_default();
        for g in all.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{g}")])
                .status();
        }
    }
    let log = log_of(dir.path());
    assert!(
        left.is_empty(),
        "background children outlived their program: {left:?}\n{log}"
    );
    assert!(
        log.contains("left processes running in its process group") && log.contains("Sent SIGTERM"),
        "the cleanup is logged:\n{log}"
    );
    let m = metrics(&d);
    assert_eq!(
        sample(&m, "lookout_sink_failed_total{sink=\"leaver\"}"),
        0.0,
        "a program that exits 0 is a delivery, its leftovers notwithstanding"
    );
    let (status, _took) = sigterm(&mut d, dir.path());
    assert!(
        status.success(),
        "clean exit: {status:?}\n{}",
        log_of(dir.path())
    );
}

/// A TCP server on loopback that accepts every connection and never writes a byte (holding the
/// sockets open) until dropped.
struct Silent {
    port: u16,
    _thread: std::thread::JoinHandle<()>,
}

fn silent_server() -> Silent {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in l.incoming().flatten() {
            // Read what the client sends (so it is not blocked on a full buffer), answer nothing.
            let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            held.push(s);
        }
    });
    Silent {
        port,
        _thread: thread,
    }
}

#[test]
fn a_webhook_that_never_answers_does_not_hold_up_the_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = silent_server();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            [source]
            type = "synthetic"
            fps = 20
            [[sinks]]
            type = "webhook"
            name = "mute"
            url = "http://127.0.0.1:{}/events"
            "#,
            server.port
        ),
        "",
        &[],
    );
    // The first attempt is under way (and the queue filling) once events are counted.
    wait_metrics(&d, dir.path(), "events dispatched", |m| {
        sample(m, "lookout_events_total") >= 20.0
    });
    let (status, _took) = sigterm(&mut d, dir.path());
    let log = log_of(dir.path());
    assert!(status.success(), "clean exit: {status:?}\n{log}");
    assert_all_threads_finished(&log);
    let (sent, failed, dropped, events) = (
        final_counter(&log, "sink.mute.sent"),
        final_counter(&log, "sink.mute.failed"),
        final_counter(&log, "sink.mute.dropped"),
        final_counter(&log, "events"),
    );
    assert_eq!(sent, 0, "{log}");
    assert!(failed >= 1, "undelivered events are counted: {log}");
    // Every event is accounted for: refused at the full queue, or failed.
    assert_eq!(failed + dropped, events, "{log}");
}

#[test]
fn an_mqtt_broker_stalled_mid_handshake_does_not_hold_up_the_stop_and_the_queue_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = dir.path().join("queue");
    let server = silent_server();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            [source]
            type = "synthetic"
            fps = 20
            [[sinks]]
            type = "mqtt"
            name = "stalled"
            host = "127.0.0.1"
            port = {}
            queue_dir = {:?}
            "#,
            server.port,
            queue.display().to_string()
        ),
        "",
        &[],
    );
    wait_metrics(&d, dir.path(), "events accepted by the MQTT sink", |m| {
        sample(m, "lookout_sink_sent_total{sink=\"stalled\"}") >= 10.0
    });
    let (status, _took) = sigterm(&mut d, dir.path());
    let log = log_of(dir.path());
    assert!(status.success(), "clean exit: {status:?}\n{log}");
    assert_all_threads_finished(&log);
    let accepted = final_counter(&log, "sink.stalled.sent");
    let kept = std::fs::read_dir(&queue)
        .expect("queue_dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "msg"))
        .count() as u64;
    assert!(accepted >= 10, "{log}");
    assert_eq!(
        kept, accepted,
        "every event the sink accepted stays in queue_dir for the next start\n{log}"
    );
}

#[test]
fn a_snapshot_directory_that_became_a_file_is_counted_without_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snaps = dir.path().join("snaps");
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            [source]
            type = "synthetic"
            fps = 20
            [[sinks]]
            type = "snapshot"
            name = "shots"
            dir = {:?}
            "#,
            snaps.display().to_string()
        ),
        "",
        &[],
    );
    wait_metrics(&d, dir.path(), "snapshots written", |m| {
        sample(m, "lookout_sink_sent_total{sink=\"shots\"}") >= 3.0
    });
    // Permissions do not stop root; a regular file in the directory's place stops everyone
    // (ENOTDIR), like a disk remounted read-only stops everyone (EROFS).
    // Moved away in one step (the sink keeps writing meanwhile, so removing it could race).
    std::fs::rename(&snaps, dir.path().join("moved")).expect("move snaps away");
    std::fs::write(&snaps, b"not a directory").expect("file in its place");
    let m = wait_metrics(&d, dir.path(), "failed writes counted", |m| {
        sample(m, "lookout_sink_failed_total{sink=\"shots\"}") >= 5.0
    });
    let classified = sample(&m, "lookout_frames_classified_total");
    wait_metrics(&d, dir.path(), "the pipeline goes on, healthy", |m| {
        sample(m, "lookout_frames_classified_total") > classified
            && sample(m, "lookout_healthy") == 1.0
    });
    let (status, _took) = sigterm(&mut d, dir.path());
    let log = log_of(dir.path());
    assert!(status.success(), "clean exit: {status:?}\n{log}");
    assert_all_threads_finished(&log);
    assert!(final_counter(&log, "sink.shots.failed") >= 5, "{log}");
}

#[test]
fn mqtt_events_accepted_before_sigterm_with_the_broker_down_are_delivered_once_after_restart() {
    use common::broker::{event_seqs, subscriber, wait_subscribed, Broker};
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = dir.path().join("queue");
    let port = common::free_port();
    let sink = |port: u16| {
        format!(
            r#"
            [pipeline]
            workers = 1   # events in capture order
            [[sinks]]
            type = "mqtt"
            host = "127.0.0.1"
            port = {port}
            qos = 1
            reconnect_max_secs = 0.5
            queue_dir = {:?}
            "#,
            queue.display().to_string()
        )
    };
    // First run: nothing listens on the broker's port; a live source until SIGTERM.
    let mut d = Daemon::start(
        dir.path(),
        &format!("[source]\ntype = \"synthetic\"\nfps = 20\n{}", sink(port)),
        "",
        &[],
    );
    wait_metrics(
        &d,
        dir.path(),
        "events accepted while the broker is down",
        |m| sample(m, "lookout_sink_sent_total{sink=\"mqtt\"}") >= 20.0,
    );
    let (status, _took) = sigterm(&mut d, dir.path());
    let log = log_of(dir.path());
    assert!(status.success(), "clean exit: {status:?}\n{log}");
    assert_all_threads_finished(&log);
    let accepted = final_counter(&log, "sink.mqtt.sent");
    // The queue on disk, in order: `<id>.msg`, the topic on the first line, the event after it.
    let mut files: Vec<_> = std::fs::read_dir(&queue)
        .expect("queue_dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "msg"))
        .collect();
    files.sort();
    let queued: Vec<u64> = files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("queue file");
            let (_topic, payload) = text.split_once('\n').expect("topic line");
            serde_json::from_str::<lookout::event::Event>(payload)
                .expect("event JSON")
                .frame_seq
        })
        .collect();
    assert_eq!(
        queued.len() as u64,
        accepted,
        "every accepted event is on disk\n{log}"
    );

    // Second run with the broker up: a finite source of 3 frames.
    let _broker = Broker::start(dir.path(), port);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (received, sub) = subscriber(port, std::sync::Arc::clone(&done));
    wait_subscribed(&received);
    let conf = dir.path().join("second.toml");
    std::fs::write(
        &conf,
        format!(
            "device_id = \"testdev\"\n[source]\ntype = \"synthetic\"\nfps = 0\ncount = 3\nseed = 5\n{}\n[log]\nsummary_secs = 0\n",
            sink(port)
        ),
    )
    .expect("second config");
    let out = common::lookout_command()
        .args(["run", "--config"])
        .arg(&conf)
        .output()
        .expect("lookout runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<u64> = queued.iter().copied().chain(0..3).collect();
    let arrived = wait_until(Duration::from_secs(30), || {
        event_seqs(&received).len() >= want.len()
    });
    // A moment more, so that a duplicate would be seen too.
    std::thread::sleep(Duration::from_millis(500));
    let got = event_seqs(&received);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sub.join();
    assert!(arrived, "all {} events delivered; got {got:?}", want.len());
    assert_eq!(
        got,
        want,
        "each accepted event delivered exactly once, in order (lost: {})",
        want.len().saturating_sub(got.len())
    );
    let left = std::fs::read_dir(&queue).expect("queue_dir").count();
    assert_eq!(left, 0, "the disk queue is empty after delivery");
    eprintln!(
        "MQTT restart: accepted={} delivered={} lost=0 duplicates=0",
        want.len(),
        got.len()
    );
}
