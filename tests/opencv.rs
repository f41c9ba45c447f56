//! lookout's OpenCV resampler against `cv2.resize` itself (opencv-python-headless, pinned in
//! requirements.txt; tests/fixtures/cv_resize.py): real photos from the test assets, RGB and
//! grey, at source sizes 640x480, 333x251, 448x448 and 61x47, resized down and up (224x224,
//! odd sizes, exact halves, mixed up/down) with every interpolation. INTER_LINEAR, INTER_AREA and
//! INTER_NEAREST must be equal byte for byte, INTER_CUBIC and INTER_LANCZOS4 within one grey
//! level.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use lookout::model::resample::opencv::{resize, CvScratch, Interpolation};

#[derive(serde::Deserialize)]
struct Manifest {
    opencv: String,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    photo: String,
    src: String,
    sw: usize,
    sh: usize,
    cn: usize,
    dw: usize,
    dh: usize,
    mode: String,
    dst: String,
}

/// The references, made once for all the tests of this file (None: assets skipped).
fn references() -> Option<&'static (tempfile::TempDir, Manifest)> {
    static REFS: OnceLock<Option<(tempfile::TempDir, Manifest)>> = OnceLock::new();
    REFS.get_or_init(|| {
        let assets = common::assets()?;
        let py = common::python_with("cv2, numpy");
        let dir = tempfile::tempdir().expect("temp dir");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cv_resize.py");
        let out = Command::new(py)
            .arg(script)
            .arg(&assets)
            .arg(dir.path())
            .output()
            .expect("run cv_resize.py");
        assert!(
            out.status.success(),
            "cv_resize.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.path().join("manifest.json")).expect("manifest");
        let m: Manifest = serde_json::from_str(&text).expect("manifest json");
        Some((dir, m))
    })
    .as_ref()
}

/// Resizes every case of `mode` and returns (cases, worst difference, differing bytes, bytes).
fn compare(mode: &str, interp: Interpolation) -> Option<(usize, u8, usize, usize)> {
    let (dir, m) = references()?;
    let mut scratch = CvScratch::default();
    let (mut cases, mut worst, mut differing, mut total) = (0, 0u8, 0, 0);
    for c in m.cases.iter().filter(|c| c.mode == mode) {
        let src = std::fs::read(dir.path().join(&c.src)).expect("source");
        let want = std::fs::read(dir.path().join(&c.dst)).expect("reference");
        assert_eq!(src.len(), c.sw * c.sh * c.cn);
        assert_eq!(want.len(), c.dw * c.dh * c.cn);
        let mut got = vec![0u8; want.len()];
        resize(
            &src,
            c.sw,
            c.sh,
            c.cn,
            &mut got,
            c.dw,
            c.dh,
            interp,
            &mut scratch,
        );
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        let n = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        if diff > worst {
            eprintln!(
                "{mode}: {} {}x{}x{} -> {}x{}: max diff {diff}, {n} of {} bytes differ (OpenCV {})",
                c.photo,
                c.sw,
                c.sh,
                c.cn,
                c.dw,
                c.dh,
                got.len(),
                m.opencv
            );
        }
        worst = worst.max(diff);
        differing += n;
        total += got.len();
        cases += 1;
    }
    Some((cases, worst, differing, total))
}

fn assert_exact(mode: &str, interp: Interpolation) {
    let Some((cases, worst, differing, total)) = compare(mode, interp) else {
        return;
    };
    assert!(cases >= 60, "only {cases} {mode} cases");
    assert_eq!(
        (worst, differing),
        (0, 0),
        "{mode}: {differing} of {total} bytes differ from cv2.resize, by up to {worst}"
    );
}

fn assert_within_one(mode: &str, interp: Interpolation) {
    let Some((cases, worst, differing, total)) = compare(mode, interp) else {
        return;
    };
    assert!(cases >= 60, "only {cases} {mode} cases");
    eprintln!("{mode}: {differing} of {total} bytes differ from cv2.resize, by up to {worst}");
    assert!(
        worst <= 1,
        "{mode}: differs from cv2.resize by up to {worst} grey levels"
    );
}

#[test]
fn inter_linear_matches_cv2_bit_for_bit() {
    assert_exact("linear", Interpolation::Linear);
}

#[test]
fn inter_area_matches_cv2_bit_for_bit() {
    assert_exact("area", Interpolation::Area);
}

#[test]
fn inter_nearest_matches_cv2_bit_for_bit() {
    assert_exact("nearest", Interpolation::Nearest);
}

#[test]
fn inter_cubic_is_within_one_grey_level_of_cv2() {
    assert_within_one("cubic", Interpolation::Cubic);
}

#[test]
fn inter_lanczos4_is_within_one_grey_level_of_cv2() {
    assert_within_one("lanczos4", Interpolation::Lanczos4);
}
