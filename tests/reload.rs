//! Hot reload as an operator does it: edit the config file of a running `lookout run`, then
//! SIGHUP or `POST /api/reload`. The camera (source) keeps running, the new rules and sinks take
//! over, events in flight are delivered by the old sinks, and an invalid file changes nothing.
//! Sources added to the file start, removed ones stop, unchanged ones keep their frame numbers.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{agent, get, sample, wait_until, Daemon};

const TOKEN_ENV: &str = "LOOKOUT_TEST_RELOAD_TOKEN";

/// The daemon's config file with `body` and the same `[http]` section it started with.
fn rewrite(dir: &Path, d: &Daemon, body: &str) {
    let port = d.base.rsplit(':').next().expect("port");
    std::fs::write(
        dir.join("lookout.toml"),
        format!(
            "device_id = \"testdev\"\n{body}\n[log]\nsummary_secs = 0\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"{TOKEN_ENV}\"\n"
        ),
    )
    .expect("rewrite config");
}

fn config(rule: &str, sink_file: &Path) -> String {
    format!(
        r#"
        [source]
        type = "synthetic"
        fps = 20
        [[rules]]
        name = "{rule}"
        labels = ["ok", "scratch", "dent", "missing"]
        min_score = 0.0
        [[sinks]]
        type = "jsonl"
        name = "{rule}"
        path = {:?}
        "#,
        sink_file.display().to_string()
    )
}

fn metrics(d: &Daemon) -> String {
    String::from_utf8(get(&format!("{}/metrics", d.base), Some("s3cret")).1).expect("utf8")
}

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("event JSON"))
        .collect()
}

fn post_reload(d: &Daemon, token: Option<&str>) -> (u16, String) {
    let mut req = agent().post(&format!("{}/api/reload", d.base));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.send_empty().expect("HTTP request");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().expect("body");
    (status, body)
}

#[test]
fn sighup_and_post_reload_swap_rules_and_sinks_without_dropping_the_camera() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.jsonl"),
        dir.path().join("c.jsonl"),
    );
    let d = Daemon::start(
        dir.path(),
        &config("first", &a),
        &format!("token_env = \"{TOKEN_ENV}\""),
        &[(TOKEN_ENV, "s3cret")],
    );
    assert!(wait_until(Duration::from_secs(60), || lines(&a).len() >= 10));

    // SIGHUP with a new rule and sink.
    rewrite(dir.path(), &d, &config("second", &b));
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status();
    assert!(
        wait_until(Duration::from_secs(60), || lines(&b).len() >= 10),
        "the new sink receives events: {}",
        std::fs::read_to_string(dir.path().join("lookout.log")).unwrap_or_default()
    );
    let m = metrics(&d);
    assert_eq!(sample(&m, "lookout_reloads_total"), 1.0);
    assert_eq!(
        sample(&m, "lookout_source_reconnects_total"),
        0.0,
        "the camera was not reopened"
    );
    // The old sink delivered everything it accepted, and then stopped receiving.
    let first = lines(&a);
    assert!(first.iter().all(|e| e["rule"] == "first"));
    assert!(lines(&b).iter().all(|e| e["rule"] == "second"));
    let log = std::fs::read_to_string(dir.path().join("lookout.log")).expect("log");
    let finished = log
        .lines()
        .find(|l| l.contains("Previous sinks finished."))
        .unwrap_or_else(|| panic!("old sinks' final counts logged:\n{log}"));
    assert!(
        finished.contains(&format!("sink.first.sent={} ", first.len()))
            && finished.contains("sink.first.failed=0 sink.first.dropped=0"),
        "every event the old sink took is on disk ({} lines): {finished}",
        first.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&a).len(), first.len(), "the old sink is gone");
    let status: serde_json::Value =
        serde_json::from_slice(&get(&format!("{}/api/status?token=s3cret", d.base), None).1)
            .expect("status JSON");
    assert_eq!(status["health"]["ok"], true);

    // An invalid file over HTTP: 422 with the reason; the running configuration stays.
    rewrite(
        dir.path(),
        &d,
        &format!("{}\n[pipeline]\nworkerz = 2\n", config("third", &c)),
    );
    assert_eq!(post_reload(&d, None).0, 401, "a token is required");
    let (code, why) = post_reload(&d, Some("s3cret"));
    assert_eq!(code, 422, "{why}");
    assert!(
        why.contains("workerz") && why.contains("lookout.toml"),
        "{why}"
    );
    let before = lines(&b).len();
    assert!(wait_until(Duration::from_secs(30), || lines(&b).len() > before + 5));
    assert!(!c.exists(), "the invalid config's sink never started");
    assert_eq!(sample(&metrics(&d), "lookout_reload_failures_total"), 1.0);

    // A rule naming a label the model does not have: refused the same way.
    let bad_rule = config("third", &c).replace("\"missing\"]", "\"cracked\"]");
    rewrite(dir.path(), &d, &bad_rule);
    let (code, why) = post_reload(&d, Some("s3cret"));
    assert_eq!(code, 422, "{why}");
    assert!(why.contains("cracked"), "{why}");

    // A valid file over HTTP: applied; a changed [source] is restarted with its new settings.
    rewrite(
        dir.path(),
        &d,
        &config("third", &c).replace("fps = 20", "fps = 15"),
    );
    let (code, msg) = post_reload(&d, Some("s3cret"));
    assert_eq!(code, 200, "{msg}");
    assert!(msg.contains("sources: restarted=synthetic"), "{msg}");
    assert!(wait_until(Duration::from_secs(60), || lines(&c).len() >= 5));
    assert_eq!(sample(&metrics(&d), "lookout_reloads_total"), 2.0);
}

#[test]
fn reload_adds_and_removes_sources_while_an_unchanged_one_keeps_its_frame_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let sources = |extra: bool| {
        let mut s =
            String::from("[[sources]]\nname = \"steady\"\ntype = \"synthetic\"\nfps = 20\n");
        if extra {
            s.push_str("[[sources]]\nname = \"extra\"\ntype = \"synthetic\"\nfps = 20\nseed = 5\n");
        }
        format!(
            "{s}[pipeline]\nframe_queue = 32\n[[sinks]]\ntype = \"jsonl\"\npath = {:?}\n",
            events.display().to_string()
        )
    };
    let d = Daemon::start(
        dir.path(),
        &sources(false),
        &format!("token_env = \"{TOKEN_ENV}\""),
        &[(TOKEN_ENV, "s3cret")],
    );
    let from = |name: &str| -> Vec<u64> {
        lines(&events)
            .iter()
            .filter(|e| e["source"] == name)
            .map(|e| e["frame_seq"].as_u64().expect("frame_seq"))
            .collect()
    };
    assert!(wait_until(Duration::from_secs(60), || from("steady").len() >= 10));

    // Add a source.
    rewrite(dir.path(), &d, &sources(true));
    let (code, msg) = post_reload(&d, Some("s3cret"));
    assert_eq!(code, 200, "{msg}");
    assert!(msg.contains("kept=steady added=extra"), "{msg}");
    assert!(
        wait_until(Duration::from_secs(60), || from("extra").len() >= 10),
        "the added source's events arrive"
    );
    // The live view shows the added source (and its frame) beside the kept one.
    let live_names = || -> Vec<String> {
        let (status, body) = get(&format!("{}/api/live", d.base), Some("s3cret"));
        assert_eq!(status, 200);
        let live: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        live["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .map(|s| s["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(live_names(), ["steady", "extra"]);
    let frame = get(
        &format!("{}/frame.jpg?source=extra", d.base),
        Some("s3cret"),
    );
    assert_eq!(frame.0, 200, "{}", String::from_utf8_lossy(&frame.1));
    // Remove it again.
    rewrite(dir.path(), &d, &sources(false));
    let (code, msg) = post_reload(&d, Some("s3cret"));
    assert_eq!(code, 200, "{msg}");
    assert!(msg.contains("kept=steady removed=extra"), "{msg}");
    let before = from("steady").len();
    assert!(wait_until(Duration::from_secs(60), || from("steady").len()
        >= before + 10));
    let extra = from("extra").len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(from("extra").len(), extra, "the removed source stopped");
    assert_eq!(
        live_names(),
        ["steady"],
        "the live view forgets a removed source"
    );
    let frame = get(
        &format!("{}/frame.jpg?source=extra", d.base),
        Some("s3cret"),
    );
    assert_eq!(frame.0, 404, "{}", String::from_utf8_lossy(&frame.1));

    // `steady` ran through both reloads: its frame numbers go on without a gap or a restart.
    let mut seqs = from("steady");
    seqs.sort_unstable();
    let want: Vec<u64> = (seqs[0]..seqs[0] + seqs.len() as u64).collect();
    assert_eq!(seqs, want, "one event per frame, numbered on without a gap");
    let m = metrics(&d);
    assert_eq!(sample(&m, "lookout_reloads_total"), 2.0);
    assert!(m.contains("lookout_source_frames_captured_total{source=\"steady\"}"));
    assert!(
        !m.contains("source=\"extra\""),
        "a removed source leaves /metrics"
    );
}

#[test]
fn reload_changes_the_reconnection_back_off_and_the_frame_queue_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A camera program that exits at once: its capture thread reopens it after each back-off
    // delay, and every reopening is counted.
    let body = |min: f64, max: f64, queue: usize| {
        format!(
            "[source]\ntype = \"pipe\"\nformat = \"gray\"\nwidth = 8\nheight = 8\ncommand = [\"false\"]\n\
             [pipeline]\nframe_queue = {queue}\nreconnect_min_secs = {min}\nreconnect_max_secs = {max}\n"
        )
    };
    let d = Daemon::start(
        dir.path(),
        &body(4.0, 4.0, 2),
        &format!("token_env = \"{TOKEN_ENV}\""),
        &[(TOKEN_ENV, "s3cret")],
    );
    let reconnects = || sample(&metrics(&d), "lookout_source_reconnects_total");
    assert!(
        wait_until(Duration::from_secs(60), || reconnects() >= 1.0),
        "the program is reopened after 4 s: {}",
        common::log_of(dir.path())
    );
    rewrite(dir.path(), &d, &body(0.05, 0.1, 3));
    let (code, msg) = post_reload(&d, Some("s3cret"));
    assert_eq!(code, 200, "{msg}");
    assert!(
        !msg.contains("not applied until a restart"),
        "frame_queue and reconnect_* apply without a restart: {msg}"
    );
    // With 4 s between attempts, 20 reopenings take over 60 s; with the new 0.05-0.1 s, about
    // two seconds (after the attempt under way, at most 4.8 s).
    let before = reconnects();
    assert!(
        wait_until(Duration::from_secs(40), || reconnects() >= before + 20.0),
        "the new back-off took over: {} reopenings since the reload\n{}",
        reconnects() - before,
        common::log_of(dir.path())
    );
    assert_eq!(sample(&metrics(&d), "lookout_reload_failures_total"), 0.0);
}
