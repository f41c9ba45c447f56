//! Model agreement with onnxruntime on real third-party models and photos
//! (`LOOKOUT_ASSETS/reference/*.json`), through the same decode + preprocess + tract path the
//! daemon uses, and the `classify` command's JSON contract.

mod common;

use std::path::Path;
use std::sync::Arc;

use lookout::frame::{Frame, PixelFormat};
use lookout::model::{Model, ModelConfig, PreprocessConfig, ResizeMode};

#[derive(serde::Deserialize)]
struct Reference {
    images: Vec<RefImage>,
}

#[derive(serde::Deserialize)]
struct RefImage {
    image: String,
    raw_output: Vec<f32>,
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .expect("non-empty")
}

/// Scale of the DequantizeLinear that produces the graph output: one quantization step of the
/// output, the finest difference two int8 engines can show there.
fn output_step(model: &Path) -> f32 {
    use tract_onnx::prelude::Framework;
    let proto = tract_onnx::onnx()
        .proto_model_for_path(model)
        .expect("readable model");
    let g = proto.graph.expect("graph");
    let out = &g.output[0].name;
    let node = g
        .node
        .iter()
        .find(|n| n.output.contains(out) && n.op_type == "DequantizeLinear")
        .expect("output DequantizeLinear");
    let init = g
        .initializer
        .iter()
        .find(|t| t.name == node.input[1])
        .expect("scale initializer");
    if !init.float_data.is_empty() {
        init.float_data[0]
    } else {
        f32::from_le_bytes(init.raw_data[..4].try_into().expect("4 bytes"))
    }
}

/// Runs every reference image through the model; returns (images, max |raw - ref|, top-1 agreements).
fn compare(assets: &Path, case: &str, model: &str) -> (usize, f32, usize) {
    let reference: Reference = serde_json::from_str(
        &std::fs::read_to_string(assets.join(format!("reference/{case}.json")))
            .expect("reference file"),
    )
    .expect("reference JSON");
    let cfg = ModelConfig {
        path: Some(assets.join("models").join(model)),
        labels: Some(assets.join("models/plant15.labels.txt")),
        preprocess: PreprocessConfig {
            resize: Some(ResizeMode::Stretch),
            ..Default::default()
        },
        ..Default::default()
    };
    let model = Arc::new(Model::load(&cfg).expect("model loads"));
    let mut session = model.session().expect("session");
    let mut max_diff = 0f32;
    let mut agree = 0;
    for r in &reference.images {
        let data = std::fs::read(assets.join(&r.image)).expect("image");
        let scores = session
            .classify_frame(&Frame::new(PixelFormat::Mjpeg, 0, 0, data))
            .expect("classifies");
        assert_eq!(scores.raw.len(), r.raw_output.len());
        for (a, b) in scores.raw.iter().zip(&r.raw_output) {
            max_diff = max_diff.max((a - b).abs());
        }
        if argmax(&scores.raw) == argmax(&r.raw_output) {
            agree += 1;
        } else {
            eprintln!("{case}: top-1 differs on {}", r.image);
        }
    }
    (reference.images.len(), max_diff, agree)
}

#[test]
fn plant_cnn96_fp32_matches_onnxruntime() {
    let Some(assets) = common::assets() else {
        return;
    };
    let (n, max_diff, agree) = compare(&assets, "plant-cnn96", "plant-cnn96.onnx");
    eprintln!(
        "plant-cnn96 fp32: {n} images, max |raw diff| {max_diff:.2e}, top-1 agreement {agree}/{n}"
    );
    assert_eq!(n, 63);
    assert_eq!(agree, n, "top-1 must equal onnxruntime's on every image");
    assert!(max_diff <= 1e-3, "raw outputs differ by {max_diff} > 1e-3");
}

#[test]
fn plant_cnn96_qdq_int8_matches_onnxruntime_within_one_output_step() {
    let Some(assets) = common::assets() else {
        return;
    };
    let model = "plant-cnn96-qdq-int8.onnx";
    let step = output_step(&assets.join("models").join(model));
    let (n, max_diff, agree) = compare(&assets, "plant-cnn96-qdq-int8", model);
    eprintln!("plant-cnn96 QDQ int8: {n} images, max |raw diff| {max_diff:.4} (output step {step:.4}), top-1 {agree}/{n}");
    assert_eq!(n, 63);
    assert_eq!(agree, n, "top-1 must equal onnxruntime's on every image");
    assert!(
        max_diff <= step * 1.001,
        "raw outputs differ by {max_diff} > one output quantization step {step}"
    );
}

#[test]
fn an_untranslated_contrib_operator_is_named_with_its_node_and_a_remedy() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/contrib_unsupported.onnx");
    let err = Model::load(&ModelConfig::for_path(path, None))
        .expect_err("QLinearReduceMean is not translated");
    let msg = err.to_string();
    assert!(
        msg.contains("QLinearReduceMean") && msg.contains("com.microsoft"),
        "{msg}"
    );
    assert!(msg.contains("at node \"pool_q\""), "names the node: {msg}");
    assert!(
        msg.contains("QLinearAdd"),
        "lists what is translated: {msg}"
    );
    assert!(msg.contains("QuantFormat.QDQ"), "says what to do: {msg}");
}

#[test]
fn classify_command_prints_the_json_contract() {
    let Some(assets) = common::assets() else {
        return;
    };
    let mut images: Vec<_> = ["Tomato___healthy", "Potato___Early_blight"]
        .iter()
        .map(|d| {
            std::fs::read_dir(assets.join("images/plant").join(d))
                .expect("dir")
                .next()
                .expect("an image")
                .expect("entry")
                .path()
        })
        .collect();
    images.sort();
    let bad = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(bad.path(), b"this is not an image").expect("write");
    let out = common::lookout_command()
        .arg("classify")
        .arg("--model")
        .arg(assets.join("models/plant-cnn96.onnx"))
        .arg("--labels")
        .arg(assets.join("models/plant15.labels.txt"))
        .args(["--top-k", "2", "--raw"])
        .arg(&images[0])
        .arg(bad.path())
        .arg(&images[1])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad image makes the exit code non-zero"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "one line per image, the bad one included");
    for i in [0, 2] {
        let l = &lines[i];
        assert!(
            l["image"].as_str().expect("image").ends_with(".jpg")
                || l["image"].as_str().expect("image").contains('.')
        );
        let top = l["top"].as_array().expect("top");
        assert_eq!(top.len(), 2);
        assert!(
            top[0]["index"].is_u64() && top[0]["label"].is_string() && top[0]["score"].is_f64()
        );
        assert!(top[0]["score"].as_f64() >= top[1]["score"].as_f64());
        assert!(l["infer_ms"].as_f64().expect("infer_ms") > 0.0);
        assert_eq!(l["raw"].as_array().expect("raw").len(), 15);
    }
    assert!(
        lines[1]["error"]
            .as_str()
            .expect("error line")
            .contains("not a readable image"),
        "{}",
        lines[1]
    );
}
