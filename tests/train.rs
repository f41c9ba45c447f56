//! `lookout train` end to end on the asset photos: NEU-DET steel defects on the MobileNetV2
//! int8 (QOperator) backbone and PlantVillage potato leaves on plant-cnn96 (fp32 and QDQ int8).
//! Each trained model reaches a stated accuracy on images it was not trained on, and
//! onnxruntime (fed the tensors lookout fed it, `classify --dump-input`) gives the same top-1 as
//! lookout on every image. Bad input gets an error naming the file or folder.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use lookout::model::preprocess::Preset;
use lookout::model::ModelConfig;
use lookout::train::{self, TrainError, TrainOptions};

fn options(backbone: PathBuf, data: &Path, out: PathBuf, cache: &Path) -> TrainOptions {
    TrainOptions {
        backbone,
        data: data.to_owned(),
        out,
        features: None,
        model: ModelConfig::default(),
        flip: false,
        validation: 0.2,
        seed: 1,
        cache: Some(cache.to_owned()),
        threads: 0,
        quantize: false,
    }
}

/// Links images `range` (by file number) of each NEU-DET class into `dir/<class>/`.
fn neu_subset(
    assets: &Path,
    dir: &Path,
    range: std::ops::RangeInclusive<u32>,
) -> Vec<(PathBuf, String)> {
    let mut images = Vec::new();
    for class in [
        "crazing",
        "inclusion",
        "patches",
        "pitted_surface",
        "rolled-in_scale",
        "scratches",
    ] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for n in range.clone() {
            let src = assets.join(format!("images/defects/{class}/{class}_{n}.jpg"));
            assert!(src.is_file(), "missing asset {}", src.display());
            let dst = dir.join(class).join(format!("{class}_{n}.jpg"));
            std::os::unix::fs::symlink(&src, &dst).unwrap();
            images.push((dst, class.to_owned()));
        }
    }
    images
}

/// lookout's top-1 labels for `images` with `model`, and the input tensors it fed, as .npy.
fn lookout_top1(model: &ModelConfig, images: &[PathBuf], npy: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let failed =
        lookout::cli::classify(model, images, 1, false, Some(npy), &mut out).expect("classify");
    assert_eq!(failed, 0, "{}", String::from_utf8_lossy(&out));
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["top"][0]["label"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// onnxruntime's top-1 labels on the same tensors.
fn onnxruntime_top1(model: &Path, npy: &Path) -> Vec<String> {
    let py = common::python_with("onnxruntime, onnx, numpy");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_ort.py");
    let out = Command::new(py)
        .arg(script)
        .arg(model)
        .arg(npy)
        .output()
        .expect("run train_ort.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], "logits");
    let labels: Vec<String> = serde_json::from_value(v["labels"].clone()).unwrap();
    if v["top_fused"] != v["top"] {
        eprintln!(
            "onnxruntime's fused int8 kernels (16-bit saturation on CPUs without VNNI) give another top-1 on some images: {} vs the ONNX definition's {}",
            v["top_fused"], v["top"]
        );
    }
    v["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| labels[i.as_u64().unwrap() as usize].clone())
        .collect()
}

fn accuracy(predicted: &[String], truth: &[String]) -> f64 {
    predicted.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
}

#[test]
fn neu_det_on_mobilenetv2_int8_generalises_and_matches_onnxruntime() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train");
    neu_subset(&assets, &data, 1..=20);
    let held_out = neu_subset(&assets, &dir.path().join("test"), 21..=30);
    let out = dir.path().join("defects.onnx");
    let cache = dir.path().join("cache");
    let mut opts = options(
        assets.join("models/mobilenetv2-12-int8.onnx"),
        &data,
        out.clone(),
        &cache,
    );
    opts.model.preprocess.preset = Some(Preset::TorchvisionImagenet);
    let mut table = Vec::new();
    let card = train::run(&opts, &mut table).expect("train");
    let table = String::from_utf8(table).unwrap();
    assert!(
        table.contains("scratches") && table.contains("validation: accuracy"),
        "{table}"
    );
    assert_eq!(card.features, "472_quantized");
    assert_eq!(card.feature_dim, 1280);
    assert_eq!(
        card.counts
            .iter()
            .map(|c| c.train + c.validation)
            .sum::<usize>(),
        120
    );
    assert!(
        card.counts.iter().all(|c| c.validation == 4),
        "{:?}",
        card.counts
    );
    assert!(
        card.validation_accuracy >= 0.9,
        "validation accuracy {}",
        card.validation_accuracy
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("defects.card.json")).unwrap())
            .unwrap();
    assert_eq!(
        written["validation_accuracy"].as_f64(),
        Some(card.validation_accuracy)
    );
    assert_eq!(written["confusion"].as_array().unwrap().len(), 6);
    assert_eq!(written["backbone_sha256"].as_str().unwrap().len(), 64);

    // The 60 held-out images: lookout's own run of the trained model, and onnxruntime's.
    let model = ModelConfig {
        preprocess: opts.model.preprocess.clone(),
        ..ModelConfig::for_path(out.clone(), None)
    };
    let images: Vec<PathBuf> = held_out.iter().map(|(p, _)| p.clone()).collect();
    let truth: Vec<String> = held_out.iter().map(|(_, c)| c.clone()).collect();
    let npy = dir.path().join("inputs.npy");
    let ours = lookout_top1(&model, &images, &npy);
    let acc = accuracy(&ours, &truth);
    assert!(acc >= 0.9, "held-out accuracy {acc}: {ours:?}");
    assert_eq!(
        onnxruntime_top1(&out, &npy),
        ours,
        "onnxruntime and lookout disagree"
    );

    // A second run takes every embedding from the cache and writes the same model.
    let first = std::fs::read(&out).unwrap();
    let again = train::run(&opts, &mut Vec::new()).expect("train again");
    assert_eq!(again.cached_embeddings, 120);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        first,
        "the same data and seed give the same model"
    );
}

#[test]
fn plant_leaves_on_fp32_and_qdq_backbones_match_onnxruntime() {
    let Some(assets) = common::assets() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train");
    let mut images = Vec::new();
    let mut truth = Vec::new();
    for class in [
        "Potato___Early_blight",
        "Potato___Late_blight",
        "Potato___healthy",
    ] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for e in std::fs::read_dir(assets.join("images/plant").join(class)).unwrap() {
            let src = e.unwrap().path();
            let dst = data.join(class).join(src.file_name().unwrap());
            std::os::unix::fs::symlink(&src, &dst).unwrap();
            images.push(dst);
            truth.push(class.to_owned());
        }
    }
    for backbone in ["plant-cnn96.onnx", "plant-cnn96-qdq-int8.onnx"] {
        let out = dir.path().join(format!("potato-{backbone}"));
        let mut opts = options(
            assets.join("models").join(backbone),
            &data,
            out.clone(),
            &dir.path().join("cache"),
        );
        opts.flip = true;
        let card = train::run(&opts, &mut Vec::new()).expect(backbone);
        assert_eq!(card.labels.len(), 3);
        assert!(
            card.features.contains("classifier.3/Relu_output_0"),
            "{}",
            card.features
        );
        assert!(
            card.validation_accuracy >= 0.75,
            "{backbone}: validation accuracy {}",
            card.validation_accuracy
        );
        let npy = dir.path().join("plant.npy");
        let ours = lookout_top1(&ModelConfig::for_path(out.clone(), None), &images, &npy);
        // Trained on most of these images: the head fits them.
        assert!(accuracy(&ours, &truth) >= 0.9, "{backbone}: {ours:?}");
        assert_eq!(
            onnxruntime_top1(&out, &npy),
            ours,
            "{backbone}: onnxruntime and lookout disagree"
        );
    }
}

fn plant_backbone() -> Option<PathBuf> {
    common::assets().map(|a| a.join("models/plant-cnn96.onnx"))
}

/// Two labels of three leaf photos each, from the plant assets.
fn small_data(assets_plant: &Path, dir: &Path) {
    for class in ["Potato___Early_blight", "Potato___healthy"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(assets_plant.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(3) {
            std::os::unix::fs::symlink(f, dir.join(class).join(f.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn bad_input_names_the_folder_or_file() {
    let Some(backbone) = plant_backbone() else {
        return;
    };
    let plant = backbone
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("images/plant");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let data = dir.path().join("data");
    small_data(&plant, &data);
    let opts = |data: &Path| options(backbone.clone(), data, dir.path().join("new.onnx"), &cache);

    // An unreadable image is skipped, counted and named.
    std::fs::write(
        data.join("Potato___healthy/broken.jpg"),
        b"\xFF\xD8not a jpeg",
    )
    .unwrap();
    let card = train::run(&opts(&data), &mut Vec::new()).expect("trains without the broken image");
    assert_eq!(card.skipped.len(), 1);
    assert!(
        card.skipped[0].file.ends_with("broken.jpg"),
        "{:?}",
        card.skipped
    );
    assert_eq!(
        card.counts
            .iter()
            .map(|c| c.train + c.validation)
            .sum::<usize>(),
        6
    );

    // A label with one usable image (and one that does not decode): it cannot be validated.
    let single = data.join("Tomato___single");
    std::fs::create_dir(&single).unwrap();
    let leaf = std::fs::read_dir(plant.join("Potato___healthy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    std::os::unix::fs::symlink(&leaf, single.join("leaf.jpg")).unwrap();
    std::fs::write(single.join("broken.jpg"), b"\xFF\xD8not a jpeg").unwrap();
    let e = train::run(&opts(&data), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(e, TrainError::OneUsableImage { count: 2, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("Tomato___single") && e.to_string().contains("at least 2"),
        "{e}"
    );
    std::fs::remove_dir_all(&single).unwrap();

    // An empty label folder.
    std::fs::create_dir(data.join("Tomato___empty")).unwrap();
    let e = train::run(&opts(&data), &mut Vec::new()).unwrap_err();
    assert!(matches!(e, TrainError::EmptyClass { .. }), "{e}");
    assert!(e.to_string().contains("Tomato___empty"), "{e}");
    std::fs::remove_dir(data.join("Tomato___empty")).unwrap();

    // One label only.
    let one = dir.path().join("one");
    std::fs::create_dir_all(one.join("only")).unwrap();
    std::fs::copy(
        backbone.parent().unwrap().join("plant15.labels.txt"),
        one.join("only/x.png"),
    )
    .unwrap();
    let e = train::run(&opts(&one), &mut Vec::new()).unwrap_err();
    assert!(matches!(e, TrainError::Classes { found: 1, .. }), "{e}");
    assert!(
        e.to_string().contains("one") && e.to_string().contains("at least two"),
        "{e}"
    );

    // A missing data folder.
    let e = train::run(&opts(&dir.path().join("nowhere")), &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("nowhere"), "{e}");
}

#[test]
fn a_backbone_without_a_classifier_asks_for_features() {
    let Some(backbone) = plant_backbone() else {
        return;
    };
    let plant = backbone
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("images/plant");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_data(&plant, &data);
    // plant-cnn96 cut after its convolutions: it ends in GlobalAveragePool + Flatten.
    let bytes = std::fs::read(&backbone).unwrap();
    let proto = train::graph::decode(&bytes, &backbone).unwrap();
    let features = train::graph::find_features(
        proto.graph.as_ref().unwrap(),
        Some("/features/features.16/GlobalAveragePool"),
        &backbone,
    )
    .unwrap();
    let headless = dir.path().join("headless.onnx");
    std::fs::write(
        &headless,
        train::graph::encode(&train::graph::cut(&proto, &features)),
    )
    .unwrap();

    let mut opts = options(
        headless.clone(),
        &data,
        dir.path().join("new.onnx"),
        &dir.path().join("cache"),
    );
    let e = train::run(&opts, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, TrainError::NoClassifier { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("headless.onnx")
            && msg.contains("--features")
            && msg.contains("GlobalAveragePool"),
        "{msg}"
    );

    // Named, the same graph trains.
    opts.features = Some("/features/features.16/GlobalAveragePool_output_0".into());
    let card = train::run(&opts, &mut Vec::new()).expect("train with --features");
    assert_eq!(card.features_found_by, "--features");
    let e = {
        opts.features = Some("no_such_node".into());
        train::run(&opts, &mut Vec::new()).unwrap_err()
    };
    assert!(e.to_string().contains("no_such_node"), "{e}");
}

#[test]
fn train_quantize_is_refused_with_what_to_run_instead() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::lookout_command()
        .args(["train", "--backbone", "b.onnx", "--data", "d", "--out"])
        .arg(dir.path().join("n.onnx"))
        .arg("--quantize")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--quantize") && err.contains("lookout quantize --model NEW.onnx"),
        "{err}"
    );
    let help = common::lookout_command()
        .args(["train", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Not wired yet"));
}

#[test]
fn the_status_api_carries_the_accuracy_of_the_card_beside_the_model() {
    let Some(backbone) = plant_backbone() else {
        return;
    };
    let plant = backbone
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("images/plant");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    small_data(&plant, &data);
    let out = dir.path().join("leaves.onnx");
    let card = train::run(
        &options(backbone, &data, out.clone(), &dir.path().join("cache")),
        &mut Vec::new(),
    )
    .expect("train");
    let source = format!(
        "[model]\npath = {:?}\n[source]\ntype = \"synthetic\"\nfps = 5\n",
        out.display().to_string()
    );
    let d = common::Daemon::start(dir.path(), &source, "", &[]);
    let status = common::get_json(&format!("{}/api/status", d.base));
    assert_eq!(
        status["info"]["model_card_accuracy"].as_f64(),
        Some(card.validation_accuracy),
        "{status}"
    );
    assert_eq!(status["info"]["labels"][1], "Potato___healthy");
    // The live page shows it beside the model.
    let dom = common::headless(&dir.path().join("chromium"), &d.base, &["--dump-dom"]);
    let shown = format!(
        "card: {:.1}% validation accuracy",
        100.0 * card.validation_accuracy
    );
    assert!(dom.contains(&shown), "{shown:?} on the page:\n{dom}");
}
