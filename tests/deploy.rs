//! Deploying a model over HTTP (`POST /api/model`) to a running daemon, with real models: the
//! PlantVillage CNN from `LOOKOUT_ASSETS` runs first; a head trained on its features by
//! `lookout train` (on a few leaf photos) is uploaded and goes live, with its card's accuracy
//! in `/api/status`. Uploads without the token, that are not ONNX, that do not load, or whose
//! labels do not fit the rules change nothing (the file on disk included). Every wait is
//! bounded; nothing asserts on speed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{agent, get, get_json, wait_until, Daemon};
use lookout::model::ModelConfig;
use lookout::train::{self, TrainOptions};

const TOKEN_ENV: &str = "LOOKOUT_TEST_DEPLOY_TOKEN";
const TOKEN: &str = "d3ploy";

/// `POST /api/model?name=...` with `body`; the status and the answer's text.
fn post_model(d: &Daemon, name: Option<&str>, body: &[u8], token: Option<&str>) -> (u16, String) {
    let url = match name {
        Some(n) => format!("{}/api/model?name={n}", d.base),
        None => format!("{}/api/model", d.base),
    };
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build(),
    );
    let mut req = agent.post(&url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.send(body).expect("request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// The daemon's config: the model file `model`, optionally a rule on `class_3`, the leaf photos
/// in a loop.
fn body(model: &Path, leaves: &Path, rule: bool) -> String {
    let rule = if rule {
        "[[rules]]\nname = \"blight\"\nlabels = [\"class_3\"]\nmin_score = 0.9\n"
    } else {
        ""
    };
    format!(
        r#"
[model]
path = {model:?}
[model.preprocess]
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
[source]
type = "files"
path = {leaves:?}
fps = 10
loop = true
{rule}
"#,
        model = model.display().to_string(),
        leaves = leaves.display().to_string(),
    )
}

/// A head on plant-cnn96's features for two potato labels, trained on three photos of each.
fn trained_model(assets: &Path, dir: &Path) -> (PathBuf, f64) {
    let data = dir.join("data");
    for class in ["Potato___Early_blight", "Potato___healthy"] {
        std::fs::create_dir_all(data.join(class)).expect("mkdir");
        let mut files: Vec<PathBuf> = std::fs::read_dir(assets.join("images/plant").join(class))
            .expect("leaf folder")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for f in files.iter().take(3) {
            std::os::unix::fs::symlink(f, data.join(class).join(f.file_name().expect("name")))
                .expect("link");
        }
    }
    let out = dir.join("trained.onnx");
    let card = train::run(
        &TrainOptions {
            backbone: assets.join("models/plant-cnn96.onnx"),
            data,
            out: out.clone(),
            features: None,
            model: ModelConfig::default(),
            flip: false,
            validation: 0.34,
            seed: 1,
            cache: None,
            threads: 0,
            quantize: false,
        },
        &mut Vec::new(),
    )
    .expect("trains");
    (out, card.validation_accuracy)
}

fn reload(d: &Daemon) -> u16 {
    let resp = agent()
        .post(&format!("{}/api/reload", d.base))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .send_empty()
        .expect("request");
    resp.status().as_u16()
}

#[test]
fn a_model_posted_with_the_token_goes_live_and_a_refused_one_changes_nothing() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (trained, accuracy) = trained_model(&assets, dir.path());
    let original = assets.join("models/plant-cnn96.onnx");
    let model = dir.path().join("m.onnx");
    std::os::unix::fs::symlink(&original, &model).expect("link");
    let leaves = assets.join("images/plant");
    let http = format!("token_env = \"{TOKEN_ENV}\"");
    let d = Daemon::start(
        dir.path(),
        &body(&model, &leaves, true),
        &http,
        &[(TOKEN_ENV, TOKEN)],
    );
    let status = || get_json(&format!("{}/api/status?token={TOKEN}", d.base));
    let unchanged = |why: &str| {
        assert_eq!(
            std::fs::read_link(&model).ok().as_deref(),
            Some(original.as_path()),
            "{why}: the model file changed"
        );
        assert!(
            !dir.path().join("m.previous.onnx").exists(),
            "{why}: a previous file appeared"
        );
        assert_eq!(status()["info"]["labels"][3], "class_3", "{why}");
    };
    let trained_bytes = std::fs::read(&trained).expect("trained model");

    // Refused before anything is read or changed.
    let (code, text) = post_model(&d, None, &trained_bytes, None);
    assert_eq!(code, 401, "{text}");
    let (code, text) = post_model(&d, None, &trained_bytes, Some("wrong"));
    assert_eq!(code, 401, "{text}");
    assert_eq!(
        get(&format!("{}/api/model?token={TOKEN}", d.base), None).0,
        405
    );
    unchanged("no token");
    let (code, text) = post_model(&d, None, b"\x08\x07not a model\xff\xff", Some(TOKEN));
    assert_eq!(code, 422, "{text}");
    assert!(text.contains("not an ONNX model"), "{text}");
    unchanged("not ONNX");
    let (code, text) = post_model(&d, Some("spare"), &trained_bytes, Some(TOKEN));
    assert_eq!(code, 422, "{text}");
    assert!(
        text.contains("no model named \"spare\"") && text.contains("default"),
        "{text}"
    );
    // Half a model file (an upload cut short).
    let plant = std::fs::read(&original).expect("model");
    let (code, text) = post_model(&d, None, &plant[..plant.len() / 2], Some(TOKEN));
    assert_eq!(code, 422, "{text}");
    unchanged("a truncated model");
    // The trained model loads, but the rule's label class_3 is not one of its labels: the
    // reload refuses it and the previous file is put back.
    let (code, text) = post_model(&d, None, &trained_bytes, Some(TOKEN));
    assert_eq!(code, 422, "{text}");
    assert!(
        text.contains("class_3") && text.contains("back in place"),
        "{text}"
    );
    unchanged("labels that do not fit the rules");

    // Without the rule, the trained model goes live with its labels and card accuracy.
    std::fs::write(
        dir.path().join("lookout.toml"),
        std::fs::read_to_string(dir.path().join("lookout.toml"))
            .expect("config")
            .replace(&body(&model, &leaves, true), &body(&model, &leaves, false)),
    )
    .expect("rewrite config");
    assert_eq!(reload(&d), 200);
    let (code, text) = post_model(&d, Some("default"), &trained_bytes, Some(TOKEN));
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("Model installed at"), "{text}");
    let s = status();
    assert_eq!(
        s["info"]["labels"],
        serde_json::json!(["Potato___Early_blight", "Potato___healthy"]),
        "{s}"
    );
    let shown = s["info"]["model_card_accuracy"]
        .as_f64()
        .expect("card accuracy");
    assert!((shown - accuracy).abs() < 1e-9, "{shown} vs {accuracy}");
    assert_eq!(
        std::fs::read(&model).expect("installed"),
        trained_bytes,
        "the file on disk is the upload"
    );
    assert_eq!(
        std::fs::read_link(dir.path().join("m.previous.onnx")).ok(),
        Some(original.clone()),
        "the previous file is kept beside"
    );
    // The new model classifies the leaves: its labels appear in the live view.
    let live_labels = wait_until(Duration::from_secs(60), || {
        let live = get_json(&format!("{}/api/live?token={TOKEN}", d.base));
        live["top"][0]["label"]
            .as_str()
            .is_some_and(|l| l.starts_with("Potato___"))
    });
    assert!(live_labels, "{}", common::log_of(dir.path()));
}
