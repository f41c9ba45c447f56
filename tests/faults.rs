//! Faults a daemon meets in the field, each injected into a running `lookout run` and watched
//! through `/metrics`: the pipeline keeps running, the fault is counted, and nothing accepted is
//! lost. Every wait is bounded; nothing asserts on speed.

mod common;

use common::{sample, wait_metrics, Daemon};

#[test]
fn an_intermittent_source_is_reopened_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A camera program that delivers five 8x8 frames, then dies; and again after each restart.
    let d = Daemon::start(
        dir.path(),
        r#"
        [source]
        type = "pipe"
        format = "gray"
        width = 8
        height = 8
        command = ["sh", "-c", "head -c 320 /dev/zero; exit 3"]
        [pipeline]
        reconnect_min_secs = 0.05
        reconnect_max_secs = 0.2
        "#,
        "",
        &[],
    );
    wait_metrics(
        &d,
        dir.path(),
        "errors and reconnects counted, frames still classified",
        |m| {
            sample(m, "lookout_source_errors_total") >= 3.0
                && sample(m, "lookout_source_reconnects_total") >= 3.0
                && sample(m, "lookout_frames_classified_total") >= 15.0
        },
    );
}

#[test]
fn frames_that_cannot_be_classified_are_counted_and_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = dir.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    for (name, level) in [("a.png", 40u8), ("c.png", 200)] {
        image::RgbImage::from_pixel(64, 48, image::Rgb([level, level / 2, 90]))
            .save(images.join(name))
            .expect("write png");
    }
    // A JPEG cut short, as a flaky network share or SD card delivers it.
    std::fs::write(
        images.join("b.jpg"),
        [0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F'],
    )
    .expect("write");
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[source]\ntype = \"files\"\npath = {:?}\nloop = true\nfps = 30\n",
            images.display().to_string()
        ),
        "",
        &[],
    );
    let m = wait_metrics(
        &d,
        dir.path(),
        "bad frames counted, good ones classified",
        |m| {
            sample(m, "lookout_frames_failed_total") >= 3.0
                && sample(m, "lookout_frames_classified_total") >= 6.0
        },
    );
    // Two good files per bad one.
    let (good, bad) = (
        sample(&m, "lookout_frames_classified_total"),
        sample(&m, "lookout_frames_failed_total"),
    );
    assert!(good >= bad, "{good} classified, {bad} failed");
}

#[test]
fn a_hanging_sink_and_a_full_disk_do_not_stop_the_pipeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            [source]
            type = "synthetic"
            fps = 20
            [pipeline]
            sink_queue = 8
            [[sinks]]
            type = "command"
            name = "hangs"
            command = ["sleep", "1000"]
            timeout_secs = 0.3
            [[sinks]]
            type = "jsonl"
            name = "fulldisk"
            path = "/dev/full"
            [[sinks]]
            type = "jsonl"
            name = "good"
            path = {:?}
            "#,
            events.display().to_string()
        ),
        "",
        &[],
    );
    let m = wait_metrics(
        &d,
        dir.path(),
        "healthy sink keeps delivering beside broken ones",
        |m| {
            sample(m, "lookout_sink_sent_total{sink=\"good\"}") >= 60.0
                && sample(m, "lookout_sink_failed_total{sink=\"hangs\"}") >= 2.0
                && sample(m, "lookout_sink_dropped_total{sink=\"hangs\"}") >= 1.0
                && sample(m, "lookout_sink_failed_total{sink=\"fulldisk\"}") >= 1.0
        },
    );
    assert_eq!(sample(&m, "lookout_sink_dropped_total{sink=\"good\"}"), 0.0);
    assert_eq!(sample(&m, "lookout_healthy"), 1.0);
}

#[test]
fn sigterm_under_full_load_loses_nothing_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            [source]
            type = "synthetic"
            fps = 0
            [pipeline]
            workers = 2
            [[sinks]]
            type = "jsonl"
            path = {:?}
            "#,
            events.display().to_string()
        ),
        "",
        &[],
    );
    wait_metrics(&d, dir.path(), "running at full load", |m| {
        sample(m, "lookout_events_total") >= 200.0
    });
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status();
    let status = d.child.wait().expect("exits");
    let log = std::fs::read_to_string(dir.path().join("lookout.log")).expect("log");
    assert!(status.success(), "clean exit: {status:?}\n{log}");
    let summary = log
        .lines()
        .find(|l| l.contains("Stopped."))
        .unwrap_or_else(|| panic!("final summary logged:\n{log}"));
    let counter = |key: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {summary}"))
    };
    let (produced, sent, dropped) = (
        counter("events"),
        counter("sink.jsonl.sent"),
        counter("sink.jsonl.dropped"),
    );
    let lines = std::fs::read_to_string(&events)
        .expect("events file")
        .lines()
        .count() as u64;
    assert_eq!(lines, sent, "every delivered event is on disk: {summary}");
    assert_eq!(
        sent + dropped,
        produced,
        "every event delivered or counted as refused: {summary}"
    );
    assert_eq!(counter("sink.jsonl.failed"), 0, "{summary}");
}
