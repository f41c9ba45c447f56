//! The benchmark's JSON summary: every figure one run measured, and each target's check.

use serde::Serialize;

use super::PeerFigures;
use crate::model::profile::Profile;
use std::time::Duration;

/// Model-only latency of a comparison model, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub model: String,
    pub kernels: String,
    pub model_ms: Percentiles,
    /// model_ms.p50 / the benchmarked model's model_ms.p50
    pub ratio: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
        }
    }
}

/// Cost of turning one frame into the model's input.
#[derive(Debug, Clone, Serialize)]
pub struct PreprocessFigure {
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
    pub ms: Percentiles,
    /// p50 as a share of the model-only p50.
    pub share_of_model: f64,
    /// MJPEG only: p50 of the same frame's decode at 1/8 DCT scale (one coefficient per block
    /// transformed, 80x60 pixels out of 640x480). What is left is the entropy decoding of every
    /// coefficient, which any decode of the frame does: no preprocessing of it can be faster
    /// with libjpeg-turbo (the fastest decoder measured, `examples/jpeg.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_floor_ms: Option<f64>,
}

/// our / peer, for each figure (below 1 is better for times, above 1 for fps).
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub model_p50: f64,
    pub e2e_p50: f64,
    pub fps: f64,
}

/// The JSON summary.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    /// Whose convolution kernels ran (`model.kernels`).
    pub kernels: String,
    pub input: Vec<usize>,
    pub workers: usize,
    /// Model-only latency, one thread, after warm-up.
    pub model_ms: Percentiles,
    /// Model-only latency with one idle worker helping (`pipeline.assist`, two or more
    /// workers): two threads, as the pipeline runs a frame when a worker is idle.
    pub model_ms_assisted: Option<Percentiles>,
    pub preprocess: Vec<PreprocessFigure>,
    /// Capture -> classification done, in the paced run (the source at `--fps`, by default at
    /// half of one worker's throughput).
    pub e2e_ms: Percentiles,
    /// Throughput of the configured workers, unpaced.
    pub fps: f64,
    /// Frames classified in the throughput run.
    pub frames: u64,
    /// Frames dropped in the paced run.
    pub dropped: u64,
    /// Process CPU time during the throughput run / wall time (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Peak resident memory of the process, MB (before the `--sources` and `--regions` runs).
    pub rss_mb: f64,
    pub start_to_first_inference_ms: f64,
    /// Every pipeline run: one worker, the configured workers, paced, overloaded.
    pub pipeline: Vec<PipelineRun>,
    /// The benchmark targets, each with its measured value.
    pub checks: Vec<Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratios: Option<Ratios>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// `--vs` / `--vs-tract-kernels`: other models or kernels, model only, same run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<Comparison>,
    /// `--sources N`: N replayed streams through the one shared worker pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<SourcesFigures>,
    /// `--regions`: a 1920x1080 frame's 3x2 grid, batched against one run per crop, and the
    /// JPEG decoded only where a corner region needs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<RegionsFigures>,
}

/// `--sources N`: the pipeline with N replayed 640x480 MJPEG streams, each its own live
/// source, all through the configured workers (one pool, round-robin across sources).
#[derive(Debug, Clone, Serialize)]
pub struct SourcesFigures {
    pub sources: usize,
    pub workers: usize,
    /// Each source's rate in the paced runs, frames/s (`--fps`, default 15).
    pub fps: f64,
    /// How long each kind of paced run's sources deliver, seconds (`--frames` / `fps`, at
    /// least 7.5: three rounds that take turns with the other kinds; the overload run is one
    /// round).
    pub secs: f64,
    /// One source alone at `fps`: the yardstick for the paced runs' latency.
    pub baseline: SourcesRun,
    /// Every source at `fps`.
    pub paced: SourcesRun,
    /// Every source at 3x its equal share of what the workers keep up with (the throughput
    /// run's fps / N).
    pub overload: SourcesRun,
    /// As `paced`, with the first source failing every second: it returns an error after a
    /// second of frames, and the capture thread closes and reopens it with its back-off.
    pub failing: SourcesRun,
    /// The slowest source's e2e p50 in `paced` / `baseline`'s.
    pub paced_e2e_p50_ratio: f64,
    /// `overload`: the smallest source's share of the classified frames / the largest's.
    pub fairness: f64,
    /// The sources other than the failing one: their fps in `failing` / theirs in `paced`.
    pub failing_others_fps_ratio: f64,
}

/// One multi-source pipeline run.
#[derive(Debug, Clone, Serialize)]
pub struct SourcesRun {
    pub name: &'static str,
    /// Each source's rate, frames/s.
    pub source_fps: f64,
    /// Frames classified, all sources.
    pub frames: u64,
    pub dropped: u64,
    /// Classified frames per second of the run, all sources.
    pub fps: f64,
    pub per_source: Vec<SourceFigure>,
}

/// One source's figures in a multi-source run.
#[derive(Debug, Clone, Serialize)]
pub struct SourceFigure {
    pub name: String,
    pub captured: u64,
    /// Frames classified.
    pub frames: u64,
    /// Frames dropped unprocessed (stale under load).
    pub dropped: u64,
    /// Errors and reopenings (the failing source's).
    pub source_errors: u64,
    pub reconnects: u64,
    /// Classified frames per second of the run.
    pub fps: f64,
    /// Capture -> classification done.
    pub e2e_ms: Percentiles,
    /// This source's part of the run's classified frames (the shares add up to 1).
    pub share: f64,
    /// `share` x the number of sources: 1.0 is an equal share.
    pub share_of_equal: f64,
}

/// `--regions`: one frame's regions classified as crops.
#[derive(Debug, Clone, Serialize)]
pub struct RegionsFigures {
    /// The frame (a rendered scene, JPEG-encoded).
    pub width: u32,
    pub height: u32,
    /// Columns and rows of the grid; one region per cell.
    pub grid: [u32; 2],
    /// How the batched run got its batch: `input_shape [6, ...]` on a model whose batch
    /// dimension is open, else why it could not (and `batched` is absent).
    pub batch_from: String,
    /// Every region in model runs of up to the model's batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batched: Option<RegionsTiming>,
    /// The same regions with a batch-1 model: one run per crop.
    pub single: RegionsTiming,
    /// batched model time p50 / single model time p50 (the frame's model runs together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_ratio: Option<f64>,
    /// The JPEG decoded only in the window of one region, against a full decode.
    pub window_decode: Vec<WindowDecode>,
}

/// Per frame, all of its regions: p50/p90/p99 over the timed frames.
#[derive(Debug, Clone, Serialize)]
pub struct RegionsTiming {
    pub batch: usize,
    /// The model runs' time (all regions of the frame).
    pub model_ms: Percentiles,
    /// Decode, crops, preprocessing and model runs.
    pub total_ms: Percentiles,
}

/// One region's JPEG window decode against the full decode of the same frame.
#[derive(Debug, Clone, Serialize)]
pub struct WindowDecode {
    /// `[x, y, width, height]`, fractions of the frame.
    pub region: [f64; 4],
    /// The pixels decoded (the region, widened to whole iMCUs plus one on each inner side).
    pub decoded: [u32; 2],
    pub full_ms: f64,
    pub window_ms: f64,
    /// window_ms / full_ms (p50s).
    pub ratio: f64,
}

/// Exact stage times of the frames of one pipeline run (from the frame trace).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stages {
    /// Capture -> a worker takes the frame.
    pub queue_wait: Percentiles,
    pub decode: Percentiles,
    pub preprocess: Percentiles,
    pub infer: Percentiles,
}

/// One pipeline run on the replayed 640x480 MJPEG frames.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRun {
    pub name: &'static str,
    pub workers: usize,
    /// Source rate, frames/s; 0: unpaced, each frame waits for a worker (none dropped).
    /// Paced sources are live: when the workers are busy the oldest queued frame is dropped.
    pub source_fps: f64,
    pub captured: u64,
    /// Frames classified.
    pub frames: u64,
    pub dropped: u64,
    /// Classified frames per second of wall time.
    pub fps: f64,
    /// Capture -> classification done.
    pub e2e_ms: Percentiles,
    pub stages_ms: Stages,
    /// Most frames captured after a frame before a worker took it.
    pub max_staleness: u64,
    /// Process CPU time / wall time (1.0 = one core busy).
    pub cpu_cores: f64,
}

/// One benchmark target and what this run measured for it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub value: f64,
    /// `"<="` or `">="`.
    pub op: &'static str,
    pub target: f64,
    pub met: bool,
    /// The least this figure can be on this machine with these frames, where the JPEG
    /// decode bounds it (see [`PreprocessFigure::decode_floor_ms`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<f64>,
}

impl Check {
    pub(super) fn at_most(name: &'static str, value: f64, target: f64) -> Check {
        Check {
            name,
            value,
            op: "<=",
            target,
            met: value <= target,
            floor: None,
        }
    }
    pub(super) fn at_least(name: &'static str, value: f64, target: f64) -> Check {
        Check {
            name,
            value,
            op: ">=",
            target,
            met: value >= target,
            floor: None,
        }
    }
    pub(super) fn with_floor(self, floor: Option<f64>) -> Check {
        Check { floor, ..self }
    }
}
