//! A third-party model end to end with a non-Pillow preset: PaddleOCR's text-direction
//! classifier (`ch_ppocr_mobile_v2.0_cls_infer.onnx`, shipped in the rapidocr-onnxruntime wheel,
//! which scripts/test installs into .venv without its dependencies; see requirements.txt) run by
//! `lookout classify` with `preset = "paddle-cls"`, against onnxruntime fed by PaddleOCR's own
//! preprocessing (tests/fixtures/paddle_cls_refs.py) on 24 rendered text lines, upright and
//! turned 180 degrees. Also: `--dump-input` is read back with NumPy and equals the reference
//! tensors, and `check` reports the model's final Softmax as the reason for "probabilities".

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(serde::Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    image: String,
    turned: bool,
    output: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct Line {
    image: String,
    top: Vec<Top>,
    raw: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct Top {
    label: String,
}

/// The classifier inside the installed rapidocr-onnxruntime package.
fn model(py: &Path) -> PathBuf {
    let out = Command::new(py)
        .args([
            "-c",
            "import importlib.util, os; s = importlib.util.find_spec('rapidocr_onnxruntime'); \
             print(os.path.join(os.path.dirname(s.origin), 'models', 'ch_ppocr_mobile_v2.0_cls_infer.onnx') if s else '')",
        ])
        .output()
        .expect("run python");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.is_file(),
        "PaddleOCR's classifier not found in {}'s rapidocr_onnxruntime package: run scripts/test (it installs rapidocr-onnxruntime, pinned in requirements.txt, with --no-deps)",
        py.display()
    );
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run lookout");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn paddle_text_direction_classifier_agrees_with_onnxruntime_on_paddle_preprocessing() {
    let py = common::python_with("cv2, numpy, PIL, onnxruntime");
    let model = model(&py);
    let dir = tempfile::tempdir().expect("temp dir");
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let out = Command::new(&py)
        .arg(fixtures.join("paddle_cls_refs.py"))
        .arg(&model)
        .arg(dir.path())
        .output()
        .expect("run paddle_cls_refs.py");
    assert!(
        out.status.success(),
        "paddle_cls_refs.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Manifest = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    assert_eq!(m.cases.len(), 24);

    // PaddleOCR's label_list for this model (rapidocr's config.yaml); the model has no metadata.
    std::fs::write(dir.path().join("labels.txt"), "0\n180\n").expect("labels");
    let config = dir.path().join("paddle.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\npath = {:?}\nlabels = {:?}\ninput_shape = [1, 3, 48, 192]\n\n[model.preprocess]\npreset = \"paddle-cls\"\n",
            model.to_str().expect("utf8 path"),
            dir.path().join("labels.txt").to_str().expect("utf8 path")
        ),
    )
    .expect("config");

    let checked = run(common::lookout_command()
        .args(["check", "--config"])
        .arg(&config));
    assert!(
        checked.contains("Probabilities: the graph ends in Softmax node \"Softmax@0\""),
        "{checked}"
    );
    assert!(checked.contains("resize FitHeight"), "{checked}");

    let dump = dir.path().join("fed.npy");
    let text = run(common::lookout_command()
        .args(["classify", "--raw", "--top-k", "2", "--config"])
        .arg(&config)
        .arg("--dump-input")
        .arg(&dump)
        .args(m.cases.iter().map(|c| &c.image)));
    let lines: Vec<Line> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), m.cases.len());
    let (mut worst, mut right) = (0f32, 0);
    for (line, case) in lines.iter().zip(&m.cases) {
        assert_eq!(line.image, case.image);
        assert_eq!(line.raw.len(), 2);
        for (a, b) in line.raw.iter().zip(&case.output) {
            worst = worst.max((a - b).abs());
        }
        let want = if case.output[1] > case.output[0] {
            "180"
        } else {
            "0"
        };
        assert_eq!(
            line.top[0].label, want,
            "{}: {:?} vs {:?}",
            case.image, line.raw, case.output
        );
        right += usize::from((want == "180") == case.turned);
    }
    eprintln!(
        "lookout vs onnxruntime: max |diff| {worst:e} over {} lines; orientation right on {right} of {}",
        lines.len(),
        lines.len()
    );
    assert!(
        worst <= 1e-4,
        "outputs differ from onnxruntime's by {worst}"
    );

    // The dumped tensors, read by NumPy, are PaddleOCR's preprocessing exactly.
    let compare = format!(
        "import numpy as np, sys\n\
         d = np.load({dump:?})\n\
         r = np.concatenate([np.load({dir:?} + f'/input_{{i}}.npy') for i in range({n})])\n\
         assert d.dtype == np.float32 and d.shape == r.shape == ({n}, 3, 48, 192), (d.dtype, d.shape, r.shape)\n\
         print('max', float(np.abs(d - r).max()), 'equal', bool((d == r).all()))\n",
        dump = dump.to_str().expect("utf8 path"),
        dir = dir.path().to_str().expect("utf8 path"),
        n = m.cases.len()
    );
    let out = Command::new(&py)
        .args(["-c", &compare])
        .output()
        .expect("run numpy");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("equal True"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
