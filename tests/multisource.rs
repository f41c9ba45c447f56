//! Several sources in one daemon: a real ffmpeg `pipe` source that exits every second and is
//! reopened, a `files` source and a `synthetic` one at once, sharing one worker pool and writing
//! one JSONL sink. Every wait is bounded in time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use lookout::config::{Config, Origin};
use lookout::daemon;
use lookout::event::Event;
use lookout::health::Watch;
use lookout::metrics::{Snapshot, SourceSnapshot};
use lookout::stop::StopToken;

fn config(text: &str) -> Config {
    Config::parse(text, Origin::File("test.toml".into())).expect("valid test config")
}

fn jsonl(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .expect("JSONL file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is an event"))
        .collect()
}

fn source<'a>(snap: &'a Snapshot, name: &str) -> &'a SourceSnapshot {
    snap.sources
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no source {name:?} in {:?}", snap.sources))
}

/// A folder of three small PNGs of different colours.
fn images(dir: &Path) -> String {
    let images = dir.join("images");
    std::fs::create_dir(&images).expect("mkdir");
    for (name, level) in [("a.png", 40u8), ("b.png", 120), ("c.png", 200)] {
        image::RgbImage::from_pixel(96, 72, image::Rgb([level, level / 2, 90]))
            .save(images.join(name))
            .expect("write png");
    }
    images.display().to_string()
}

#[test]
fn three_sources_share_the_workers_while_one_program_keeps_exiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    // `cam`: ffmpeg paced at 10 fps for one second, then it exits; the capture thread reopens
    // it after 0.5-1 s of back-off, again and again. `folder` and `synth` run all along.
    let cfg = config(&format!(
        r#"
        [[sources]]
        name = "cam"
        type = "pipe"
        command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
                   "-i", "testsrc=size=320x240:rate=10", "-t", "1", "-f", "mjpeg", "-q:v", "5", "-"]
        [[sources]]
        name = "folder"
        type = "files"
        path = {images:?}
        loop = true
        fps = 8
        [[sources]]
        name = "synth"
        type = "synthetic"
        fps = 10
        [pipeline]
        workers = 2
        reconnect_min_secs = 0.5
        reconnect_max_secs = 1.0
        [[sinks]]
        type = "jsonl"
        path = {events:?}
        [log]
        summary_secs = 0
        "#,
        images = images(dir.path()),
        events = events.display().to_string(),
    ));
    let running = daemon::start(&cfg, Vec::new(), StopToken::new()).expect("starts");
    assert_eq!(running.source_names, ["cam", "folder", "synth"]);
    let metrics = std::sync::Arc::clone(running.metrics());
    let mut watch = Watch::new(Duration::from_secs(60), Duration::from_secs(60));
    // While `cam` is down: how far `synth` and `folder` got, and what health said.
    let mut while_down: Option<(u64, u64)> = None;
    let mut others_during_outage = (0u64, 0u64);
    let mut degraded_seen = None;
    let until = Instant::now() + Duration::from_secs(60);
    let done = |s: &Snapshot, others: (u64, u64)| {
        source(s, "cam").reconnects >= 2
            && s.sources.iter().all(|x| x.inferred >= 10)
            && others.0 >= 3
            && others.1 >= 2
    };
    loop {
        let s = metrics.snapshot();
        if done(&s, others_during_outage) || Instant::now() >= until {
            break;
        }
        let (synth, folder) = (source(&s, "synth").captured, source(&s, "folder").captured);
        if !source(&s, "cam").up {
            let (s0, f0) = *while_down.get_or_insert((synth, folder));
            others_during_outage.0 = others_during_outage.0.max(synth - s0);
            others_during_outage.1 = others_during_outage.1.max(folder - f0);
            let report = watch.report(&metrics);
            if report.degraded {
                degraded_seen = Some(report);
            }
        } else {
            while_down = None;
            watch.report(&metrics);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    running.stop();
    let snap = running.wait(Duration::from_secs(20));
    eprintln!("three sources: {:?}", snap.sources);

    let cam = source(&snap, "cam");
    assert!(cam.reconnects >= 2, "ffmpeg reopened: {cam:?}");
    assert!(
        others_during_outage.0 >= 3 && others_during_outage.1 >= 2,
        "synth and folder kept capturing while cam was down: {others_during_outage:?}"
    );
    for name in ["folder", "synth"] {
        assert_eq!(source(&snap, name).source_errors, 0, "{name}");
    }
    let report = degraded_seen.expect("health said degraded while cam was down");
    assert!(
        report.ok,
        "other sources keep the daemon healthy: {report:?}"
    );
    assert_eq!(report.down, ["cam"]);
    assert!(
        report.reason.as_deref().is_some_and(|r| r.contains("cam")),
        "{report:?}"
    );

    // Events from every source, each numbered within its source.
    let events = jsonl(&events);
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &events {
        seqs.entry(e.source.clone()).or_default().push(e.frame_seq);
    }
    let names: Vec<&str> = seqs.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["cam", "folder", "synth"],
        "events from every source"
    );
    for (name, list) in &seqs {
        let captured = source(&snap, name).captured;
        let unique: BTreeSet<u64> = list.iter().copied().collect();
        assert_eq!(unique.len(), list.len(), "{name}: one event per frame");
        assert!(
            list.iter().all(|&s| s < captured),
            "{name}: numbered within the source (captured {captured}): {list:?}"
        );
        assert!(list.len() >= 10, "{name}: {} events", list.len());
    }
    let files: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.source == "folder")
        .filter_map(|e| e.file.as_deref())
        .collect();
    assert_eq!(files.len(), 3, "every file of the folder: {files:?}");
}

#[test]
fn the_single_source_table_keeps_its_old_name_in_events() {
    let cfg =
        config("[source]\ntype = \"synthetic\"\nfps = 0\ncount = 5\n[log]\nsummary_secs = 0\n");
    let memory = lookout::sink::memory::MemorySink::new();
    let sinks: Vec<(String, Box<dyn lookout::sink::Sink>)> =
        vec![("memory".into(), Box::new(memory.clone()))];
    let running = daemon::start(&cfg, sinks, StopToken::new()).expect("starts");
    let snap = running.wait(Duration::from_secs(60));
    assert_eq!(snap.sources.len(), 1);
    assert_eq!(snap.sources[0].name, "synthetic");
    assert_eq!(snap.sources[0].captured, 5);
    let events = memory.events();
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| e.source == "synthetic"));
}

#[test]
fn a_fast_source_does_not_starve_a_slow_one() {
    // One worker, both sources unpaced (every frame of each waits for it): the worker
    // alternates, so each gets half of the classifications, whatever their own rates would be.
    let cfg = config(
        "[[sources]]\nname = \"a\"\ntype = \"synthetic\"\nfps = 0\ncount = 40\n\
         [[sources]]\nname = \"b\"\ntype = \"synthetic\"\nfps = 0\ncount = 40\nseed = 7\n\
         [pipeline]\nworkers = 1\n[log]\nsummary_secs = 0\n",
    );
    let memory = lookout::sink::memory::MemorySink::new();
    let sinks: Vec<(String, Box<dyn lookout::sink::Sink>)> =
        vec![("memory".into(), Box::new(memory.clone()))];
    let running = daemon::start(&cfg, sinks, StopToken::new()).expect("starts");
    let snap = running.wait(Duration::from_secs(60));
    assert_eq!((snap.inferred, snap.dropped), (80, 0));
    let order: Vec<String> = memory.events().into_iter().map(|e| e.source).collect();
    // Within the first 40 events (both sources still have frames waiting) the round robin
    // gives each about half.
    let first: Vec<&String> = order.iter().take(40).collect();
    let a = first.iter().filter(|s| s.as_str() == "a").count();
    assert!(
        (18..=22).contains(&a),
        "a got {a} of the first 40: {order:?}"
    );
}
