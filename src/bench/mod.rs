//! `lookout bench`: model-only latency, preprocessing cost, and the whole pipeline, measured in
//! one run, optionally beside a peer baseline (`benches/peer.py`: the Pillow + numpy +
//! onnxruntime loop users write by hand) fed the very same frames, with our/peer ratios.
//!
//! Benchmarks are reports, not tests: nothing here asserts a time.

//!
//! Layout: [`run`] here drives one benchmark; `report` holds the JSON summary's types,
//! `model` the model-only figures (models taking turns run by run), `replay` the rendered
//! JPEG frames and the source that replays them through the pipeline, `targets` the checks
//! against the benchmark's targets, `peer` the Python baseline, `render` the readable summary,
//! `process` this process's CPU time and peak memory, `sources` the runs with several sources
//! (`--sources`), `regions` one frame's regions batched and its JPEG decoded in a window
//! (`--regions`).

mod model;
mod peer;
mod process;
mod regions;
mod render;
mod replay;
mod report;
mod sources;
mod targets;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::daemon::DaemonError;
use crate::frame::PixelFormat;
use crate::model::Model;

use model::decode_floor;
use model::model_only;
use peer::run_peer;
pub use peer::PeerFigures;
pub use process::peak_rss_mb;
pub use render::render_text;
use replay::bench_frames;
use replay::encode;
use replay::render_frame;
use replay::Accumulated;
pub use report::{
    BenchReport, Check, Comparison, Percentiles, PipelineRun, PreprocessFigure, Ratios,
    RegionsFigures, RegionsTiming, SourceFigure, SourcesFigures, SourcesRun, Stages, WindowDecode,
};
use targets::{region_targets, source_targets, targets};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Timed model runs (after `warmup`).
    pub runs: usize,
    pub warmup: usize,
    /// Frames through the pipeline.
    pub frames: u64,
    /// Source rate of the paced (latency) pipeline run; 0: half of what one worker keeps up with.
    pub fps: f64,
    /// Run `benches/peer.py` on the same frames and model.
    pub peer: bool,
    /// Python interpreter for the peer.
    pub python: String,
    /// Also time every node of the plan ([`crate::model::profile`]).
    pub profile: bool,
    /// Measure the model only: no preprocessing, pipeline or peer runs.
    pub model_only: bool,
    /// Other models, timed model-only in the same run (same preprocessing), with their latency
    /// as a ratio of this one's.
    pub vs: Vec<PathBuf>,
    /// Also time every model (this one and `vs`) on tract's own kernels.
    pub vs_tract_kernels: bool,
    /// With more than 0: also run this many replayed sources through the shared worker pool
    /// (paced at `fps` each, 15 when `fps` is 0; overloaded; one failing), beside one alone.
    pub sources: usize,
    /// Also classify a 1920x1080 frame's 3x2 grid of regions, batched and one by one, and
    /// time its JPEG decoded in a corner region's window.
    pub regions: bool,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("cannot prepare or classify a benchmark frame")]
    Frame(#[from] crate::model::ClassifyError),
    #[error("cannot write benchmark frames to {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the peer baseline failed: {0} (it needs python3 with numpy, pillow and onnxruntime: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt, then --python .venv/bin/python)")]
    Peer(String),
}

/// Runs the benchmark for `config`'s model and pipeline settings.
pub fn run(config: &Config, opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let model = Arc::new(Model::load(&config.model).map_err(DaemonError::from)?);
    let mut session = model.session().map_err(DaemonError::from)?;

    // Model only.
    let probe = encode(&render_frame(640, 480, 1), PixelFormat::Rgb24);
    let tensor = session.prepare_frame(&probe)?;
    let first = session.run_tensor(tensor.clone())?;
    let start_to_first = started.elapsed();
    let _ = first;
    for _ in 0..opts.warmup {
        session.run_tensor(tensor.clone())?;
    }
    let (model_ms, model_ms_assisted, comparisons) =
        model_only(config, opts, &probe, &mut session, &tensor)?;
    let profile = if opts.profile {
        Some(
            session
                .profile(&tensor, opts.warmup.min(3), opts.runs)
                .map_err(DaemonError::from)?,
        )
    } else {
        None
    };
    if opts.model_only {
        return Ok(BenchReport {
            model: model.name.clone(),
            kernels: model.kernels.clone(),
            input: model.input.shape(),
            workers: 0,
            model_ms,
            model_ms_assisted,
            preprocess: Vec::new(),
            e2e_ms: Percentiles::default(),
            fps: 0.0,
            frames: 0,
            dropped: 0,
            cpu_cores: 0.0,
            rss_mb: peak_rss_mb(),
            start_to_first_inference_ms: start_to_first.as_secs_f64() * 1000.0,
            pipeline: Vec::new(),
            checks: Vec::new(),
            peer: None,
            ratios: None,
            profile,
            comparisons,
            sources: None,
            regions: None,
        });
    }

    // Preprocessing: decode + resize + normalise, per format and size.
    let mut preprocess = Vec::new();
    for (w, h) in [(640, 480), (1280, 720)] {
        let img = render_frame(w, h, 7);
        for format in [PixelFormat::Mjpeg, PixelFormat::Yuyv422, PixelFormat::Rgb24] {
            let frame = encode(&img, format);
            let mut times = Vec::with_capacity(opts.runs);
            for i in 0..opts.runs + opts.warmup {
                let t0 = Instant::now();
                let t = session.prepare_frame(&frame)?;
                let dt = t0.elapsed();
                drop(t);
                if i >= opts.warmup {
                    times.push(dt);
                }
            }
            let ms = Percentiles::of(&mut times);
            let decode_floor_ms = (format == PixelFormat::Mjpeg)
                .then(|| decode_floor(&frame, opts))
                .transpose()?;
            preprocess.push(PreprocessFigure {
                format: format.name(),
                width: w,
                height: h,
                ms,
                share_of_model: if model_ms.p50 > 0.0 {
                    ms.p50 / model_ms.p50
                } else {
                    0.0
                },
                decode_floor_ms,
            });
        }
    }

    // The pipeline on pre-encoded 640x480 MJPEG frames replayed by the source, so the source
    // costs nothing and the figures are the pipeline's own.
    let workers = config.pipeline.worker_count();
    let frames = bench_frames(32);
    // No rules, sinks, summary or HTTP server: only the pipeline's own work is measured.
    let mut bare = config.clone();
    bare.rules.clear();
    bare.sinks.clear();
    bare.log.summary_secs = 0.0;
    bare.http.listen = None;
    let run = |name: &'static str, workers: usize, fps: f64, count: u64| {
        let mut acc = Accumulated::default();
        acc.add(&bare, &model, &frames, workers, fps, count)?;
        Ok::<_, BenchError>(acc.finish(name, workers, fps))
    };
    // Throughput: the configured workers, unpaced (each frame waits for a worker). With more
    // than one worker it takes turns with one worker, in three rounds, so that the ratio holds
    // while the machine's speed changes.
    let (one, main) = if workers > 1 {
        let (mut one, mut many) = (Accumulated::default(), Accumulated::default());
        let part = opts.frames.div_ceil(3).max(1);
        for _ in 0..3 {
            one.add(&bare, &model, &frames, 1, 0.0, part)?;
            many.add(&bare, &model, &frames, workers, 0.0, part)?;
        }
        (
            Some(one.finish("1 worker", 1, 0.0)),
            many.finish("workers", workers, 0.0),
        )
    } else {
        (None, run("workers", workers, 0.0, opts.frames)?)
    };
    let capacity = main.fps.max(1.0);
    let single = one.as_ref().map_or(capacity, |o| o.fps.max(1.0));
    // Latency: a camera at --fps, by default at half of what one worker keeps up with, so
    // frames do not wait for a worker: end-to-end latency against the model's own time on the
    // same frames.
    let rate = if opts.fps > 0.0 {
        opts.fps
    } else {
        single / 2.0
    };
    let paced = run("paced", workers, rate, opts.frames)?;
    // Overload: a live source at 3x what the workers keep up with; stale frames must be dropped.
    let overload = run("overload 3x", workers, capacity * 3.0, opts.frames * 3)?;
    let checks = targets(
        &preprocess,
        one.as_ref(),
        &main,
        &paced,
        &overload,
        model_ms.p50,
        start_to_first,
    );
    let mut checks = checks;
    // Peak memory of the runs above: the extra runs below load a second model (`--regions`)
    // and decode 1920x1080 frames.
    let rss_mb = peak_rss_mb();
    // Several sources through the one pool, and one frame's regions.
    let sources = if opts.sources > 0 {
        let bench = sources::Bench {
            config: &bare,
            model: &model,
            frames: &frames,
            workers,
        };
        let fps = if opts.fps > 0.0 {
            opts.fps
        } else {
            sources::DEFAULT_FPS
        };
        let figures = bench.run(opts.sources, fps, opts.frames, capacity)?;
        checks.extend(source_targets(&figures));
        Some(figures)
    } else {
        None
    };
    let regions = if opts.regions {
        let figures = regions::regions(config, &model, opts)?;
        checks.extend(region_targets(&figures));
        Some(figures)
    } else {
        None
    };
    let (e2e_ms, paced_dropped) = (paced.e2e_ms, paced.dropped);
    let (fps, frames, cpu_cores) = (main.fps, main.frames, main.cpu_cores);
    let pipeline: Vec<PipelineRun> = one.into_iter().chain([main, paced, overload]).collect();

    let mut report = BenchReport {
        model: model.name.clone(),
        kernels: model.kernels.clone(),
        input: model.input.shape(),
        workers,
        model_ms,
        model_ms_assisted,
        preprocess,
        e2e_ms,
        fps,
        frames,
        dropped: paced_dropped,
        cpu_cores,
        rss_mb,
        start_to_first_inference_ms: start_to_first.as_secs_f64() * 1000.0,
        pipeline,
        checks,
        peer: None,
        ratios: None,
        profile,
        comparisons,
        sources,
        regions,
    };
    if opts.peer {
        let peer = run_peer(config, &model, opts, workers)?;
        report.ratios = Some(Ratios {
            model_p50: report.model_ms.p50 / peer.model_ms.p50,
            e2e_p50: report.e2e_ms.p50 / peer.e2e_ms.p50,
            fps: report.fps / peer.fps,
        });
        report.checks.push(Check::at_least(
            "pipeline fps / peer fps (equal threads)",
            report.fps / peer.fps,
            1.0,
        ));
        report.peer = Some(peer);
    }
    // The target is for MobileNetV2 int8: an fp32 model's weights alone are 14 MB of it.
    report.checks.push(Check::at_most(
        "peak RSS, MB (target set for an int8 model)",
        report.rss_mb,
        60.0,
    ));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_of_samples() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p90, p.p99), (50.0, 90.0, 99.0));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
