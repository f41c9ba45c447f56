//! The `lookout` binary as a user runs it: `check`, error exit codes, `bench` in short mode.

mod common;

use std::process::Command;

fn lookout(args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .output()
        .expect("lookout runs")
}

#[test]
fn check_describes_the_bundled_model() {
    let out = lookout(&["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    for fragment in [
        "config ok",
        "<bundled default model>",
        "Nchw",
        "[1, 3, 64, 64]",
        "4 from ONNX metadata property \"labels\"",
        "ok, scratch, dent, missing",
        "int8 QDQ",
    ] {
        assert!(
            text.contains(fragment),
            "check output lacks {fragment:?}:\n{text}"
        );
    }
}

#[test]
fn bad_config_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[source]\ntype = \"synthetic\"\nfsp = 5\n").expect("write");
    for cmd in ["check", "run"] {
        let out = lookout(&[cmd, "--config", path.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8(out.stderr).expect("utf8");
        assert!(
            err.contains("bad.toml:3:1")
                && err.contains("source")
                && err.contains("unknown field `fsp`"),
            "{cmd}: {err}"
        );
    }
    let out = lookout(&["run", "--config", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent.toml")
    );
}

#[test]
fn bench_short_mode_prints_the_json_summary() {
    let out = lookout(&[
        "bench", "--json", "--runs", "3", "--warmup", "1", "--frames", "12",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in ["model_ms", "e2e_ms"] {
        assert!(v[key]["p50"].as_f64().expect("p50") > 0.0, "{key}: {v}");
        assert!(v[key]["p99"].as_f64().expect("p99") >= v[key]["p50"].as_f64().expect("p50"));
    }
    assert!(v["fps"].as_f64().expect("fps") > 0.0);
    assert_eq!(v["frames"].as_u64(), Some(12));
    assert_eq!(v["dropped"].as_u64(), Some(0));
    assert!(v["rss_mb"].as_f64().expect("rss") > 1.0);
    assert_eq!(v["preprocess"].as_array().expect("preprocess").len(), 6);
}
