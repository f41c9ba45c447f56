//! Named models (`[models.NAME]`, `model = "NAME"` on a source or region) in a running daemon,
//! with real models: the bundled synthetic-parts model and the PlantVillage CNN from
//! `LOOKOUT_ASSETS` over its leaf photos. Each source and region is classified by its own model
//! and its events carry that model's labels; reload swaps a source's model or refuses a model
//! that does not load with nothing changed; `check` and `/api/status` list the models. Every
//! wait is bounded; nothing asserts on speed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{agent, get, get_json, wait_until, Daemon};
use lookout::config::{Config, Origin};
use lookout::daemon;
use lookout::event::Event;
use lookout::stop::StopToken;

const PARTS: [&str; 4] = ["ok", "scratch", "dent", "missing"];

fn config(text: &str) -> Config {
    Config::parse(text, Origin::File("test.toml".into())).expect("valid test config")
}

fn jsonl(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is an event"))
        .collect()
}

fn plant_labels(assets: &Path) -> Vec<String> {
    std::fs::read_to_string(assets.join("models/plant15.labels.txt"))
        .expect("labels file")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `[models.plant]` table: the PlantVillage CNN (stretch to 96x96, /255, no mean/std).
fn plant_table(assets: &Path) -> String {
    format!(
        r#"
        [models.plant]
        path = {:?}
        labels = {:?}
        [models.plant.preprocess]
        mean = [0.0, 0.0, 0.0]
        std = [1.0, 1.0, 1.0]
        "#,
        assets.join("models/plant-cnn96.onnx").display().to_string(),
        assets
            .join("models/plant15.labels.txt")
            .display()
            .to_string(),
    )
}

fn leaves(assets: &Path) -> PathBuf {
    assets.join("images/plant")
}

#[test]
fn two_sources_with_two_models_give_events_with_each_models_labels() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let cfg = config(&format!(
        r#"
        {plant}
        [models.spare]
        path = "does-not-exist.onnx"
        [[sources]]
        name = "belt"
        type = "synthetic"
        fps = 0
        count = 8
        [[sources]]
        name = "leaves"
        type = "files"
        path = {leaves:?}
        labels_from_dirs = true
        model = "plant"
        [pipeline]
        workers = 2
        [[sinks]]
        type = "jsonl"
        path = {events:?}
        [log]
        summary_secs = 0
        "#,
        plant = plant_table(&assets),
        leaves = leaves(&assets).display().to_string(),
        events = events.display().to_string(),
    ));
    // `spare` names a file that does not exist: no source names it, so it is not loaded.
    let running = daemon::start(&cfg, Vec::new(), StopToken::new()).expect("starts");
    let snap = running.wait(Duration::from_secs(120));
    assert_eq!((snap.inferred, snap.failed), (8 + 63, 0), "{snap:?}");
    let plant = plant_labels(&assets);
    let mut by_source: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for e in jsonl(&events) {
        by_source.entry(e.source.clone()).or_default().push(e);
    }
    let belt = &by_source["belt"];
    assert_eq!(belt.len(), 8);
    for e in belt {
        assert!(PARTS.contains(&e.label.as_str()), "{e:?}");
        assert!(e.top.iter().all(|t| PARTS.contains(&t.label.as_str())));
        assert_eq!(e.model, None, "the default model is not named in events");
    }
    let leaf = &by_source["leaves"];
    assert_eq!(leaf.len(), 63);
    for e in leaf {
        assert!(plant.contains(&e.label), "{e:?}");
        assert!(e.top.iter().all(|t| plant.contains(&t.label)));
        assert_eq!(e.model.as_deref(), Some("plant"));
    }
    // The plant model really classified the leaves: its top-1 is the folder's label on most
    // photos (onnxruntime agrees with the folder on 60 of 63).
    let right = leaf
        .iter()
        .filter(|e| e.truth.as_deref() == Some(e.label.as_str()))
        .count();
    eprintln!("plant model top-1 = folder label on {right} of 63 leaf photos");
    assert!(right >= 55, "top-1 right on {right} of 63 leaf photos");
    // The synthetic scenes' true labels are the bundled model's.
    let belt_right = belt
        .iter()
        .filter(|e| e.truth.as_deref() == Some(e.label.as_str()))
        .count();
    assert!(belt_right >= 6, "{belt_right} of 8 synthetic scenes");
}

#[test]
fn a_region_with_its_own_model_is_classified_by_it() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    // One frame, three regions: `left` and the grid-free `middle` keep the source's (default)
    // model, `right` names the plant model. A rule on a plant label fires only for `right`.
    let cfg = config(&format!(
        r#"
        {plant}
        [[sources]]
        name = "bench"
        type = "synthetic"
        width = 360
        height = 120
        fps = 0
        count = 3
        format = "mjpeg"
        [[sources.regions]]
        name = "left"
        rect = [0, 0, 0.34, 1]
        [[sources.regions]]
        name = "right"
        rect = [0.66, 0, 0.34, 1]
        model = "plant"
        [[sources.regions]]
        name = "middle"
        rect = [0.33, 0, 0.34, 1]
        [pipeline]
        workers = 1
        [[rules]]
        name = "anything"
        labels = ["ok", "scratch", "dent", "missing", "Tomato___healthy", "Potato___healthy",
                  "Tomato___Late_blight", "Potato___Late_blight", "Potato___Early_blight",
                  "Pepper,_bell___healthy", "Pepper,_bell___Bacterial_spot", "Tomato___Leaf_Mold",
                  "Tomato___Bacterial_spot", "Tomato___Early_blight", "Tomato___Target_Spot",
                  "Tomato___Septoria_leaf_spot", "Tomato___Spider_mites Two-spotted_spider_mite",
                  "Tomato___Tomato_Yellow_Leaf_Curl_Virus", "Tomato___Tomato_mosaic_virus"]
        min_score = 0.0
        [[sinks]]
        type = "jsonl"
        path = {events:?}
        [log]
        summary_secs = 0
        "#,
        plant = plant_table(&assets),
        events = events.display().to_string(),
    ));
    let running = daemon::start(&cfg, Vec::new(), StopToken::new()).expect("starts");
    let snap = running.wait(Duration::from_secs(60));
    assert_eq!((snap.inferred, snap.failed), (3, 0), "frames, not regions");
    let plant = plant_labels(&assets);
    let mut regions: BTreeMap<String, usize> = BTreeMap::new();
    for e in jsonl(&events) {
        let region = e.region.clone().expect("every event is a region's");
        *regions.entry(region.clone()).or_default() += 1;
        if region == "right" {
            assert!(plant.contains(&e.label), "{e:?}");
            assert!(e.top.iter().all(|t| plant.contains(&t.label)), "{e:?}");
            assert_eq!(e.model.as_deref(), Some("plant"));
        } else {
            assert!(PARTS.contains(&e.label.as_str()), "{e:?}");
            assert_eq!(e.model, None);
        }
    }
    let want: BTreeMap<String, usize> = [("left", 3), ("middle", 3), ("right", 3)]
        .into_iter()
        .map(|(r, n)| (r.to_owned(), n))
        .collect();
    assert_eq!(regions, want, "one event per region of each frame");
}

#[test]
fn unknown_models_and_labels_of_no_watched_model_are_refused_with_their_key_paths() {
    let text = "[models.leaves]\npath = \"x.onnx\"\n\
                [[sources]]\nname = \"cam\"\ntype = \"synthetic\"\nmodel = \"leafs\"\n";
    let err = Config::parse(text, Origin::File("test.toml".into()))
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("test.toml")
            && err.contains("sources[0].model")
            && err.contains("no model named \"leafs\"")
            && err.contains("default, leaves"),
        "{err}"
    );
    let Some(assets) = common::assets() else {
        return;
    };
    // A rule watching only the plant source may not name a label of the parts model.
    let cfg = config(&format!(
        r#"
        {plant}
        [[sources]]
        name = "belt"
        type = "synthetic"
        [[sources]]
        name = "leaves"
        type = "synthetic"
        model = "plant"
        [[rules]]
        name = "blight"
        labels = ["Potato___Late_blight"]
        sources = ["leaves"]
        [[rules]]
        name = "dents"
        labels = ["dent"]
        sources = ["leaves"]
        "#,
        plant = plant_table(&assets),
    ));
    let err = match daemon::start(&cfg, Vec::new(), StopToken::new()) {
        Ok(_) => panic!("a rule with a label of no model it watches must not start"),
        Err(e) => e,
    };
    let msg = lookout::retry::chain(&err);
    assert!(
        msg.contains("rules[1].labels")
            && msg.contains("\"dent\"")
            && msg.contains("(plant)")
            && msg.contains("Potato___Late_blight"),
        "{msg}"
    );
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn check_lists_each_model_with_its_users_and_status_lists_them_too() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let body = format!(
        r#"
        {plant}
        [models.spare]
        path = "does-not-exist.onnx"
        [[sources]]
        name = "belt"
        type = "synthetic"
        fps = 5
        [[sources]]
        name = "leaves"
        type = "synthetic"
        fps = 5
        model = "plant"
        [[sources.regions]]
        name = "left"
        rect = [0, 0, 0.5, 1]
        [[sources.regions]]
        name = "right"
        rect = [0.5, 0, 0.5, 1]
        model = "default"
        "#,
        plant = plant_table(&assets),
    );
    let conf = dir.path().join("check.toml");
    std::fs::write(&conf, &body).expect("write config");
    let out = common::lookout_command()
        .args(["check", "--config"])
        .arg(&conf)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for fragment in [
        "used by:      default ([model]): belt, leaves.right",
        "used by:      plant ([models.plant]): leaves.left",
        "plant-cnn96.onnx",
        "15 classes",
        "not loaded:   spare ([models.spare]): no source or region names it",
    ] {
        assert!(
            text.contains(fragment),
            "check output lacks {fragment:?}:\n{text}"
        );
    }
    let d = Daemon::start(dir.path(), &body, "", &[]);
    let status = get_json(&format!("{}/api/status", d.base));
    let models = status["info"]["models"].as_array().expect("models listed");
    let got: Vec<(String, u64, Vec<String>)> = models
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("name").to_owned(),
                m["classes"].as_u64().expect("classes"),
                m["used_by"]
                    .as_array()
                    .expect("used_by")
                    .iter()
                    .map(|u| u.as_str().expect("str").to_owned())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "default".to_owned(),
                4,
                vec!["belt".to_owned(), "leaves.right".to_owned()]
            ),
            ("plant".to_owned(), 15, vec!["leaves.left".to_owned()]),
        ]
    );
    assert!(models[1]["path"]
        .as_str()
        .is_some_and(|p| p.ends_with("plant-cnn96.onnx")));
    // Model-run time per model in /metrics.
    let count = |text: &str, model: &str| -> f64 {
        let name = format!("lookout_model_inference_seconds_count{{model=\"{model}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            let text = common::metrics(&d);
            count(&text, "default") >= 2.0 && count(&text, "plant") >= 1.0
        }),
        "{}",
        common::metrics(&d)
    );
}

#[test]
fn the_card_accuracy_shown_is_the_first_loaded_models_even_when_it_is_a_named_one() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The plant model through a link in a folder of the test's, with a model card beside it
    // (as `lookout train` writes one); `[model]` is not used by any source.
    let model = dir.path().join("plant.onnx");
    std::os::unix::fs::symlink(assets.join("models/plant-cnn96.onnx"), &model).expect("link");
    std::fs::write(
        dir.path().join("plant.card.json"),
        r#"{"validation_accuracy": 0.8125, "labels": []}"#,
    )
    .expect("card");
    let plant = plant_table(&assets).replace(
        &format!(
            "{:?}",
            assets.join("models/plant-cnn96.onnx").display().to_string()
        ),
        &format!("{:?}", model.display().to_string()),
    );
    assert!(plant.contains("plant.onnx\""), "{plant}");
    let body = format!(
        r#"
        {plant}
        [[sources]]
        name = "leaves"
        type = "synthetic"
        fps = 5
        model = "plant"
        "#
    );
    let d = Daemon::start(dir.path(), &body, "", &[]);
    let status = get_json(&format!("{}/api/status", d.base));
    let info = &status["info"];
    assert_eq!(info["models"][0]["name"], "plant", "{status}");
    assert_eq!(info["models"][0]["card_accuracy"], 0.8125, "{status}");
    assert_eq!(info["model_card_accuracy"], 0.8125, "{status}");
}

const TOKEN_ENV: &str = "LOOKOUT_TEST_MODELS_TOKEN";
const TOKEN: &str = "m0dels";

/// The daemon's config file: `body`, and the `[http]` section it started with.
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

fn post_reload(d: &Daemon) -> (u16, String) {
    let mut resp = agent()
        .post(&format!("{}/api/reload", d.base))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .send_empty()
        .expect("HTTP request");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().expect("body");
    (status, body)
}

#[test]
fn reload_changes_one_sources_model_and_refuses_a_model_that_does_not_load() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let body = |leaves_model: &str, extra: &str| {
        format!(
            r#"
            {plant}
            {extra}
            [[sources]]
            name = "belt"
            type = "synthetic"
            fps = 10
            [[sources]]
            name = "leaves"
            type = "files"
            path = {leaves:?}
            loop = true
            fps = 10
            model = "{leaves_model}"
            [pipeline]
            workers = 1
            [[sinks]]
            type = "jsonl"
            path = {events:?}
            "#,
            plant = plant_table(&assets),
            leaves = leaves(&assets).display().to_string(),
            events = events.display().to_string(),
        )
    };
    let d = Daemon::start(
        dir.path(),
        &body("plant", ""),
        &format!("token_env = \"{TOKEN_ENV}\""),
        &[(TOKEN_ENV, TOKEN)],
    );
    let plant = plant_labels(&assets);
    let of = |source: &str, want: &dyn Fn(&Event) -> bool| {
        jsonl(&events)
            .iter()
            .filter(|e| e.source == source && want(e))
            .count()
    };
    let is_plant = |e: &Event| plant.contains(&e.label) && e.model.as_deref() == Some("plant");
    let is_parts = |e: &Event| PARTS.contains(&e.label.as_str()) && e.model.is_none();
    assert!(
        wait_until(Duration::from_secs(60), || of("leaves", &is_plant) >= 5
            && of("belt", &is_parts) >= 5),
        "events from both sources with their own models"
    );

    // A model that does not load: refused, nothing changed (the leaves keep the plant model).
    std::fs::write(dir.path().join("broken.onnx"), b"not an onnx file").expect("write");
    let broken = format!(
        "[models.broken]\npath = {:?}\n",
        dir.path().join("broken.onnx").display().to_string()
    );
    rewrite(dir.path(), &d, &body("broken", &broken));
    let (code, why) = post_reload(&d);
    assert_eq!(code, 422, "{why}");
    assert!(
        why.contains("model \"broken\"") && why.contains("models.broken"),
        "{why}"
    );
    let before = of("leaves", &is_plant);
    assert!(
        wait_until(Duration::from_secs(30), || of("leaves", &is_plant)
            >= before + 5),
        "the leaves are still classified by the plant model"
    );

    // The leaves now go to the default model: that source restarts, the belt keeps running.
    rewrite(dir.path(), &d, &body("default", ""));
    let (code, msg) = post_reload(&d);
    assert_eq!(code, 200, "{msg}");
    assert!(
        msg.contains("kept=belt") && msg.contains("restarted=leaves"),
        "{msg}"
    );
    let parts_before = of("leaves", &is_parts);
    assert!(
        wait_until(Duration::from_secs(60), || of("leaves", &is_parts)
            >= parts_before + 5),
        "the leaves are classified by the default model after the reload"
    );
    // No named model in use: `[models.plant]` is not loaded, /api/status lists one model.
    let (code, body) = get(&format!("{}/api/status", d.base), Some(TOKEN));
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let names: Vec<&str> = status["info"]["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["default"]);
}
