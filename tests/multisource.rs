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
fn two_backlogged_sources_share_one_worker_equally() {
    // One worker, two looping folders read as fast as the worker takes frames (reading a small
    // file is far quicker than decoding and classifying it, so both lanes stay full): the
    // worker alternates between them.
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a_dir).expect("mkdir");
    std::fs::create_dir(&b_dir).expect("mkdir");
    let (a_images, b_images) = (images(&a_dir), images(&b_dir));
    let cfg = config(&format!(
        "[[sources]]\nname = \"a\"\ntype = \"files\"\npath = {a_images:?}\nloop = true\n\
         [[sources]]\nname = \"b\"\ntype = \"files\"\npath = {b_images:?}\nloop = true\n\
         [pipeline]\nworkers = 1\nframe_queue = 4\n[log]\nsummary_secs = 0\n",
    ));
    let memory = lookout::sink::memory::MemorySink::new();
    let sinks: Vec<(String, Box<dyn lookout::sink::Sink>)> =
        vec![("memory".into(), Box::new(memory.clone()))];
    let running = daemon::start(&cfg, sinks, StopToken::new()).expect("starts");
    let until = Instant::now() + Duration::from_secs(60);
    while memory.events().len() < 80 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    running.stop();
    let snap = running.wait(Duration::from_secs(20));
    assert_eq!(snap.dropped, 0, "files with fps = 0 wait for the worker");
    let order: Vec<String> = memory.events().into_iter().map(|e| e.source).collect();
    assert!(order.len() >= 80, "{} events in 60 s", order.len());
    // Past the start (a lane may still be filling): each gets half.
    let a = order[10..80].iter().filter(|s| s.as_str() == "a").count();
    assert!((32..=38).contains(&a), "a got {a} of 70: {order:?}");
}

#[test]
fn regions_and_grid_tiles_each_give_their_own_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let cfg = config(&format!(
        r#"
        [[sources]]
        name = "lanes"
        type = "synthetic"
        fps = 0
        count = 4
        [[sources.regions]]
        name = "left"
        rect = [0, 0, 0.5, 1]
        [[sources.regions]]
        name = "right"
        rect = [0.5, 0, 0.5, 1]
        [[sources]]
        name = "field"
        type = "synthetic"
        width = 480
        height = 240
        fps = 0
        count = 3
        seed = 9
        format = "mjpeg"
        grid = [3, 2]
        overlap = 0.1
        [[sources]]
        name = "whole"
        type = "synthetic"
        fps = 0
        count = 2
        [pipeline]
        workers = 2
        [[sinks]]
        type = "jsonl"
        path = {:?}
        [log]
        summary_secs = 0
        "#,
        events.display().to_string()
    ));
    let running = daemon::start(&cfg, Vec::new(), StopToken::new()).expect("starts");
    let snap = running.wait(Duration::from_secs(60));
    assert_eq!((snap.inferred, snap.failed), (9, 0), "frames, not regions");
    let text = std::fs::read_to_string(&events).expect("JSONL file");
    let mut got: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("event JSON");
        let source = v["source"].as_str().expect("source").to_owned();
        let seq = v["frame_seq"].as_u64().expect("frame_seq");
        let region = match v.get("region") {
            Some(r) => r.as_str().expect("region is a string").to_owned(),
            None => "(whole)".to_owned(),
        };
        got.entry((source, seq)).or_default().push(region);
    }
    let mut want: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    let tiles = ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2"];
    for seq in 0..4 {
        want.insert(("lanes".into(), seq), vec!["left".into(), "right".into()]);
    }
    for seq in 0..3 {
        want.insert(
            ("field".into(), seq),
            tiles.iter().map(|t| t.to_string()).collect(),
        );
    }
    for seq in 0..2 {
        want.insert(("whole".into(), seq), vec!["(whole)".into()]);
    }
    for list in got.values_mut() {
        list.sort();
    }
    assert_eq!(
        got, want,
        "one event per region of each frame; none without regions"
    );
}

#[test]
fn a_region_outside_the_frame_is_refused_with_its_key_path() {
    let text = "[[sources]]\nname = \"cam\"\ntype = \"synthetic\"\n\
                [[sources.regions]]\nname = \"ok\"\nrect = [0, 0, 0.5, 0.5]\n\
                [[sources.regions]]\nname = \"past-edge\"\nrect = [0.6, 0.2, 0.5, 0.5]\n";
    let err = Config::parse(text, Origin::File("test.toml".into()))
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("test.toml")
            && err.contains("sources[0].regions[1].rect")
            && err.contains("reaches outside the frame"),
        "{err}"
    );
}

#[test]
fn a_rule_scoped_to_one_region_fires_only_for_it() {
    let cfg = config(
        r#"
        [[sources]]
        name = "lanes"
        type = "synthetic"
        fps = 0
        count = 6
        [[sources.regions]]
        name = "left"
        rect = [0, 0, 0.5, 1]
        [[sources.regions]]
        name = "right"
        rect = [0.5, 0, 0.5, 1]
        [[sources]]
        name = "other"
        type = "synthetic"
        fps = 0
        count = 6
        [[sources.regions]]
        name = "left"
        rect = [0, 0, 0.5, 1]
        [[rules]]
        name = "left-lane"
        labels = ["ok", "scratch", "dent", "missing"]
        min_score = 0.0
        sources = ["lanes"]
        regions = ["left"]
        [[rules]]
        name = "anything"
        labels = ["ok", "scratch", "dent", "missing"]
        min_score = 0.0
        [log]
        summary_secs = 0
        "#,
    );
    let memory = lookout::sink::memory::MemorySink::new();
    let sinks: Vec<(String, Box<dyn lookout::sink::Sink>)> =
        vec![("memory".into(), Box::new(memory.clone()))];
    let running = daemon::start(&cfg, sinks, StopToken::new()).expect("starts");
    let snap = running.wait(Duration::from_secs(60));
    assert_eq!(snap.inferred, 12);
    let events = memory.events();
    let scoped: Vec<(&str, Option<&str>)> = events
        .iter()
        .filter(|e| e.rule.as_deref() == Some("left-lane"))
        .map(|e| (e.source.as_str(), e.region.as_deref()))
        .collect();
    assert_eq!(
        scoped,
        vec![("lanes", Some("left")); 6],
        "only lanes/left, every frame"
    );
    // The unscoped rule fires for every source and region: 6 frames x (2 + 1) regions.
    let all = events
        .iter()
        .filter(|e| e.rule.as_deref() == Some("anything"))
        .count();
    assert_eq!(all, 18);
}

#[test]
fn snapshot_names_say_which_source_and_region_they_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shots = dir.path().join("shots");
    let cfg = config(&format!(
        r#"
        [[sources]]
        name = "lanes"
        type = "synthetic"
        fps = 0
        count = 2
        format = "mjpeg"
        [[sources.regions]]
        name = "left"
        rect = [0, 0, 0.5, 1]
        [[sources]]
        name = "cam-2"
        type = "synthetic"
        fps = 0
        count = 2
        [[sinks]]
        type = "snapshot"
        dir = {:?}
        [log]
        summary_secs = 0
        "#,
        shots.display().to_string()
    ));
    let memory = lookout::sink::memory::MemorySink::new();
    let sinks: Vec<(String, Box<dyn lookout::sink::Sink>)> =
        vec![("memory".into(), Box::new(memory.clone()))];
    let running = daemon::start(&cfg, sinks, StopToken::new()).expect("starts");
    running.wait(Duration::from_secs(60));
    let mut names: Vec<String> = std::fs::read_dir(&shots)
        .expect("snapshot dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    let lanes = names.iter().filter(|n| n.contains("_lanes.left_")).count();
    let cam = names.iter().filter(|n| n.contains("_cam-2_")).count();
    assert_eq!((lanes, cam), (2, 2), "{names:?}");
    for e in memory.events() {
        let name = e.snapshot.expect("each event names its snapshot");
        assert!(names.contains(&name), "{name} in {names:?}");
    }
}

#[test]
fn a_source_that_does_not_open_at_startup_is_reopened_while_the_others_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    // `late` reads a folder that does not exist yet (a share not mounted, a camera not up).
    let late = dir.path().join("images");
    let cfg = config(&format!(
        r#"
        [[sources]]
        name = "synth"
        type = "synthetic"
        fps = 10
        [[sources]]
        name = "late"
        type = "files"
        path = {late:?}
        loop = true
        fps = 8
        [pipeline]
        workers = 1
        reconnect_min_secs = 0.2
        reconnect_max_secs = 0.5
        [[sinks]]
        type = "jsonl"
        path = {events:?}
        [log]
        summary_secs = 0
        "#,
        late = late.display().to_string(),
        events = events.display().to_string(),
    ));
    let running = daemon::start(&cfg, Vec::new(), StopToken::new())
        .expect("starts with one of its two sources");
    assert_eq!(running.source_names, ["synth", "late"]);
    let metrics = std::sync::Arc::clone(running.metrics());
    let mut watch = Watch::new(Duration::from_secs(60), Duration::from_secs(60));
    // Until synth's frames are classified: late is down, the daemon degraded but healthy.
    let mut report = watch.report(&metrics);
    let until = Instant::now() + Duration::from_secs(60);
    while !(report.ok && report.degraded) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        report = watch.report(&metrics);
    }
    assert!(report.ok && report.degraded, "{report:?}");
    assert_eq!(report.down, ["late"]);
    let s = metrics.snapshot();
    assert!(!source(&s, "late").up && source(&s, "late").source_errors >= 1);
    assert_eq!(source(&s, "late").captured, 0);

    // The folder appears: the capture thread's next attempt opens it.
    images(dir.path());
    let until = Instant::now() + Duration::from_secs(60);
    while source(&metrics.snapshot(), "late").inferred < 3 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    running.stop();
    let snap = running.wait(Duration::from_secs(20));
    let late = source(&snap, "late");
    assert!(late.reconnects >= 1 && late.inferred >= 3, "{late:?}");
    assert_eq!(source(&snap, "synth").source_errors, 0);
    let from: BTreeSet<String> = jsonl(&events).into_iter().map(|e| e.source).collect();
    assert_eq!(
        from,
        BTreeSet::from(["late".to_string(), "synth".to_string()])
    );

    // Alone, a source that does not open is a startup error naming it.
    let alone = config(&format!(
        "[[sources]]\nname = \"late\"\ntype = \"files\"\npath = {:?}\n[log]\nsummary_secs = 0\n",
        dir.path().join("missing").display().to_string()
    ));
    let err = match daemon::start(&alone, Vec::new(), StopToken::new()) {
        Ok(_) => panic!("a lone source that does not open must stop the start"),
        Err(e) => lookout::retry::chain(&e),
    };
    assert!(err.contains("late") && err.contains("missing"), "{err}");
    // Several sources none of which opens: a startup error too, naming the first.
    let none = config(&format!(
        "[[sources]]\nname = \"first\"\ntype = \"files\"\npath = {missing:?}\n\
         [[sources]]\nname = \"second\"\ntype = \"files\"\npath = {missing:?}\n[log]\nsummary_secs = 0\n",
        missing = dir.path().join("missing").display().to_string()
    ));
    let err = match daemon::start(&none, Vec::new(), StopToken::new()) {
        Ok(_) => panic!("no source opens: the start must fail"),
        Err(e) => lookout::retry::chain(&e),
    };
    assert!(err.contains("first") && err.contains("missing"), "{err}");
}
