//! The live view with several cameras and regions, as an operator uses it: the `lookout` binary
//! with `[http]` on a loopback port and several `[[sources]]`, read with a real HTTP client and a
//! real headless Chromium. Every wait is bounded; nothing asserts on speed.

mod common;

use std::time::Duration;

use common::{get, get_json, wait_until, Daemon};
use serde_json::Value;

/// `cam-a`: raw frames with two rectangle regions; `cam-b`: MJPEG frames (their size is known
/// only once decoded), with `cam_b_extra` (a grid, say).
fn two_cameras(cam_b_extra: &str) -> String {
    format!(
        r#"
[[sources]]
name = "cam-a"
type = "synthetic"
fps = 10
[[sources.regions]]
name = "left"
rect = [0, 0, 0.5, 1]
[[sources.regions]]
name = "right"
rect = [0.5, 0, 0.5, 1]
[[sources]]
name = "cam-b"
type = "synthetic"
fps = 10
seed = 7
format = "mjpeg"
{cam_b_extra}
"#
    )
}

fn source<'a>(live: &'a Value, name: &str) -> &'a Value {
    live["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no source {name} in {live}"))
}

/// A top-k list of the bundled model: labels it has, scores within 0..1, best first.
fn assert_top(top: &Value, labels: &[String], what: &str) {
    let list = top
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no top in {top}"));
    assert!(!list.is_empty(), "{what}: empty top");
    let mut last = f64::INFINITY;
    for e in list {
        let label = e["label"].as_str().expect("label");
        let score = e["score"].as_f64().expect("score");
        assert!(labels.iter().any(|l| l == label), "{what}: label {label}");
        assert!(
            (0.0..=1.0).contains(&score) && score <= last,
            "{what}: {top}"
        );
        last = score;
    }
}

fn labels(base: &str) -> Vec<String> {
    let status = get_json(&format!("{base}/api/status"));
    status["info"]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_str().expect("a string").to_owned())
        .collect()
}

/// The sample of `series` (name and labels, exactly as written) in `metrics`.
fn series(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

#[test]
fn the_api_lists_every_source_with_regions_and_health_and_filters_by_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `broken`: a camera program that dies at once, reopened again and again.
    let config = format!(
        "{}[[sources]]\nname = \"broken\"\ntype = \"pipe\"\nformat = \"gray\"\nwidth = 8\nheight = 8\ncommand = [\"false\"]\n[pipeline]\nreconnect_max_secs = 1.0\n",
        two_cameras("")
    );
    let d = Daemon::start(dir.path(), &config, "", &[]);
    let base = d.base.as_str();
    let mut live = Value::Null;
    let ready = wait_until(Duration::from_secs(60), || {
        live = get_json(&format!("{base}/api/live"));
        let seq = |name: &str| source(&live, name)["seq"].as_u64();
        seq("cam-a").is_some()
            && seq("cam-b").is_some()
            && source(&live, "broken")["health"] == "down"
            && source(&live, "cam-a")["regions"][1]["top"]
                .as_array()
                .is_some_and(|t| !t.is_empty())
    });
    assert!(
        ready,
        "both cameras classified, broken down: {live}\n{}",
        common::log_of(dir.path())
    );
    let labels = labels(base);

    // Every source, in configuration order, with its health.
    let names: Vec<&str> = live["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["cam-a", "cam-b", "broken"]);
    let (a, b, broken) = (
        source(&live, "cam-a"),
        source(&live, "cam-b"),
        source(&live, "broken"),
    );
    assert_eq!(
        (&a["health"], &b["health"]),
        (&"up".into(), &"up".into()),
        "{live}"
    );
    assert!(
        broken["reason"]
            .as_str()
            .is_some_and(|r| r.contains("broken")),
        "{broken}"
    );
    assert!(broken.get("seq").is_none() && broken["regions"] == serde_json::json!([]));
    // The first source's latest frame stays at the top level (the one-source shape).
    assert!(live["seq"].is_u64(), "{live}");
    assert_top(&live["top"], &labels, "top level");

    // cam-a: its regions, in order, as fractions and pixels of the 320x240 frame.
    assert_eq!(
        (a["width"].as_u64(), a["height"].as_u64()),
        (Some(320), Some(240))
    );
    let regions = a["regions"].as_array().expect("regions");
    let region_names: Vec<&str> = regions
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(region_names, ["left", "right"]);
    assert_eq!(regions[1]["rect"], serde_json::json!([0.5, 0.0, 0.5, 1.0]));
    assert_eq!(regions[1]["box"], serde_json::json!([160, 0, 160, 240]));
    for r in regions {
        assert_top(&r["top"], &labels, "a region");
    }
    // The source's top: each label's best score over its regions.
    assert_top(&a["top"], &labels, "cam-a");
    assert!(b["regions"].as_array().is_some_and(Vec::is_empty));
    assert_top(&b["top"], &labels, "cam-b");

    // /frame.jpg per source; an MJPEG frame's size is known once it has been served.
    let (status, jpeg) = get(&format!("{base}/frame.jpg?source=cam-b"), None);
    assert_eq!(status, 200);
    let img = image::load_from_memory(&jpeg).expect("a JPEG");
    assert_eq!((img.width(), img.height()), (320, 240));
    let b = get_json(&format!("{base}/api/live"));
    assert_eq!(source(&b, "cam-b")["width"].as_u64(), Some(320), "{b}");
    let (status, body) = get(&format!("{base}/frame.jpg?source=broken"), None);
    assert_eq!(
        (status, String::from_utf8_lossy(&body).trim()),
        (404, "no frame classified yet")
    );
    for path in [
        "/frame.jpg?source=nope",
        "/api/history?since=0&source=nope",
        "/api/events?source=nope",
    ] {
        let (status, body) = get(&format!("{base}{path}"), None);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 404, "{path}: {text}");
        assert!(
            text.contains("no source named \"nope\"") && text.contains("cam-a, cam-b, broken"),
            "{path}: {text}"
        );
    }

    // History and events by source.
    let history = get_json(&format!("{base}/api/history?since=0&source=cam-b"));
    assert!(
        history.as_array().is_some_and(|h| !h.is_empty()),
        "{history}"
    );
    let events_b = get_json(&format!("{base}/api/events?limit=200&source=cam-b"));
    let all = get_json(&format!("{base}/api/events?limit=200"));
    let list = events_b["events"].as_array().expect("events");
    assert!(
        !list.is_empty() && list.iter().all(|e| e["source"] == "cam-b"),
        "{events_b}"
    );
    assert!(events_b["total"].as_u64() <= all["total"].as_u64());
    let sources: Vec<&str> = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["source"].as_str().expect("source"))
        .collect();
    assert!(
        sources.contains(&"cam-a") && sources.contains(&"cam-b"),
        "{sources:?}"
    );

    // /healthz: the others keep the daemon healthy, degraded, naming the one down.
    // (`broken` is up for the moment between starting `false` and reading its end: wait.)
    let mut last = (0, String::new());
    let degraded = wait_until(Duration::from_secs(20), || {
        let (status, body) = get(&format!("{base}/healthz"), None);
        last = (status, String::from_utf8_lossy(&body).into_owned());
        status == 200 && last.1.contains("degraded") && last.1.contains("broken")
    });
    assert!(degraded, "200 ok (degraded: ... broken ...): {last:?}");

    // /metrics: the live view's families with source and region labels.
    let metrics = common::metrics(&d);
    assert!(
        series(
            &metrics,
            "lookout_region_classifications_total{source=\"cam-a\",region=\"right\"}"
        ) >= 1.0
    );
    assert!(
        series(
            &metrics,
            "lookout_source_events_total{source=\"cam-a\",region=\"left\"}"
        ) >= 1.0
    );
    assert!(series(&metrics, "lookout_source_events_total{source=\"cam-b\"}") >= 1.0);
    assert_eq!(
        series(&metrics, "lookout_source_events_total{source=\"broken\"}"),
        0.0
    );
    let scores: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("lookout_latest_top_score{"))
        .collect();
    for place in [
        "source=\"cam-a\",region=\"left\",label=",
        "source=\"cam-b\",label=",
    ] {
        assert!(
            scores.iter().any(|l| l.contains(place)),
            "{place} in {scores:?}"
        );
    }
}

/// The text of every `<text class="region-label" ...>...</text>` in `dom`.
fn region_labels(dom: &str) -> Vec<String> {
    dom.split("class=\"region-label\"")
        .skip(1)
        .filter_map(|rest| {
            let text = rest.split_once('>')?.1;
            Some(text.split_once("</text>")?.0.to_owned())
        })
        .collect()
}

/// Two cameras in a real browser, behind a token: a tile each with its name, health badge and
/// top label; region outlines with each region's name, top label and score; a click (here the
/// address it leads to) shows one camera large.
#[test]
fn two_cameras_with_regions_render_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        dir.path(),
        &two_cameras("grid = [2, 1]"),
        "token_env = \"LOOKOUT_TEST_LIVE_TOKEN\"",
        &[("LOOKOUT_TEST_LIVE_TOKEN", "s3cret")],
    );
    let base = d.base.as_str();
    let live_url = format!("{base}/api/live?token=s3cret");
    let mut live = Value::Null;
    let ready = wait_until(Duration::from_secs(60), || {
        let (status, body) = get(&live_url, None);
        live = serde_json::from_slice(&body).unwrap_or(Value::Null);
        status == 200
            && live["sources"].as_array().is_some_and(|s| {
                s.len() == 2 && s.iter().all(|s| s["seq"].is_u64() && s["health"] == "up")
            })
    });
    assert!(ready, "both cameras classified: {live}");
    assert_eq!(
        get(&format!("{base}/api/live"), None).0,
        401,
        "the token still guards"
    );
    let labels = labels_with_token(base);
    let profile = dir.path().join("profile");

    let dom = common::headless(&profile, &format!("{base}/?token=s3cret"), &["--dump-dom"]);
    for name in ["cam-a", "cam-b"] {
        assert!(
            dom.contains(&format!("<figure class=\"cam\" data-source=\"{name}\">")),
            "a tile for {name}:\n{dom}"
        );
        assert!(
            dom.contains(&format!("<span class=\"cam-name\">{name}</span>")),
            "{name}'s name"
        );
    }
    assert!(
        !dom.contains("<body class=\"single\""),
        "several cameras: a grid"
    );
    assert_eq!(
        dom.matches("<span class=\"badge ok\" title=\"\">up</span>")
            .count(),
        2,
        "a health badge per camera:\n{dom}"
    );
    assert!(
        dom.contains("/frame.jpg?seq=") && dom.contains("source=cam-b"),
        "frames:\n{dom}"
    );
    for region in ["left", "right", "r0c0", "r0c1"] {
        assert!(
            dom.contains(&format!(
                "<g class=\"region\" data-region=\"{region}\"><rect "
            )),
            "an outline for {region}:\n{dom}"
        );
    }
    let texts = region_labels(&dom);
    assert_eq!(texts.len(), 4, "{texts:?}");
    for t in &texts {
        // "<region>: <label> <score>"
        let (region, rest) = t.split_once(": ").unwrap_or_else(|| panic!("{t}"));
        let (label, score) = rest.rsplit_once(' ').unwrap_or_else(|| panic!("{t}"));
        assert!(["left", "right", "r0c0", "r0c1"].contains(&region), "{t}");
        assert!(labels.iter().any(|l| l == label), "{t}: label of the model");
        let score: f64 = score.parse().unwrap_or_else(|_| panic!("{t}: a score"));
        assert!((0.0..=1.0).contains(&score), "{t}");
    }
    // Each tile's caption has its top label and score.
    let tops = dom.matches("<span class=\"cam-top\">").count();
    assert_eq!(tops, 2);
    assert!(
        !dom.contains("<span class=\"cam-top\">-</span>"),
        "every tile has its top:\n{dom}"
    );

    // One camera large: the address a click on its tile sets.
    let dom = common::headless(
        &profile,
        &format!("{base}/?token=s3cret#source=cam-b"),
        &["--dump-dom"],
    );
    assert!(dom.contains("<body class=\"single\""), "one camera:\n{dom}");
    assert!(
        dom.contains("<figure class=\"cam focus\" data-source=\"cam-b\">"),
        "{dom}"
    );
    assert!(
        dom.contains("<figure class=\"cam\" data-source=\"cam-a\">"),
        "cam-a hidden, not shown large"
    );
    assert!(
        dom.contains("<div id=\"back-bar\">"),
        "a way back, not hidden:\n{dom}"
    );
    assert!(
        dom.contains("<span class=\"muted\" id=\"scores-of\">(cam-b)</span>"),
        "scores of cam-b:\n{dom}"
    );

    let shot = dir.path().join("live-grid.png");
    common::headless(
        &profile,
        &format!("{base}/?token=s3cret"),
        &[&format!("--screenshot={}", shot.display())],
    );
    let img = image::open(&shot).expect("a PNG screenshot");
    assert_eq!((img.width(), img.height()), (1280, 900));
    if let Some(keep) = std::env::var_os("LOOKOUT_SCREENSHOT_GRID") {
        std::fs::copy(&shot, keep).expect("copy screenshot");
    }
}

fn labels_with_token(base: &str) -> Vec<String> {
    let (status, body) = get(&format!("{base}/api/status"), Some("s3cret"));
    assert_eq!(status, 200);
    let status: Value = serde_json::from_slice(&body).expect("JSON");
    status["info"]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_str().expect("a string").to_owned())
        .collect()
}
