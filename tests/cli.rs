//! The `lookout` binary as a user runs it: `check`, error exit codes, `bench` in short mode.

mod common;

use std::process::Command;

fn lookout(args: &[&str]) -> std::process::Output {
    common::lookout_command()
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
fn check_model_reports_the_quantization_format_and_translations() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let qop = fixtures.join("quant/tiny-qop-perchannel-int8.onnx");
    let out = lookout(&["check", "--model", qop.to_str().expect("utf8 path")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for fragment in [
        "quantization: int8 QOperator (QLinear* operators), per-channel weights",
        "QLinearAddx1 -> DequantizeLinear x2 -> Add -> QuantizeLinear",
        "QGemmx1 -> DequantizeLinear x2 (+ bias) -> Gemm -> QuantizeLinear",
        "QLinearSoftmaxx1",
        // ... and those chains, 8-bit in and out, run as one operator of lookout's each.
        "DequantizeLinear x2 -> Add -> QuantizeLinearx1 -> lookout.QAdd",
        "DequantizeLinear x2 -> Mul -> QuantizeLinearx1 -> lookout.QMul",
        "QuantizeLinear (float to 8 bits)x9 -> lookout.QuantizeLinear",
        "rules:        none",
    ] {
        assert!(
            text.contains(fragment),
            "check output lacks {fragment:?}:\n{text}"
        );
    }
    let qdq = fixtures.join("quant/tiny-qdq-perchannel-int8.onnx");
    let out = lookout(&["check", "--model", qdq.to_str().expect("utf8 path")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("quantization: int8 QDQ, per-channel"),
        "{text}"
    );
    // Its six QDQ convolutions are folded into integer convolutions on lookout's kernels.
    for fragment in [
        "DequantizeLinear -> Conv -> QuantizeLinearx6 -> QLinearConv (integer arithmetic)",
        "QLinearConvx6 -> lookout.QConv / lookout.QDepthwiseConv",
        "DequantizeLinear x2 -> Add -> QuantizeLinearx1 -> lookout.QAdd",
        "DequantizeLinear x2 -> Mul -> QuantizeLinearx1 -> lookout.QMul",
        "DequantizeLinear x2 -> Gemm -> QuantizeLinearx1 -> lookout.QGemm",
        "QuantizeLinear (float to 8 bits)x9 -> lookout.QuantizeLinear",
        "kernels:      lookout's",
    ] {
        assert!(
            text.contains(fragment),
            "check output lacks {fragment:?}:\n{text}"
        );
    }
    let fp32 = fixtures.join("quant/tiny-fp32.onnx");
    let out = lookout(&["check", "--model", fp32.to_str().expect("utf8 path")]);
    let text = String::from_utf8_lossy(&out.stdout);
    // Its six float convolutions run on lookout's float kernel.
    assert!(
        text.contains("translated:   Convx6 -> lookout.Conv (lookout's float kernel)"),
        "{text}"
    );
    // An operator lookout cannot translate: exit 2, naming it, its node and the remedy.
    let bad = fixtures.join("contrib_unsupported.onnx");
    let out = lookout(&["check", "--model", bad.to_str().expect("utf8 path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("QLinearReduceMean")
            && err.contains("pool_q")
            && err.contains("QuantFormat.QDQ"),
        "{err}"
    );
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
    assert!(v["rss_mb"].as_f64().expect("rss") > 1.0);
    let preprocess = v["preprocess"].as_array().expect("preprocess");
    assert_eq!(preprocess.len(), 6);
    // MJPEG frames carry their decode floor (the 1/8-scale decode), the raw formats none.
    for p in preprocess {
        let floor = p.get("decode_floor_ms").and_then(|f| f.as_f64());
        match p["format"].as_str().expect("format") {
            "mjpeg" => assert!(floor.expect("decode_floor_ms") > 0.0, "{p}"),
            _ => assert_eq!(floor, None, "{p}"),
        }
    }
    // The pipeline runs: the headline one, paced and overloaded (and one worker, where the
    // configuration has more), each with exact stage times.
    let runs = v["pipeline"].as_array().expect("pipeline runs");
    let names: Vec<&str> = runs
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    for name in ["workers", "paced", "overload 3x"] {
        assert!(names.contains(&name), "{names:?}");
    }
    for r in runs {
        assert!(r["frames"].as_u64().expect("frames") > 0, "{r}");
        assert!(
            r["stages_ms"]["infer"]["p50"].as_f64().expect("infer") > 0.0,
            "{r}"
        );
        assert!(
            r["e2e_ms"]["p50"].as_f64().unwrap()
                >= r["stages_ms"]["infer"]["p50"].as_f64().unwrap(),
            "capture to result includes the model run: {r}"
        );
    }
    // With two or more workers (pipeline.assist is on by default), the model also with an idle
    // worker helping.
    let workers = v["workers"].as_u64().expect("workers");
    match v["model_ms_assisted"]["p50"].as_f64() {
        Some(ms) => assert!(workers >= 2 && ms > 0.0, "{}", v["model_ms_assisted"]),
        None => assert!(workers < 2, "{workers} workers, no assisted figure"),
    }
    let overload = runs.iter().find(|r| r["name"] == "overload 3x").unwrap();
    let paced = runs.iter().find(|r| r["name"] == "paced").unwrap();
    let throughput = runs.iter().find(|r| r["name"] == "workers").unwrap();
    // Unpaced, every frame waits for a worker: none is dropped, all are classified.
    assert_eq!(throughput["dropped"].as_u64(), Some(0));
    assert_eq!(throughput["frames"].as_u64(), Some(12));
    // The headline latency is the paced run's.
    assert_eq!(v["e2e_ms"], paced["e2e_ms"]);
    assert_eq!(v["dropped"], paced["dropped"]);
    assert!(overload["source_fps"].as_f64().unwrap() > paced["source_fps"].as_f64().unwrap());
    assert_eq!(
        overload["captured"].as_u64(),
        Some(36),
        "the overload run offers three times the frames"
    );
    // Every target with its value, and `met` saying whether the value is on the right side.
    let checks = v["checks"].as_array().expect("checks");
    assert!(checks.len() >= 4, "{checks:?}");
    for c in checks {
        let (value, target) = (c["value"].as_f64().unwrap(), c["target"].as_f64().unwrap());
        let met = match c["op"].as_str().unwrap() {
            "<=" => value <= target,
            ">=" => value >= target,
            op => panic!("unknown op {op}"),
        };
        assert_eq!(c["met"].as_bool(), Some(met), "{c}");
    }
    // The two targets a JPEG decode bounds carry that bound: for the latency ratio, above the
    // paced run's own model time (the decode comes before the model), and above 0 for the
    // preprocessing share.
    let floor = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["floor"].as_f64())
            .unwrap_or_else(|| panic!("{name}: no floor in {checks:?}"))
    };
    let model = v["model_ms"]["p50"].as_f64().unwrap();
    let paced_model = paced["stages_ms"]["infer"]["p50"].as_f64().unwrap();
    assert!(model > 0.0 && paced_model > 0.0);
    assert!(floor("paced e2e p50 / model-only p50") > paced_model / model);
    assert!(floor("preprocess 1280x720 MJPEG p50 / model-only p50") > 0.0);
}

#[test]
fn bench_with_sources_reports_each_source_and_the_fairness_ratio() {
    let out = lookout(&[
        "bench",
        "--json",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--frames",
        "20",
        "--fps",
        "10",
        "--sources",
        "2",
        "--regions",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let f = &v["sources"];
    assert_eq!(f["sources"].as_u64(), Some(2), "{f}");
    assert_eq!(f["fps"].as_f64(), Some(10.0));
    let run = |name: &str| &f[name];
    for (name, n) in [
        ("baseline", 1),
        ("paced", 2),
        ("overload", 2),
        ("failing", 2),
    ] {
        let r = run(name);
        let per = r["per_source"].as_array().expect("per_source");
        assert_eq!(per.len(), n, "{name}: {r}");
        let frames: u64 = per.iter().map(|p| p["frames"].as_u64().unwrap()).sum();
        assert_eq!(
            r["frames"].as_u64(),
            Some(frames),
            "{name}: totals are the sources' sum"
        );
        assert!(frames > 0, "{name}: {r}");
        let shares: f64 = per.iter().map(|p| p["share"].as_f64().unwrap()).sum();
        assert!(
            (shares - 1.0).abs() < 1e-9,
            "{name}: shares add up to {shares}"
        );
        for p in per {
            let share = p["share"].as_f64().unwrap();
            let of_equal = p["share_of_equal"].as_f64().unwrap();
            assert!((of_equal - share * n as f64).abs() < 1e-9, "{p}");
            assert!(p["fps"].as_f64().unwrap() > 0.0, "{name}: {p}");
            let (p50, p99) = (p["e2e_ms"]["p50"].as_f64(), p["e2e_ms"]["p99"].as_f64());
            assert!(p50.unwrap() > 0.0 && p99.unwrap() >= p50.unwrap(), "{p}");
            assert!(p["dropped"].as_u64().is_some() && p["captured"].as_u64().is_some());
        }
    }
    // Fairness: the smallest overload share over the largest.
    let shares: Vec<f64> = run("overload")["per_source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["share"].as_f64().unwrap())
        .collect();
    let fairness = f["fairness"].as_f64().unwrap();
    let (lo, hi) = (shares[0].min(shares[1]), shares[0].max(shares[1]));
    assert!((fairness - lo / hi).abs() < 1e-9 && fairness > 0.0 && fairness <= 1.0);
    // The failing source really failed and was reopened; the other did not.
    let failing = run("failing")["per_source"].as_array().unwrap();
    assert!(
        failing[0]["source_errors"].as_u64().unwrap() >= 1,
        "{}",
        failing[0]
    );
    assert!(
        failing[0]["reconnects"].as_u64().unwrap() >= 1,
        "{}",
        failing[0]
    );
    assert_eq!(failing[1]["source_errors"].as_u64(), Some(0));
    assert!(f["failing_others_fps_ratio"].as_f64().unwrap() > 0.0);
    assert!(f["paced_e2e_p50_ratio"].as_f64().unwrap() > 0.0);
    let checks = v["checks"].as_array().expect("checks");
    let named = |prefix: &str| {
        checks
            .iter()
            .filter(|c| c["name"].as_str().unwrap().starts_with(prefix))
            .count()
    };
    assert_eq!(named("sources"), 4, "{checks:?}");
    // Regions: a 3x2 grid of a 1920x1080 frame, one run per crop at least, and the corner
    // windows decoded smaller than the frame yet holding their region.
    let r = &v["regions"];
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(1920), Some(1080))
    );
    assert_eq!(r["grid"], serde_json::json!([3, 2]));
    assert!(
        r["single"]["model_ms"]["p50"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    match r.get("batched") {
        Some(b) => {
            assert_eq!(b["batch"].as_u64(), Some(6), "{r}");
            assert!(r["model_ratio"].as_f64().unwrap() > 0.0);
            assert_eq!(named("regions"), 1);
        }
        None => assert!(r["batch_from"].as_str().unwrap().starts_with("none"), "{r}"),
    }
    let windows = r["window_decode"].as_array().expect("window_decode");
    assert_eq!(windows.len(), 2);
    for w in windows {
        let (dw, dh) = (
            w["decoded"][0].as_u64().unwrap(),
            w["decoded"][1].as_u64().unwrap(),
        );
        assert!(
            (480..1920).contains(&dw) && (270..1080).contains(&dh),
            "{w}"
        );
        assert!(w["window_ms"].as_f64().unwrap() > 0.0 && w["full_ms"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bench_profiles_operators_and_compares_kernels_in_one_run() {
    // The bundled int8 model: its convolutions run on lookout's kernels, and on tract's in the
    // comparison.
    let out = lookout(&[
        "bench",
        "--json",
        "--model-only",
        "--profile",
        "--vs-tract-kernels",
        "--runs",
        "3",
        "--warmup",
        "1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let p = &v["profile"];
    let ops: Vec<&str> = p["by_op"]
        .as_array()
        .expect("by_op")
        .iter()
        .map(|o| o["op"].as_str().expect("op name"))
        .collect();
    assert!(ops.contains(&"lookout.QConv"), "{ops:?}");
    let share: f64 = p["by_op"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["share"].as_f64().unwrap())
        .sum();
    assert!((share - 1.0).abs() < 1e-6, "shares sum to {share}");
    assert!(p["total_ms"].as_f64().expect("total") > 0.0);
    let cmp = v["comparisons"].as_array().expect("comparisons");
    assert_eq!(cmp.len(), 1, "{v}");
    assert!(
        cmp[0]["kernels"].as_str().unwrap().starts_with("tract"),
        "{v}"
    );
    assert!(cmp[0]["ratio"].as_f64().expect("ratio") > 0.0);
    assert!(v["kernels"].as_str().unwrap().starts_with("lookout"), "{v}");
    assert!(v
        .get("preprocess")
        .is_some_and(|p| p.as_array().is_some_and(|a| a.is_empty())));
}

/// `lookout run` under a systemd-like supervisor: READY=1 after start, WATCHDOG=1 pings at
/// least every half interval, STOPPING=1 on SIGTERM, and the notification variables are not
/// passed on (a `pipe` source's program sees none of them).
#[test]
fn run_notifies_systemd_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let env_seen = dir.path().join("env.txt");
    let conf = dir.path().join("lookout.toml");
    std::fs::write(
        &conf,
        format!(
            r#"
            [source]
            type = "pipe"
            format = "gray"
            width = 64
            height = 64
            command = ["sh", "-c", "env > {}; while true; do head -c 4096 /dev/zero; sleep 0.1; done"]
            [log]
            summary_secs = 0
            "#,
            env_seen.display()
        ),
    )
    .expect("config");
    let mut child = common::lookout_command()
        .args(["run", "--config"])
        .arg(&conf)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start lookout");
    let mut messages: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(60);
    let mut sent_term = false;
    while Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let pings = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
        if pings >= 3 && !sent_term {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            sent_term = true;
        }
        if messages.iter().any(|m| m.starts_with("STOPPING=1")) {
            break;
        }
    }
    let status = child.wait().expect("lookout exits");
    assert!(
        messages
            .first()
            .is_some_and(|m| m.starts_with("READY=1\nSTATUS=Running")),
        "READY first: {messages:?}"
    );
    assert!(
        messages.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3,
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("STOPPING=1")),
        "{messages:?}"
    );
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    let env = std::fs::read_to_string(&env_seen).expect("the pipe program ran");
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC"] {
        assert!(!env.contains(var), "{var} leaked to the child:\n{env}");
    }
}
