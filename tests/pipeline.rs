//! The whole pipeline through the public API: sources -> model -> rules -> sinks, overload,
//! shutdown, and bad input. Uses the bundled model and the synthetic/files sources; the daemon
//! binary for the signal test.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use lookout::config::{Config, Origin};
use lookout::daemon::{self, DaemonError};
use lookout::event::Event;
use lookout::sink::memory::MemorySink;
use lookout::sink::Sink;
use lookout::stop::StopToken;

fn config(text: &str) -> Config {
    Config::parse(text, Origin::File("test.toml".into())).expect("valid test config")
}

/// Runs `cfg` until its source ends; returns the final counters and the recorded events.
fn run_to_end(cfg: &Config) -> (lookout::metrics::Snapshot, Vec<Event>) {
    let memory = MemorySink::new();
    let sinks: Vec<(String, Box<dyn Sink>)> = vec![("memory".into(), Box::new(memory.clone()))];
    let running = daemon::start(cfg, sinks, StopToken::new()).expect("starts");
    let snapshot = running.wait(Duration::from_secs(60));
    (snapshot, memory.events())
}

fn jsonl(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .expect("JSONL file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is an event"))
        .collect()
}

#[test]
fn bundled_model_is_accurate_on_synthetic_frames_through_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let cfg = config(&format!(
        r#"
        device_id = "test-line"
        [source]
        type = "synthetic"
        fps = 0
        count = 400
        seed = 4242
        format = "mjpeg"
        [pipeline]
        workers = 2
        [[sinks]]
        type = "jsonl"
        path = "{}"
        [log]
        summary_secs = 0
        "#,
        events.display()
    ));
    let (snap, recorded) = run_to_end(&cfg);
    assert_eq!(snap.captured, 400);
    assert_eq!(
        snap.dropped, 0,
        "a source with fps = 0 is never dropped from"
    );
    assert_eq!(snap.inferred, 400);
    assert_eq!(snap.failed, 0);
    let accuracy = snap
        .accuracy
        .expect("synthetic frames carry their true label");
    eprintln!(
        "bundled model accuracy on 400 synthetic MJPEG frames through the daemon: {accuracy:.4}"
    );
    assert!(accuracy >= 0.95, "accuracy {accuracy} < 0.95");
    // Without rules every classification is an event, in both sinks.
    assert_eq!(recorded.len(), 400);
    let written = jsonl(&events);
    assert_eq!(written.len(), 400);
    let correct = written
        .iter()
        .filter(|e| Some(&e.label) == e.truth.as_ref())
        .count();
    assert_eq!(
        correct as f64 / 400.0,
        accuracy,
        "the events agree with the counters"
    );
    let e = &written[0];
    assert_eq!(e.device, "test-line");
    assert_eq!(e.source, "synthetic");
    assert!(e.rule.is_none());
    assert_eq!(e.top.len(), 3);
    assert!(
        e.captured_at.ends_with('Z') && e.captured_at.len() == 24,
        "{}",
        e.captured_at
    );
    assert!(e.latency_ms >= 0.0);
}

#[test]
fn rules_turn_defect_frames_into_events_for_their_sinks_only() {
    let cfg = config(
        r#"
        [source]
        type = "synthetic"
        fps = 0
        count = 120
        seed = 7
        classes = ["ok", "scratch"]
        [pipeline]
        workers = 1
        [[rules]]
        name = "scratch"
        labels = ["scratch"]
        min_score = 0.5
        [[rules]]
        name = "never"
        labels = ["missing"]
        min_score = 0.99
        sinks = ["log"]
        [[sinks]]
        type = "log"
        level = "debug"
        [log]
        summary_secs = 0
        "#,
    );
    let (snap, events) = run_to_end(&cfg);
    assert_eq!(snap.inferred, 120);
    // One worker, so frames arrive in order and N-of-M = 1-of-1 fires once per scratch frame.
    assert!(!events.is_empty());
    assert!(events
        .iter()
        .all(|e| e.rule.as_deref() == Some("scratch") && e.label == "scratch"));
    let scratches = events
        .iter()
        .filter(|e| e.truth.as_deref() == Some("scratch"))
        .count();
    assert!(
        scratches as f64 >= 0.9 * events.len() as f64,
        "events are mostly true scratches"
    );
    let sinks = &snap.sinks;
    assert_eq!(sinks[1].name, "memory");
    assert_eq!(sinks[1].sent, events.len() as u64);
}

#[test]
fn overload_drops_oldest_frames_and_keeps_work_fresh() {
    // A live source far faster than one worker running MobileNetV2 (tens of ms per frame),
    // with a 2-frame queue.
    let Some(assets) = common::assets() else {
        return;
    };
    let cfg = config(&format!(
        r#"
        [source]
        type = "synthetic"
        fps = 1000
        count = 300
        [model]
        path = "{}"
        [pipeline]
        workers = 1
        frame_queue = 2
        [log]
        summary_secs = 0
        "#,
        assets.join("models/bench/mobilenetv2-fp32.onnx").display()
    ));
    let (snap, events) = run_to_end(&cfg);
    eprintln!(
        "overload: captured={} dropped={} inferred={} max_staleness={}",
        snap.captured, snap.dropped, snap.inferred, snap.max_staleness
    );
    assert_eq!(snap.captured, 300);
    assert!(
        snap.dropped > 0,
        "a source faster than the workers must drop"
    );
    assert_eq!(
        snap.captured,
        snap.dropped + snap.inferred + snap.failed,
        "every frame is dropped or processed"
    );
    // Staleness is bounded in frames: the queue (2) plus the frame arriving meanwhile.
    assert!(
        snap.max_staleness <= 3,
        "worked on a frame {} frames old",
        snap.max_staleness
    );
    assert_eq!(events.len() as u64, snap.inferred);
    // Frames are processed in capture order with gaps where frames were dropped.
    assert!(events.windows(2).all(|w| w[0].frame_seq < w[1].frame_seq));
}

#[test]
fn files_source_counts_and_skips_non_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = dir.path().join("images/scratch");
    std::fs::create_dir_all(&images).expect("mkdir");
    // Two real frames (rendered scenes) and two that are not images.
    let status = common::lookout_command()
        .args(["synth", "--count", "2", "--seed", "3", "--out"])
        .arg(&images)
        .status()
        .expect("synth runs");
    assert!(status.success());
    std::fs::write(images.join("notes.txt"), b"operator notes, not an image").expect("write");
    std::fs::write(images.join("broken.jpg"), [0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]).expect("write");
    let cfg = config(&format!(
        r#"
        [source]
        type = "files"
        path = "{}"
        labels_from_dirs = true
        [log]
        summary_secs = 0
        "#,
        dir.path().join("images").display()
    ));
    let (snap, events) = run_to_end(&cfg);
    // labels.csv, notes.txt and broken.jpg fail to decode; the two PNGs are classified.
    assert_eq!(snap.captured, 5);
    assert_eq!(snap.failed, 3);
    assert_eq!(snap.inferred, 2);
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.file.as_deref().is_some_and(|f| f.ends_with(".png"))));
    assert!(events.iter().all(|e| e.truth.as_deref() == Some("scratch")));
}

#[test]
fn startup_errors_are_clear_and_never_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(
        &truncated,
        &lookout::model::BUILTIN_MODEL[..lookout::model::BUILTIN_MODEL.len() / 3],
    )
    .expect("write");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let five_labels = dir.path().join("five.txt");
    std::fs::write(&five_labels, "a\nb\nc\nd\ne\n").expect("write");
    let cases = [
        (format!("[model]\npath = \"{}/missing.onnx\"", dir.path().display()), vec!["cannot read model file", "missing.onnx"]),
        (format!("[model]\npath = \"{}\"", truncated.display()), vec!["truncated.onnx", "not a valid ONNX file"]),
        (format!("[model]\npath = \"{}/two_inputs.onnx\"", fixtures.display()), vec!["2 inputs", "\"a\", \"b\"", "exactly one input"]),
        (format!("[model]\npath = \"{}/open_hw_nhwc.onnx\"", fixtures.display()), vec!["input_shape", "left open", "[1, 224, 224, 3]"]),
        (
            format!(
                "[model]\npath = \"{}/open_hw_nhwc.onnx\"\ninput_shape = [1, 8, 8, 3]\nlabels = \"{}\"",
                fixtures.display(),
                five_labels.display()
            ),
            vec!["has 5 labels", "outputs 3 classes"],
        ),
        (
            format!("[source]\ntype = \"files\"\npath = \"{}/no/such/dir\"", dir.path().display()),
            vec!["cannot open source", "no/such/dir"],
        ),
        ("[source]\ntype = \"files\"\npath = \"/etc/hostname/images\"".to_owned(), vec!["cannot open", "/etc/hostname/images"]),
        (format!("[[sinks]]\ntype = \"jsonl\"\npath = \"{}/no/dir/e.jsonl\"", dir.path().display()), vec!["jsonl", "no/dir/e.jsonl"]),
    ];
    for (text, fragments) in cases {
        let cfg = config(&text);
        let err = match daemon::start(&cfg, Vec::new(), StopToken::new()) {
            Ok(_) => panic!("config should fail to start:\n{text}"),
            Err(e) => e,
        };
        let msg = lookout::retry::chain(&err);
        for f in &fragments {
            assert!(
                msg.contains(f),
                "error for\n{text}\nshould contain {f:?}, got: {msg}"
            );
        }
        if matches!(err, DaemonError::Model(_)) {
            assert_eq!(err.exit_code(), 2);
        }
    }
}

#[test]
fn open_dimensions_are_set_by_input_shape_and_metadata_labels_are_read() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().expect("tempdir");
    // A pure red 40x20 image: the per-channel mean model scores red highest.
    let img = image::RgbImage::from_pixel(40, 20, image::Rgb([255, 0, 0]));
    img.save(dir.path().join("red.png")).expect("png");
    let cfg = config(&format!(
        r#"
        [source]
        type = "files"
        path = "{}"
        [model]
        path = "{}/open_hw_nhwc.onnx"
        output = "probabilities"
        input_shape = [1, 16, 32, 3]
        [log]
        summary_secs = 0
        "#,
        dir.path().display(),
        fixtures.display()
    ));
    let (snap, events) = run_to_end(&cfg);
    assert_eq!(snap.inferred, 1);
    let e = &events[0];
    assert_eq!(
        e.label, "red",
        "labels come from the Ultralytics-style `names` metadata"
    );
    assert!(
        (e.score - 1.0).abs() < 1e-6,
        "mean of the red channel is 1.0, got {}",
        e.score
    );
    assert_eq!(e.top[1].score, 0.0);
}

#[test]
fn sigterm_exits_zero_with_every_event_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let config_path = dir.path().join("lookout.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
            [source]
            type = "synthetic"
            fps = 50
            [[sinks]]
            type = "jsonl"
            path = "{}"
            [log]
            summary_secs = 0.5
            "#,
            events.display()
        ),
    )
    .expect("write config");
    let mut child = common::lookout_command()
        .args(["run", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut lines = stderr.lines();
    // Wait until it has produced events (a summary with events > 0), then SIGTERM it.
    for line in lines.by_ref() {
        let line = line.expect("log line");
        if line.contains("Pipeline summary") && !line.contains(" events=0 ") {
            break;
        }
    }
    let pid = child.id() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    let rest: Vec<String> = lines.map(|l| l.expect("log line")).collect();
    let status = child.wait().expect("exits");
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM is a clean exit; log:\n{}",
        rest.join("\n")
    );
    let stopped = rest
        .iter()
        .find(|l| l.contains("Stopped."))
        .expect("final summary line");
    let field = |name: &str| -> u64 {
        let start = stopped.find(&format!(" {name}=")).expect("field") + name.len() + 2;
        stopped[start..]
            .split(' ')
            .next()
            .expect("value")
            .parse()
            .expect("number")
    };
    let written = jsonl(&events);
    assert!(field("events") > 0);
    assert_eq!(
        written.len() as u64,
        field("events"),
        "every event that reached the dispatcher is in the file"
    );
    assert_eq!(field("sink.jsonl.dropped"), 0);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
