//! The embedded HTTP server as an operator uses it: the `lookout` binary with `[http]` on a
//! loopback port, read with a real HTTP client and a real headless Chromium. Every wait is
//! bounded; nothing asserts on speed.

mod common;

use std::time::Duration;

use common::{get, get_json, sample, wait_until, Daemon};

const SYNTHETIC: &str = "[source]\ntype = \"synthetic\"\nfps = 10\n";

#[test]
fn health_metrics_status_live_frame_and_events_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), SYNTHETIC, "", &[]);
    assert!(
        wait_until(Duration::from_secs(30), || get(
            &format!("{}/healthz", d.base),
            None
        )
        .0 == 200),
        "healthz turns 200 once frames are classified: {:?}",
        String::from_utf8_lossy(&get(&format!("{}/healthz", d.base), None).1)
    );

    let (status, body) = get(&format!("{}/metrics", d.base), None);
    assert_eq!(status, 200);
    let metrics = String::from_utf8(body).expect("utf8");
    assert!(sample(&metrics, "lookout_frames_classified_total") >= 1.0);
    assert_eq!(sample(&metrics, "lookout_healthy"), 1.0);
    assert!(sample(&metrics, "lookout_process_resident_memory_bytes") > 1e6);
    assert!(sample(&metrics, "lookout_process_threads") >= 4.0);
    for needle in [
        "# TYPE lookout_inference_seconds histogram",
        "lookout_inference_seconds_bucket{le=\"+Inf\"}",
        "lookout_sink_sent_total{sink=\"log\"}",
        "lookout_sink_latency_seconds_count{sink=\"log\"}",
        "lookout_info{version=",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }

    let status = get_json(&format!("{}/api/status", d.base));
    assert_eq!(status["info"]["device"], "testdev");
    assert_eq!(status["health"]["ok"], true);
    assert_eq!(status["info"]["labels"].as_array().map(Vec::len), Some(4));

    let first = get_json(&format!("{}/api/live", d.base));
    let seq0 = first["seq"].as_u64().expect("seq");
    assert!(first["top"].as_array().is_some_and(|t| !t.is_empty()));
    assert!(
        wait_until(Duration::from_secs(20), || get_json(&format!(
            "{}/api/live",
            d.base
        ))["seq"]
            .as_u64()
            > Some(seq0)),
        "the latest frame advances"
    );

    let (status, jpeg) = get(&format!("{}/frame.jpg", d.base), None);
    assert_eq!(status, 200);
    let img = image::load_from_memory(&jpeg).expect("a JPEG");
    assert_eq!((img.width(), img.height()), (320, 240));

    let events = get_json(&format!("{}/api/events?limit=5", d.base));
    let list = events["events"].as_array().expect("events");
    assert!(!list.is_empty() && list.len() <= 5, "{events}");
    assert!(events["total"].as_u64() >= Some(list.len() as u64));
    assert!(list[0]["frame_seq"].is_u64());

    let history = get_json(&format!("{}/api/history?since=0", d.base));
    assert!(history.as_array().is_some_and(|h| !h.is_empty()));

    let (status, page) = get(&format!("{}/", d.base), None);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("<canvas id=\"timeline\""));
    assert_eq!(get(&format!("{}/nope", d.base), None).0, 404);
}

#[test]
fn a_token_guards_everything_but_healthz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        dir.path(),
        SYNTHETIC,
        "token_env = \"LOOKOUT_TEST_HTTP_TOKEN\"",
        &[("LOOKOUT_TEST_HTTP_TOKEN", "s3cret")],
    );
    assert!(wait_until(Duration::from_secs(30), || get(
        &format!("{}/healthz", d.base),
        None
    )
    .0 == 200));
    for path in ["/", "/metrics", "/api/status", "/frame.jpg"] {
        let (status, _) = get(&format!("{}{path}", d.base), None);
        assert_eq!(status, 401, "{path} without a token");
        let (status, _) = get(&format!("{}{path}", d.base), Some("wrong"));
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    assert_eq!(
        get(&format!("{}/api/status", d.base), Some("s3cret")).0,
        200
    );
    assert_eq!(
        get(&format!("{}/api/status?token=s3cret", d.base), None).0,
        200
    );
}

#[test]
fn healthz_says_why_when_no_frames_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A camera program that dies at once: the source reconnects forever, no frame arrives.
    let d = Daemon::start(
        dir.path(),
        "[source]\ntype = \"pipe\"\nformat = \"gray\"\nwidth = 8\nheight = 8\ncommand = [\"false\"]\n[pipeline]\nreconnect_max_secs = 1.0\n",
        "",
        &[],
    );
    let mut last = (0, Vec::new());
    let unhealthy = wait_until(Duration::from_secs(40), || {
        last = get(&format!("{}/healthz", d.base), None);
        last.0 == 503 && String::from_utf8_lossy(&last.1).contains("no frame classified")
    });
    assert!(
        unhealthy,
        "503 with a reason: {} {}",
        last.0,
        String::from_utf8_lossy(&last.1)
    );
    let text = String::from_utf8_lossy(&last.1);
    assert!(text.contains("source errors"), "{text}");
    // The process keeps running (and keeps serving) while the source is down.
    let metrics = String::from_utf8(get(&format!("{}/metrics", d.base), None).1).expect("utf8");
    assert!(sample(&metrics, "lookout_source_errors_total") >= 1.0);
    assert_eq!(sample(&metrics, "lookout_healthy"), 0.0);
}

/// The live view in a real browser: headless Chromium loads the page, runs its scripts, shows a
/// frame and scores that update, and takes a screenshot.
#[test]
fn the_live_view_renders_and_updates_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), SYNTHETIC, "", &[]);
    assert!(wait_until(Duration::from_secs(30), || get(
        &format!("{}/healthz", d.base),
        None
    )
    .0 == 200));
    let profile = dir.path().join("profile");
    let page = format!("{}/", d.base);
    let run = |args: &[&str]| common::headless(&profile, &page, args);
    let seq_of = |dom: &str| -> u64 {
        let at = dom
            .find("data-seq=\"")
            .unwrap_or_else(|| panic!("the page set no frame sequence:\n{dom}"));
        dom[at + 10..]
            .split('"')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("a number")
    };
    let dom1 = run(&["--dump-dom"]);
    assert!(
        dom1.contains("/frame.jpg?seq="),
        "the frame image is set:\n{dom1}"
    );
    assert!(
        dom1.contains("class=\"bar\""),
        "score bars are drawn:\n{dom1}"
    );
    assert!(
        dom1.contains("class=\"ok\">healthy"),
        "health shown:\n{dom1}"
    );
    let first = seq_of(&dom1);
    std::thread::sleep(Duration::from_secs(2));
    let dom2 = run(&["--dump-dom"]);
    assert!(seq_of(&dom2) > first, "the page shows newer frames");

    let shot = dir.path().join("live-view.png");
    run(&[&format!("--screenshot={}", shot.display())]);
    let img = image::open(&shot).expect("a PNG screenshot");
    assert_eq!((img.width(), img.height()), (1280, 900));
    // Not a blank page: the screenshot has many distinct colours (frame, text, plot).
    let rgb = img.to_rgb8();
    let mut colours: Vec<[u8; 3]> = rgb.pixels().step_by(97).map(|p| p.0).collect();
    colours.sort();
    colours.dedup();
    assert!(colours.len() > 50, "{} distinct colours", colours.len());
    if let Some(keep) = std::env::var_os("LOOKOUT_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("copy screenshot");
    }
}
