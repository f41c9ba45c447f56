//! Collecting frames for labelling, as a user runs it: the `lookout` binary with the
//! PlantVillage CNN from `LOOKOUT_ASSETS` over real leaf photos, `[collect]` on, `/metrics`,
//! the dataset folder and its manifest, the `/collect` page in headless Chromium (a click
//! relabels a frame, keys delete and confirm), `lookout dataset import` into the running
//! daemon's folder, and a reload that moves collecting to another folder. Every wait is
//! bounded; nothing asserts on speed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cdp::Browser;
use common::{get_json, Daemon};
use serde_json::Value;

const TOKEN: &str = "collect-test-token";

/// Links the first `n` photos of `class` into `dir` as `PREFIX_NNN.jpg`.
fn link_photos(assets: &Path, class: &str, dir: &Path, prefix: &str, n: usize) {
    let mut photos: Vec<_> = std::fs::read_dir(assets.join("images/plant").join(class))
        .expect("class folder")
        .map(|e| e.expect("entry").path())
        .collect();
    photos.sort();
    assert!(photos.len() >= n, "{class} has {} photos", photos.len());
    for (i, p) in photos.iter().take(n).enumerate() {
        std::os::unix::fs::symlink(p, dir.join(format!("{prefix}_{i:03}.jpg"))).expect("link");
    }
}

fn series(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name_and_labels} in:\n{metrics}"))
}

/// The JPEGs in the label folders of `dir` (not the manifest, not `.tmp`).
fn stored(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dataset dir") {
        let p = entry.expect("entry").path();
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if p.is_dir() && !hidden {
            for f in std::fs::read_dir(&p).expect("label dir") {
                out.push(f.expect("entry").path());
            }
        }
    }
    out.sort();
    out
}

fn manifest(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("manifest.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each manifest line is JSON"))
        .collect()
}

fn config(assets: &Path, photos: &Path, collect_dir: &Path, max_files: usize) -> String {
    format!(
        r#"
[model]
path = {model:?}
labels = {labels:?}
[model.preprocess]
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
[[sources]]
name = "bench"
type = "files"
path = {photos:?}
loop = true
fps = 30
[pipeline]
workers = 1
[collect]
dir = {dir:?}
below_score = 1.0
below_margin = 0.0
sample_every = 0
events = false
min_distance = 10
max_files = {max_files}
[[sinks]]
type = "log"
"#,
        model = assets.join("models/plant-cnn96.onnx").display().to_string(),
        labels = assets
            .join("models/plant15.labels.txt")
            .display()
            .to_string(),
        photos = photos.display().to_string(),
        dir = collect_dir.display().to_string(),
    )
}

#[test]
fn leaf_photos_are_collected_within_bounds_and_labelled_on_the_page() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).expect("photos");
    // Twelve different leaves, shown over and over at 30 fps: after the first pass every
    // frame is one seen before.
    link_photos(&assets, "Potato___Early_blight", &photos, "a", 4);
    link_photos(&assets, "Potato___Late_blight", &photos, "b", 4);
    link_photos(&assets, "Potato___healthy", &photos, "c", 4);
    let data = dir.path().join("dataset");
    let body = config(&assets, &photos, &data, 5);
    let d = Daemon::start(
        dir.path(),
        &body,
        "token_env = \"LOOKOUT_COLLECT_TOKEN\"",
        &[("LOOKOUT_COLLECT_TOKEN", TOKEN)],
    );
    let metrics_url = format!("{}/metrics", d.base);
    let text_of = || {
        let (status, body) = common::get(&metrics_url, Some(TOKEN));
        assert_eq!(status, 200);
        String::from_utf8(body).expect("utf8")
    };
    // Three passes over the photos: the collector has looked at every frame of them.
    let wait = |pred: &dyn Fn(&str) -> bool| {
        let mut last = String::new();
        let ok = common::wait_until(Duration::from_secs(90), || {
            last = text_of();
            pred(&last)
        });
        assert!(
            ok,
            "--- metrics ---\n{last}\n--- log ---\n{}",
            common::log_of(dir.path())
        );
        last
    };
    let kept_of = |m: &str| series(m, "lookout_collect_kept_total{why=\"low_score\"}");
    let dups_of = |m: &str| series(m, "lookout_collect_near_duplicates_total");
    let m = wait(&|m| dups_of(m) >= 24.0);
    let kept = kept_of(&m);
    // Kept: at most the twelve leaves once each (two leaves whose hashes are within 10 bits
    // count as one), and a second and third pass keep nothing new.
    assert!((6.0..=12.0).contains(&kept), "kept {kept}:\n{m}");
    let base = dups_of(&m);
    let later = wait(&|x| dups_of(x) >= base + 24.0);
    assert_eq!(
        kept_of(&later),
        kept,
        "a repeated scene was kept again:\n{later}"
    );
    // Bounds: five unreviewed frames at most, the oldest deleted first and counted.
    let files = stored(&data);
    assert_eq!(files.len(), 5, "{files:?}");
    assert_eq!(series(&later, "lookout_collect_files"), 5.0);
    assert_eq!(series(&later, "lookout_collect_evicted_total"), kept - 5.0);
    let lines = manifest(&data);
    let kept_lines: Vec<&Value> = lines.iter().filter(|l| l["op"] == "keep").collect();
    assert_eq!(kept_lines.len() as f64, kept);
    let model_sha = lookout::digest::sha256_hex(
        &std::fs::read(assets.join("models/plant-cnn96.onnx")).expect("model"),
    );
    for l in &kept_lines {
        assert_eq!(l["why"], "low_score", "{l}");
        assert_eq!(l["source"], "bench", "{l}");
        assert_eq!(l["model"], "default", "{l}");
        assert_eq!(l["model_sha256"], model_sha.as_str(), "{l}");
        let top = l["top"].as_array().expect("top");
        // `[pipeline] top_k`, 3 by default.
        assert_eq!(top.len(), 3, "{l}");
        // Stored under the predicted label.
        let file = l["file"].as_str().expect("file");
        assert!(
            file.starts_with(&format!("{}/", top[0][0].as_str().expect("label"))),
            "{l}"
        );
    }
    // The stored files are JPEGs that decode.
    for f in &files {
        image::open(f).unwrap_or_else(|e| panic!("{} does not decode: {e}", f.display()));
    }

    // The API needs the token; writes need it as a header.
    let (status, _) = common::get(&format!("{}/api/collect", d.base), None);
    assert_eq!(status, 401);
    let listing = get_json(&format!(
        "{}/api/collect?token={TOKEN}&reviewed=false",
        d.base
    ));
    let items = listing["items"].as_array().expect("items");
    assert_eq!(items.len(), 5, "{listing}");
    let scores: Vec<f64> = items
        .iter()
        .map(|i| i["top"][0][1].as_f64().expect("score"))
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] <= w[1]),
        "lowest first: {scores:?}"
    );
    let post = common::agent()
        .post(&format!("{}/api/collect/delete?token={TOKEN}", d.base))
        .send(format!(
            "{{\"file\": {:?}}}",
            items[0]["file"].as_str().unwrap()
        ))
        .expect("POST");
    assert_eq!(post.status(), 401, "?token= is no token for a write");

    // The page, in a real browser: a click gives the least sure frame another label.
    let mut b = Browser::start(&dir.path().join("chromium"));
    b.navigate(&format!("{}/collect?token={TOKEN}", d.base));
    assert!(
        b.wait_for("document.querySelectorAll('.card').length === 5"),
        "cards shown"
    );
    let first = b.eval("document.querySelector('.card').dataset.file");
    let first = first.as_str().expect("file").to_owned();
    assert_eq!(first, items[0]["file"].as_str().unwrap());
    let predicted = first.split('/').next().unwrap().to_owned();
    let new_label = if predicted == "Tomato___healthy" {
        "Potato___healthy"
    } else {
        "Tomato___healthy"
    };
    b.click(&format!(
        ".card[data-file=\"{first}\"] button.label[data-label=\"{new_label}\"]"
    ));
    let name = first.split('/').nth(1).unwrap();
    let moved = data.join(new_label).join(name);
    assert!(
        common::wait_until(Duration::from_secs(20), || moved.is_file()),
        "{first} not moved to {}; status: {}",
        moved.display(),
        b.eval("document.getElementById('status').textContent")
    );
    assert!(!data.join(&first).exists());
    let label_line = manifest(&data)
        .into_iter()
        .find(|l| l["op"] == "label")
        .expect("a label line");
    assert_eq!(label_line["file"], first.as_str());
    assert_eq!(label_line["label"], new_label);
    // The page reloads its list: the labelled frame is no longer to review.
    assert!(b.wait_for("document.querySelectorAll('.card').length === 4"));

    // Keys: "x" deletes the selected (first) frame, Enter confirms the next one's label.
    let second = b.eval("document.querySelector('.card.sel').dataset.file");
    let second = second.as_str().expect("file").to_owned();
    b.press("x", 88);
    assert!(
        common::wait_until(Duration::from_secs(20), || !data.join(&second).exists()),
        "{second} not deleted"
    );
    assert!(b.wait_for("document.querySelectorAll('.card').length === 3"));
    let third = b.eval("document.querySelector('.card.sel').dataset.file");
    let third = third.as_str().expect("file").to_owned();
    b.press("Enter", 13);
    assert!(b.wait_for("document.querySelectorAll('.card').length === 2"));
    assert!(
        data.join(&third).is_file(),
        "a confirmed frame stays where it is"
    );
    let all = get_json(&format!("{}/api/collect?token={TOKEN}", d.base));
    let reviewed: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["reviewed"] == true)
        .map(|i| i["file"].as_str().unwrap())
        .collect();
    assert_eq!(reviewed.len(), 2, "{all}");
    assert!(reviewed.contains(&third.as_str()));
    assert!(reviewed.contains(&format!("{new_label}/{name}").as_str()));
    assert!(manifest(&data)
        .iter()
        .any(|l| l["op"] == "delete" && l["file"] == second.as_str()));

    // `lookout dataset import` into the running daemon's folder: the page sees it at once.
    let src = dir.path().join("import");
    std::fs::create_dir_all(src.join("Pepper,_bell___Bacterial_spot")).expect("src");
    link_photos(
        &assets,
        "Pepper,_bell___Bacterial_spot",
        &src.join("Pepper,_bell___Bacterial_spot"),
        "p",
        1,
    );
    std::fs::write(
        src.join("Pepper,_bell___Bacterial_spot/broken.jpg"),
        b"\xff\xd8 not a JPEG",
    )
    .expect("write");
    let out = common::lookout_command()
        .args(["dataset", "import"])
        .arg(&src)
        .arg("--into")
        .arg(&data)
        .output()
        .expect("lookout dataset import");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Imported 1 images"), "{stdout}");
    assert!(
        stdout.contains("1 skipped") && stdout.contains("broken.jpg"),
        "{stdout}"
    );
    let all = get_json(&format!("{}/api/collect?token={TOKEN}", d.base));
    assert_eq!(
        all["summary"]["labels"]["Pepper,_bell___Bacterial_spot"], 1,
        "{}",
        all["summary"]
    );

    // A reload that moves collecting to another folder: the page shows the new one, and the
    // frames seen before are collected there afresh (its own near-duplicate memory).
    let data2 = dir.path().join("dataset2");
    std::fs::write(
        dir.path().join("lookout.toml"),
        std::fs::read_to_string(dir.path().join("lookout.toml"))
            .unwrap()
            .replace(
                &format!("{:?}", data.display().to_string()),
                &format!("{:?}", data2.display().to_string()),
            ),
    )
    .expect("rewrite config");
    let reply = common::agent()
        .post(&format!("{}/api/reload", d.base))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .send("")
        .expect("POST /api/reload");
    assert_eq!(reply.status(), 200);
    let summary = get_json(&format!("{}/api/collect?token={TOKEN}", d.base));
    assert_eq!(
        summary["summary"]["dir"],
        data2.display().to_string().as_str()
    );
    assert!(
        common::wait_until(Duration::from_secs(60), || stored(&data2).len() == 5),
        "{:?}",
        stored(&data2)
    );
    // The first folder keeps what was reviewed and imported.
    assert!(data.join(new_label).join(name).is_file());
    drop(b);
}

#[test]
fn bad_collect_settings_and_import_folders_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A dataset folder that is a file: the daemon refuses to start and names it.
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").expect("write");
    let conf = dir.path().join("lookout.toml");
    std::fs::write(
        &conf,
        format!(
            "[source]\ntype = \"synthetic\"\ncount = 5\n[collect]\ndir = {:?}\n",
            file.join("sub").display().to_string()
        ),
    )
    .expect("write");
    let out = common::lookout_command()
        .args(["run", "--config"])
        .arg(&conf)
        .output()
        .expect("lookout run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[collect] dataset") && stderr.contains("not-a-folder"),
        "{stderr}"
    );

    // A bad value is named with its key by `lookout check`.
    std::fs::write(&conf, "[collect]\ndir = \"/tmp/x\"\nbelow_score = 2\n").expect("write");
    let out = common::lookout_command()
        .args(["check", "--config"])
        .arg(&conf)
        .output()
        .expect("lookout check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("collect.below_score"), "{stderr}");

    // Import: images loose in the folder need --label; an empty folder says what it expects.
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("src");
    let import = |args: &[&str]| {
        let out = common::lookout_command()
            .args(["dataset", "import"])
            .arg(&src)
            .args(args)
            .output()
            .expect("lookout dataset import");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let into = dir.path().join("into").display().to_string();
    let (code, err) = import(&["--into", &into]);
    assert_eq!(code, Some(2));
    assert!(err.contains("has no images"), "{err}");
    std::fs::write(src.join("loose.jpg"), b"x").expect("write");
    let (code, err) = import(&["--into", &into]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--label"), "{err}");
    let (code, err) = import(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--into DIR"), "{err}");
    let (code, err) = import(&["--into", &into, "--label", "../up"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot be a folder name"), "{err}");
}
