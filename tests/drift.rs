//! Drift monitoring in a running daemon, as an operator sees it: the `lookout` binary with the
//! PlantVillage CNN from `LOOKOUT_ASSETS` over real leaf photos, `[drift]` on, a drift rule, a
//! jsonl sink, `/metrics`, `/api/live` and the live page in headless Chromium. Two cameras:
//! `steady` sees early-blight leaves only; `changing` sees 20 early-blight leaves (its
//! reference) and then late-blight and healthy ones. Every wait is bounded; nothing asserts on
//! speed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{get_json, wait_metrics, wait_until, Daemon};
use lookout::config::{Config, Origin};
use lookout::event::Event;

/// Links the photos of `class` in `assets` into `dir` as `PREFIX_NNN.jpg`, cycling through them
/// until there are `n`.
fn link_photos(assets: &Path, class: &str, dir: &Path, prefix: &str, n: usize) {
    let mut photos: Vec<_> = std::fs::read_dir(assets.join("images/plant").join(class))
        .expect("class folder")
        .map(|e| e.expect("entry").path())
        .collect();
    photos.sort();
    assert!(!photos.is_empty(), "no photos of {class}");
    for i in 0..n {
        std::os::unix::fs::symlink(
            &photos[i % photos.len()],
            dir.join(format!("{prefix}_{i:03}.jpg")),
        )
        .expect("link photo");
    }
}

/// The value of the series `name{labels}` (labels exactly as written), if present.
fn series(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn events(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is an event"))
        .collect()
}

#[test]
fn a_changed_scene_raises_psi_fires_the_drift_rule_and_shows_on_the_page() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (steady, changing) = (dir.path().join("steady"), dir.path().join("changing"));
    for d in [&steady, &changing] {
        std::fs::create_dir(d).expect("scene dir");
    }
    link_photos(&assets, "Potato___Early_blight", &steady, "a", 20);
    link_photos(&assets, "Potato___Early_blight", &changing, "a", 20);
    link_photos(&assets, "Potato___Late_blight", &changing, "b", 40);
    link_photos(&assets, "Potato___healthy", &changing, "c", 40);
    let jsonl = dir.path().join("events.jsonl");
    let body = format!(
        r#"
[model]
path = {model:?}
labels = {labels:?}
[model.preprocess]
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
[[sources]]
name = "steady"
type = "files"
path = {steady:?}
loop = true
fps = 20
[[sources]]
name = "changing"
type = "files"
path = {changing:?}
loop = true
fps = 20
[pipeline]
workers = 1
[drift]
window = 20
reference_frames = 20
[[rules]]
name = "scene-changed"
kind = "drift"
max_psi = 0.25
frames = 5
cooldown_secs = 3600
[[sinks]]
type = "jsonl"
path = {jsonl:?}
"#,
        model = assets.join("models/plant-cnn96.onnx").display().to_string(),
        labels = assets
            .join("models/plant15.labels.txt")
            .display()
            .to_string(),
        steady = steady.display().to_string(),
        changing = changing.display().to_string(),
        jsonl = jsonl.display().to_string(),
    );
    let d = Daemon::start(dir.path(), &body, "", &[]);

    // /metrics: the changed scene's PSI passes the large-shift threshold; the steady one's
    // top-1 labels are all early blight, in the window as in the reference: PSI 0.
    let psi_changing = "lookout_drift_psi{source=\"changing\",model=\"default\"}";
    let psi_steady = "lookout_drift_psi{source=\"steady\",model=\"default\"}";
    let text = wait_metrics(&d, dir.path(), "the changed scene's PSI passes 0.25", |m| {
        series(m, psi_changing).is_some_and(|p| p > 0.25) && series(m, psi_steady).is_some()
    });
    let steady_psi = series(&text, psi_steady).expect("steady PSI");
    assert!(steady_psi < 0.1, "steady scene PSI {steady_psi}:\n{text}");
    let mean = series(
        &text,
        "lookout_mean_top1_score{source=\"steady\",model=\"default\"}",
    )
    .expect("steady mean score");
    assert!(mean > 0.5 && mean <= 1.0, "steady mean top-1 score {mean}");

    // The drift rule's event reaches the jsonl sink, for the changed scene only.
    let mut got = Vec::new();
    let fired = wait_until(Duration::from_secs(60), || {
        got = events(&jsonl);
        !got.is_empty()
    });
    assert!(
        fired,
        "no drift event in {}:\n{}",
        jsonl.display(),
        common::log_of(dir.path())
    );
    let e = &got[0];
    assert_eq!(
        (
            e.rule.as_deref(),
            e.label.as_str(),
            e.source.as_str(),
            e.region.as_deref()
        ),
        (Some("scene-changed"), "drift", "changing", None),
        "{e:?}"
    );
    let f = e.drift.as_ref().expect("a drift event carries its figures");
    assert!(f.psi.is_some_and(|p| p > 0.25), "{f:?}");
    assert_eq!(
        (f.reference.as_str(), f.reference_frames, f.window_frames),
        ("frames", 20, 20)
    );
    assert!(
        f.mean_score
            .is_some_and(|m| (m as f32 - e.score).abs() < 1e-6),
        "{e:?}"
    );
    assert!(!e.top.is_empty(), "{e:?}");

    // /api/live carries the figures per source.
    let live = get_json(&format!("{}/api/live", d.base));
    let source = |name: &str| {
        live["sources"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .unwrap_or_else(|| panic!("no source {name} in {live}"))
            .clone()
    };
    let steady_live = source("steady");
    assert_eq!(
        steady_live["drift"][0]["psi"].as_f64(),
        Some(0.0),
        "{steady_live}"
    );
    assert_eq!(steady_live["drift"][0]["model"], "default");
    assert!(source("changing")["drift"][0]["mean_score"]
        .as_f64()
        .is_some());

    // The live page shows each camera's figures in its tile.
    let profile = dir.path().join("chromium");
    let dom = common::headless(&profile, &d.base, &["--dump-dom"]);
    let tile = |name: &str| -> String {
        let start = dom
            .find(&format!("data-source=\"{name}\""))
            .unwrap_or_else(|| panic!("no tile for {name} in:\n{dom}"));
        let end = dom[start..]
            .find("</figure>")
            .map_or(dom.len(), |e| start + e);
        dom[start..end].to_owned()
    };
    let steady_tile = tile("steady");
    assert!(
        steady_tile.contains("drift PSI 0.00, mean score 0."),
        "steady tile: {steady_tile}"
    );
    let changing_tile = tile("changing");
    let figure = changing_tile
        .split("drift PSI ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .unwrap_or_else(|| panic!("no drift figure in the changing tile: {changing_tile}"));
    assert!(figure.parse::<f64>().is_ok(), "PSI shown as {figure:?}");

    // Cooldown: still the one event after all this.
    assert_eq!(events(&jsonl).len(), 1, "{:?}", events(&jsonl));
}

#[test]
fn drift_keys_are_checked_with_their_key_paths() {
    let err = |text: &str| {
        Config::parse(text, Origin::File("test.toml".into()))
            .expect_err("invalid")
            .to_string()
    };
    let cases = [
        (
            "[[rules]]\nname = \"d\"\nkind = \"drift\"\nmax_psi = 0.2",
            "rules[0].kind: a drift rule watches the drift figures: add a `[drift]` table",
        ),
        (
            "[drift]\n[[rules]]\nname = \"d\"\nkind = \"drift\"\nlabels = [\"ok\"]\nmax_psi = 0.2",
            "rules[0].labels: a drift rule watches the drift figures, not labels",
        ),
        (
            "[drift]\n[[rules]]\nname = \"d\"\nkind = \"drift\"",
            "rules[0]: a drift rule needs `max_psi`",
        ),
        (
            "[[rules]]\nname = \"r\"\nlabels = [\"ok\"]\nmax_psi = 0.2",
            "rules[0].max_psi: is a drift rule's key",
        ),
        (
            "[drift]\nwindow = 0",
            "drift.window: expected a value from 2",
        ),
        ("[drift]\nwindw = 5", "unknown field `windw`"),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.contains(want), "{text:?}: want {want:?} in:\n{e}");
    }
}
