//! Each preset and each resize/pad/crop option against the training ecosystem's own
//! preprocessing, tensor for tensor: tests/fixtures/preprocess_refs.py transcribes
//! torchvision's ImageNet transform, Ultralytics' `classify_transforms` and `LetterBox`,
//! PaddleOCR's `resize_norm_img`, and the keep-aspect, pad and crop-rounding variants, with
//! Pillow, OpenCV and NumPy (pinned in requirements.txt), on photos from the test assets cut
//! to sizes that exercise each case (odd margins, wide and tall text-line shapes). lookout's
//! tensor must equal the reference exactly, float for float.

mod common;

use std::path::PathBuf;
use std::process::Command;

use lookout::frame::RgbBuf;
use lookout::model::preprocess::Preprocessor;
use lookout::model::{InputSpec, InputType, Layout, PreprocessConfig};
use lookout::problems::Problems;

#[derive(serde::Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    src: String,
    w: u32,
    h: u32,
    config: serde_json::Value,
    shape: Vec<usize>,
    r#ref: String,
}

#[test]
fn presets_and_resize_options_match_the_ecosystems_own_preprocessing() {
    let Some(assets) = common::assets() else {
        return;
    };
    let py = common::python_with("cv2, numpy, PIL");
    let dir = tempfile::tempdir().expect("temp dir");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess_refs.py");
    let out = Command::new(py)
        .arg(script)
        .arg(&assets)
        .arg(dir.path())
        .output()
        .expect("run preprocess_refs.py");
    assert!(
        out.status.success(),
        "preprocess_refs.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.path().join("manifest.json")).expect("manifest");
    let m: Manifest = serde_json::from_str(&text).expect("manifest json");
    let mut failures = Vec::new();
    for c in &m.cases {
        let config: PreprocessConfig =
            serde_json::from_value(c.config.clone()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let mut problems = Problems::default();
        config.validate("model.preprocess", &mut problems);
        assert!(problems.is_empty(), "{}: {problems:?}", c.name);
        let input = InputSpec {
            name: "x".into(),
            layout: Layout::Nchw,
            dtype: InputType::F32,
            batch: 1,
            has_batch_axis: true,
            channels: c.shape[0],
            height: c.shape[1],
            width: c.shape[2],
        };
        let spec = config
            .resolve(false, &input)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let rgb = RgbBuf {
            width: c.w,
            height: c.h,
            data: std::fs::read(dir.path().join(&c.src)).expect("source"),
        };
        let tensor = Preprocessor::new(spec, input).run(&rgb);
        let view = tensor.to_plain_array_view::<f32>().expect("f32 tensor");
        let got: Vec<f32> = view.iter().copied().collect();
        let want: Vec<f32> = std::fs::read(dir.path().join(&c.r#ref))
            .expect("reference")
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got.len(), want.len(), "{}", c.name);
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        if differ > 0 {
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            failures.push(format!(
                "{}: {differ} of {} values differ, by up to {worst}",
                c.name,
                got.len()
            ));
        }
    }
    assert!(m.cases.len() >= 50, "only {} cases", m.cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{} cases equal", m.cases.len());
}
