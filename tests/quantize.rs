//! `lookout quantize` as a user runs it: the PlantVillage CNN (fp32, from `LOOKOUT_ASSETS`)
//! quantized from real leaf photos; the result checked by `lookout check` (every convolution
//! on lookout's 8-bit kernels), by onnxruntime in Python (it loads, and its top-1 and outputs
//! agree with lookout's run of the same file), and by its report. Bad input gets a clear error:
//! a folder without images, images that do not decode (skipped and counted), a model that is
//! already quantized, a model without a convolution.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn plant(assets: &Path) -> (PathBuf, PathBuf) {
    (
        assets.join("models/plant-cnn96.onnx"),
        assets.join("models/plant15.labels.txt"),
    )
}

/// `DIR/<class>/*.jpg` linked from the asset photos of three potato classes.
fn leaf_folder(assets: &Path, dir: &Path) -> usize {
    let mut n = 0;
    for class in [
        "Potato___Early_blight",
        "Potato___Late_blight",
        "Potato___healthy",
    ] {
        std::fs::create_dir_all(dir.join(class)).expect("class dir");
        for e in std::fs::read_dir(assets.join("images/plant").join(class)).expect("photos") {
            let p = e.expect("entry").path();
            std::os::unix::fs::symlink(&p, dir.join(class).join(p.file_name().unwrap()))
                .expect("link");
            n += 1;
        }
    }
    n
}

fn quantize(args: &[&str]) -> (Option<i32>, String, String) {
    let out = common::lookout_command()
        .arg("quantize")
        .args(args)
        .output()
        .expect("lookout quantize");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plant_cnn_quantized_from_leaf_photos_runs_on_8_bit_kernels_and_agrees_with_onnxruntime() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let photos = dir.path().join("photos");
    let total = leaf_folder(&assets, &photos);
    let (model, labels) = plant(&assets);
    let out = dir.path().join("plant-int8.onnx");
    let s = |p: &Path| p.display().to_string();
    let (code, stdout, stderr) = quantize(&[
        "--model",
        &s(&model),
        "--labels",
        &s(&labels),
        "--calibrate",
        &s(&photos),
        "--out",
        &s(&out),
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("top-1 agreement"), "{stdout}");

    // The report beside the model.
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("plant-int8.quant.json")).expect("report"),
    )
    .expect("JSON");
    let held = report["held_out_images"].as_u64().expect("held out");
    let calib = report["calibration_images"].as_u64().expect("calibration");
    assert_eq!(held + calib, total as u64, "{report}");
    assert!(held >= 10, "{report}");
    assert_eq!(report["quantized_convs"], 4, "{report}");
    assert_eq!(report["per_channel"], true, "{report}");
    let agreement = report["top1_agreement"].as_f64().expect("agreement");
    // A broken quantization agrees on about one image in fifteen; the target is 98 %.
    assert!(agreement >= 0.9, "{report}");
    assert!(
        report["int8_accuracy"].as_f64().is_some(),
        "a labelled folder gives accuracy: {report}"
    );
    let float_ops: Vec<&str> = report["float_ops"]
        .as_array()
        .expect("float ops")
        .iter()
        .map(|o| o[0].as_str().unwrap())
        .collect();
    assert!(
        float_ops.contains(&"Gemm") && float_ops.contains(&"MaxPool"),
        "{report}"
    );
    assert!(
        stdout.contains("left in float:") && stdout.contains("Gemmx2"),
        "{stdout}"
    );

    // lookout runs every convolution on its 8-bit kernels.
    let check = common::lookout_command()
        .args(["check", "--model"])
        .arg(&out)
        .output()
        .expect("lookout check");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(text.contains("int8 QDQ, per-channel"), "{text}");
    assert!(
        text.contains(
            "DequantizeLinear -> Conv -> QuantizeLinearx4 -> QLinearConv (integer arithmetic)"
        ),
        "{text}"
    );
    assert!(
        !text.contains("float kernel"),
        "a convolution left in float:\n{text}"
    );

    // onnxruntime loads it and computes the same top-1 and outputs on 12 photos.
    let images: Vec<PathBuf> = [
        "Potato___Early_blight",
        "Potato___Late_blight",
        "Potato___healthy",
    ]
    .iter()
    .flat_map(|c| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(photos.join(c))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v.into_iter().take(4)
    })
    .collect();
    let npy = dir.path().join("inputs.npy");
    let classify = common::lookout_command()
        .args(["classify", "--model"])
        .arg(&out)
        .arg("--labels")
        .arg(&labels)
        .arg("--raw")
        .arg("--dump-input")
        .arg(&npy)
        .args(&images)
        .output()
        .expect("lookout classify");
    assert!(
        classify.status.success(),
        "{}",
        String::from_utf8_lossy(&classify.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&classify.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), images.len());
    let py = common::python_with("onnx, onnxruntime, numpy");
    let ort = std::process::Command::new(py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quantize_ort.py"))
        .arg(&out)
        .arg(&npy)
        .output()
        .expect("quantize_ort.py");
    assert!(
        ort.status.success(),
        "{}",
        String::from_utf8_lossy(&ort.stderr)
    );
    let ort: Value = serde_json::from_slice(&ort.stdout).expect("JSON");
    let ops: Vec<&str> = ort["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(
        ops.contains(&"QuantizeLinear") && ops.contains(&"DequantizeLinear"),
        "{ops:?}"
    );
    assert!(!ops.contains(&"BatchNormalization"), "{ops:?}");
    let labels_list: Vec<String> = std::fs::read_to_string(&labels)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    for (i, line) in lines.iter().enumerate() {
        let ours = line["top"][0]["label"].as_str().expect("label");
        let theirs = &labels_list[ort["top"][i].as_u64().unwrap() as usize];
        assert_eq!(ours, theirs, "image {}: {line}", images[i].display());
        let raw: Vec<f64> = line["raw"]
            .as_array()
            .expect("raw")
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let theirs: Vec<f64> = ort["outputs"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let worst = raw
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let span = theirs.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        // Both compute the same integers; the float parts (pooling, the float head) differ by
        // rounding and by a requantization step at most.
        assert!(
            worst <= 0.05 * span.max(1.0),
            "image {i}: max |diff| {worst} of {span}"
        );
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (model, labels) = plant(&assets);
    let s = |p: &Path| p.display().to_string();
    let out = dir.path().join("o.onnx");

    // A folder without images.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, err) = quantize(&[
        "--model",
        &s(&model),
        "--calibrate",
        &s(&empty),
        "--out",
        &s(&out),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("has no images") && err.contains("empty"),
        "{err}"
    );

    // Images that do not decode are skipped and counted; the rest calibrate.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    let mut photos: Vec<PathBuf> = std::fs::read_dir(assets.join("images/plant/Potato___healthy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    for p in photos.iter().take(6) {
        std::os::unix::fs::symlink(p, mixed.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(mixed.join("broken-1.jpg"), b"\xff\xd8 not a JPEG").unwrap();
    std::fs::write(mixed.join("broken-2.png"), b"not a PNG").unwrap();
    let (code, stdout, err) = quantize(&[
        "--model",
        &s(&model),
        "--labels",
        &s(&labels),
        "--calibrate",
        &s(&mixed),
        "--out",
        &s(&out),
    ]);
    assert_eq!(code, Some(0), "{stdout}{err}");
    assert!(
        stdout.contains("skipped 2 images that do not decode"),
        "{stdout}"
    );
    assert!(
        stdout.contains("broken-1.jpg") && stdout.contains("broken-2.png"),
        "{stdout}"
    );

    // Only images that do not decode.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for n in ["a.jpg", "b.jpg", "c.jpg"] {
        std::fs::write(broken.join(n), b"nope").unwrap();
    }
    let (code, _, err) = quantize(&[
        "--model",
        &s(&model),
        "--calibrate",
        &s(&broken),
        "--out",
        &s(&out),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("none of the calibration images could be decoded"),
        "{err}"
    );

    // A model that is already quantized.
    let int8 = assets.join("models/plant-cnn96-qdq-int8.onnx");
    let (code, _, err) = quantize(&[
        "--model",
        &s(&int8),
        "--calibrate",
        &s(&mixed),
        "--out",
        &s(&out),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("already quantized") && err.contains("QuantizeLinear"),
        "{err}"
    );

    // Not an ONNX file.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"this is not protobuf \xff\xff\xff").unwrap();
    let (code, _, err) = quantize(&[
        "--model",
        &s(&junk),
        "--calibrate",
        &s(&mixed),
        "--out",
        &s(&out),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("junk.onnx"), "{err}");
}
