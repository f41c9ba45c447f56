//! The peer baseline (`benches/peer.py`): the Pillow + numpy + onnxruntime loop users write by
//! hand, run by python3 on the very same JPEG frames and model.

use std::path::Path;

use serde::Serialize;

use super::replay::bench_frames;
use super::Percentiles;
use super::{BenchError, BenchOptions};
use crate::config::Config;
use crate::model::Model;

/// The peer baseline's figures (see `benches/peer.py`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PeerFigures {
    pub runtime: String,
    /// Threads of the end-to-end loop (and of `model_ms_threads`).
    pub threads: usize,
    /// Model only, one thread.
    pub model_ms: Percentiles,
    /// Model only, `threads` threads.
    #[serde(default)]
    pub model_ms_threads: Percentiles,
    pub e2e_ms: Percentiles,
    pub fps: f64,
    pub rss_mb: f64,
}

/// Writes the benchmark frames as JPEG files and runs `benches/peer.py` on them.
pub(super) fn run_peer(
    config: &Config,
    model: &Model,
    opts: &BenchOptions,
    threads: usize,
) -> Result<PeerFigures, BenchError> {
    let dir = std::env::temp_dir().join(format!("lookout-bench-{}", std::process::id()));
    let io = |source| BenchError::Io {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let frames = bench_frames(32);
    for i in 0..opts.frames {
        std::fs::write(
            dir.join(format!("{i:05}.jpg")),
            &frames[i as usize % frames.len()],
        )
        .map_err(io)?;
    }
    let model_path = match &config.model.path {
        Some(p) => p.clone(),
        None => {
            let p = dir.join("model.onnx");
            std::fs::write(&p, crate::model::BUILTIN_MODEL).map_err(io)?;
            p
        }
    };
    let p = &model.preprocess;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer.py");
    let out = std::process::Command::new(&opts.python)
        .arg(&script)
        .arg("--model")
        .arg(&model_path)
        .arg("--frames")
        .arg(&dir)
        .args([
            "--size",
            &model.input.width.to_string(),
            &model.input.height.to_string(),
        ])
        .args([
            "--mean",
            &p.mean
                .iter()
                .map(f32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ])
        .args([
            "--std",
            &p.std
                .iter()
                .map(f32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ])
        .args(["--scale", &p.scale.to_string()])
        .args([
            "--layout",
            if model.input.layout == crate::model::Layout::Nchw {
                "nchw"
            } else {
                "nhwc"
            },
        ])
        .args(["--threads", &threads.to_string()])
        .args([
            "--runs",
            &opts.runs.to_string(),
            "--warmup",
            &opts.warmup.to_string(),
        ])
        .output()
        .map_err(|e| BenchError::Peer(format!("cannot run {}: {e}", opts.python)))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(BenchError::Peer(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| BenchError::Peer(format!("unreadable output: {e}")))
}
