//! `lookout bench`: model-only latency, preprocessing cost, and the whole pipeline, measured in
//! one run, optionally beside a peer baseline (`benches/peer.py`: the Pillow + numpy +
//! onnxruntime loop users write by hand) fed the very same frames, with our/peer ratios.
//!
//! Benchmarks are reports, not tests: nothing here asserts a time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::daemon::{self, DaemonError};
use crate::frame::{Frame, PixelFormat};
use crate::model::profile::{self, Profile};
use crate::model::team::{self, Team};
use crate::model::Model;
use crate::source::scene::{self, SceneRng};
use crate::source::synthetic::rgb_to_yuyv;
use crate::stop::StopToken;

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
}

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
    /// Peak resident memory of the process, MB.
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
    fn at_most(name: &'static str, value: f64, target: f64) -> Check {
        Check {
            name,
            value,
            op: "<=",
            target,
            met: value <= target,
            floor: None,
        }
    }
    fn at_least(name: &'static str, value: f64, target: f64) -> Check {
        Check {
            name,
            value,
            op: ">=",
            target,
            met: value >= target,
            floor: None,
        }
    }
    fn with_floor(self, floor: Option<f64>) -> Check {
        Check { floor, ..self }
    }
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
    #[error("the peer baseline failed: {0} (it needs python3 with numpy, pillow and onnxruntime: pip install numpy pillow onnxruntime)")]
    Peer(String),
}

fn render_frame(width: u32, height: u32, seed: u64) -> image::RgbImage {
    let mut rng = SceneRng::new(seed);
    let class = rng.below(scene::CLASSES.len());
    scene::render(class, &mut rng, width, height)
}

fn encode(img: &image::RgbImage, format: PixelFormat) -> Frame {
    let (w, h) = img.dimensions();
    match format {
        PixelFormat::Mjpeg => {
            let mut out = Vec::new();
            // Encoding a rendered image cannot fail: the buffer is an in-memory Vec.
            let _ =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(img);
            Frame::new(PixelFormat::Mjpeg, 0, 0, out)
        }
        PixelFormat::Yuyv422 => Frame::new(PixelFormat::Yuyv422, w, h, rgb_to_yuyv(img.as_raw())),
        _ => Frame::new(PixelFormat::Rgb24, w, h, img.as_raw().clone()),
    }
}

/// Peak resident set size of this process (VmHWM), MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        });
    // Linux reports in USER_HZ, 100 on every architecture lookout targets.
    Duration::from_millis(ticks.unwrap_or(0) * 10)
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
        rss_mb: peak_rss_mb(),
        start_to_first_inference_ms: start_to_first.as_secs_f64() * 1000.0,
        pipeline,
        checks,
        peer: None,
        ratios: None,
        profile,
        comparisons,
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

/// Model-only latency of the benchmarked model, and of each `--vs` model and with
/// `--vs-tract-kernels` of every model on tract's own kernels, on the same probe frame.
///
/// The models take turns run by run (A B C A B C ...), so a change in the machine's speed
/// during the measurement (frequent on shared virtual machines) affects them all alike and
/// the ratios stay meaningful.
fn model_only(
    config: &Config,
    opts: &BenchOptions,
    probe: &Frame,
    base: &mut crate::model::Session,
    base_tensor: &tract_onnx::prelude::Tensor,
) -> Result<(Percentiles, Option<Percentiles>, Vec<Comparison>), BenchError> {
    use crate::model::{Kernels, ModelConfig};
    let mut cfgs: Vec<ModelConfig> = Vec::new();
    if opts.vs_tract_kernels {
        let mut c = config.model.clone();
        c.kernels = Kernels::Tract;
        cfgs.push(c);
    }
    for path in &opts.vs {
        let mut c = config.model.clone();
        c.path = Some(path.clone());
        c.labels = None;
        cfgs.push(c.clone());
        if opts.vs_tract_kernels {
            c.kernels = Kernels::Tract;
            cfgs.push(c);
        }
    }
    let mut others = Vec::new();
    for c in cfgs {
        let m = Arc::new(Model::load(&c).map_err(DaemonError::from)?);
        let mut session = m.session().map_err(DaemonError::from)?;
        let tensor = session.prepare_frame(probe)?;
        for _ in 0..opts.warmup.max(1) {
            session.run_tensor(tensor.clone())?;
        }
        others.push((m, session, tensor, Vec::with_capacity(opts.runs)));
    }
    let mut base_times = Vec::with_capacity(opts.runs);
    // With `pipeline.assist` and two or more workers, the same model with one idle worker
    // helping (`model::team`), as the paced pipeline runs it, run for run in turn.
    let assisted = config.pipeline.assist && config.pipeline.worker_count() >= 2;
    let mut assisted_times = Vec::with_capacity(if assisted { opts.runs } else { 0 });
    let team = Team::new(2);
    let (leader, helper) = (team.member(), team.member());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<(), BenchError> {
        if assisted {
            scope.spawn(|| {
                while !stop.load(Relaxed) {
                    if let Ok(g) = helper.invitations().recv_timeout(Duration::from_millis(10)) {
                        team::help(&g, || stop.load(Relaxed));
                    }
                }
            });
        }
        let runs = (|| {
            for _ in 0..opts.runs {
                base_times.push(base.run_tensor(base_tensor.clone())?);
                if assisted {
                    assisted_times.push(leader.lead(|| base.run_tensor(base_tensor.clone()))?);
                }
                for (_, session, tensor, times) in &mut others {
                    times.push(session.run_tensor(tensor.clone())?);
                }
            }
            Ok(())
        })();
        stop.store(true, Relaxed);
        runs
    })?;
    let base_ms = Percentiles::of(&mut base_times);
    let assisted_ms = assisted.then(|| Percentiles::of(&mut assisted_times));
    let comparisons = others
        .into_iter()
        .map(|(m, _, _, mut times)| {
            let model_ms = Percentiles::of(&mut times);
            Comparison {
                model: m.name.clone(),
                kernels: m.kernels.clone(),
                ratio: if base_ms.p50 > 0.0 {
                    model_ms.p50 / base_ms.p50
                } else {
                    0.0
                },
                model_ms,
            }
        })
        .collect();
    Ok((base_ms, assisted_ms, comparisons))
}

/// Pipeline runs of one kind, added up (several rounds taking turns with another kind).
#[derive(Default)]
struct Accumulated {
    times: Vec<crate::metrics::FrameTimes>,
    captured: u64,
    frames: u64,
    dropped: u64,
    max_staleness: u64,
    wall: Duration,
    cpu: Duration,
}

impl Accumulated {
    /// Runs the pipeline of `config` (prepared by [`run`]: no rules, no sinks) on `count`
    /// replayed `frames` at `fps` with `workers`, and adds its figures.
    fn add(
        &mut self,
        config: &Config,
        model: &Arc<Model>,
        frames: &[Vec<u8>],
        workers: usize,
        fps: f64,
        count: u64,
    ) -> Result<(), BenchError> {
        let memory = crate::sink::memory::MemorySink::new();
        let mut parts = daemon::build_with_model(
            config,
            Arc::clone(model),
            vec![("bench".into(), Box::new(memory))],
        )?;
        parts.workers = workers;
        parts.trace_frames = true;
        parts.source = Box::new(ReplaySource::new(frames, count, fps));
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        let running = crate::pipeline::start(parts, StopToken::new()).map_err(DaemonError::from)?;
        let metrics = Arc::clone(running.metrics());
        let snap = running.wait(Duration::from_secs(600));
        self.wall += t0.elapsed();
        self.cpu += cpu_time().saturating_sub(cpu0);
        self.times.extend(metrics.frame_times());
        self.captured += snap.captured;
        self.frames += snap.inferred;
        self.dropped += snap.dropped;
        self.max_staleness = self.max_staleness.max(snap.max_staleness);
        Ok(())
    }

    fn finish(self, name: &'static str, workers: usize, fps: f64) -> PipelineRun {
        let of = |f: fn(&crate::metrics::FrameTimes) -> Duration| {
            Percentiles::of(&mut self.times.iter().map(f).collect::<Vec<_>>())
        };
        let secs = self.wall.as_secs_f64().max(1e-9);
        PipelineRun {
            name,
            workers,
            source_fps: fps,
            captured: self.captured,
            frames: self.frames,
            dropped: self.dropped,
            fps: self.frames as f64 / secs,
            e2e_ms: of(|t| t.total),
            stages_ms: Stages {
                queue_wait: of(|t| t.queue_wait),
                decode: of(|t| t.decode),
                preprocess: of(|t| t.preprocess),
                infer: of(|t| t.infer),
            },
            max_staleness: self.max_staleness,
            cpu_cores: self.cpu.as_secs_f64() / secs,
        }
    }
}

/// The targets of the benchmark issue, from this run's figures. Latency is compared with the
/// model's own time on the paced run's frames (one thread, uncontended, measured at the same
/// moment: this machine's speed changes from minute to minute).
fn targets(
    preprocess: &[PreprocessFigure],
    one: Option<&PipelineRun>,
    main: &PipelineRun,
    paced: &PipelineRun,
    overload: &PipelineRun,
    model_only: f64,
    start_to_first: Duration,
) -> Vec<Check> {
    // The yardstick: model-only latency on one thread, measured in the same run. (The
    // paced run's own model time is shorter where an idle worker helps, `pipeline.assist`.)
    let per_model = |ms: f64| {
        if model_only > 0.0 {
            ms / model_only
        } else {
            0.0
        }
    };
    let mjpeg = |width: u32| {
        preprocess
            .iter()
            .find(|p| p.format == PixelFormat::Mjpeg.name() && p.width == width)
    };
    // The paced run's frames are 640x480 MJPEG: each one's decode comes before its model, so
    // its latency is at least the decode floor plus the model as fast as it ran there.
    let paced_floor = mjpeg(640)
        .and_then(|p| p.decode_floor_ms)
        .map(|ms| per_model(paced.stages_ms.infer.p50 + ms));
    let mut checks = vec![
        Check::at_most(
            "paced e2e p50 / model-only p50",
            per_model(paced.e2e_ms.p50),
            1.15,
        )
        .with_floor(paced_floor),
        Check::at_most(
            "overload 3x e2e p99 / model-only p50",
            per_model(overload.e2e_ms.p99),
            2.5,
        ),
    ];
    if let Some(one) = one.filter(|o| o.fps > 0.0) {
        checks.push(Check::at_least(
            "throughput, configured workers / 1 worker",
            main.fps / one.fps,
            if main.workers == 2 {
                1.8
            } else {
                0.9 * main.workers as f64
            },
        ));
    }
    if let Some(p) = mjpeg(1280) {
        let floor = p
            .decode_floor_ms
            .filter(|_| p.ms.p50 > 0.0)
            .map(|ms| ms / p.ms.p50 * p.share_of_model);
        checks.push(
            Check::at_most(
                "preprocess 1280x720 MJPEG p50 / model-only p50",
                p.share_of_model,
                0.15,
            )
            .with_floor(floor),
        );
    }
    checks.push(Check::at_most(
        "start to first inference, ms",
        start_to_first.as_secs_f64() * 1000.0,
        1000.0,
    ));
    checks
}

/// p50 of `frame`'s JPEG decode at 1/8 DCT scale: its entropy decoding, with next to no
/// inverse DCT, upsampling or colour conversion (see [`PreprocessFigure::decode_floor_ms`]).
fn decode_floor(frame: &Frame, opts: &BenchOptions) -> Result<f64, BenchError> {
    let mut out = crate::frame::RgbBuf::default();
    // The smallest size any scale gives: libjpeg's 1/8.
    let eighth = |_, _| (1, 1);
    let mut times = Vec::with_capacity(opts.runs);
    for i in 0..opts.runs + opts.warmup {
        let t0 = Instant::now();
        crate::frame::decode_rgb(frame, Some(&eighth), &mut out)
            .map_err(|e| BenchError::Frame(e.into()))?;
        if i >= opts.warmup {
            times.push(t0.elapsed());
        }
    }
    Ok(Percentiles::of(&mut times).p50)
}

/// `n` distinct rendered 640x480 scenes, JPEG-encoded (the frames both lookout and the peer get).
fn bench_frames(n: u64) -> Vec<Vec<u8>> {
    let mut rng = SceneRng::new(11);
    (0..n)
        .map(|_| {
            let class = rng.below(scene::CLASSES.len());
            encode(
                &scene::render(class, &mut rng, 640, 480),
                PixelFormat::Mjpeg,
            )
            .data
        })
        .collect()
}

/// Replays pre-encoded JPEG frames, `count` in all, at `fps` (0: as fast as workers take them).
struct ReplaySource {
    frames: Vec<Vec<u8>>,
    left: u64,
    next: usize,
    pacer: crate::source::Pacer,
    fps: f64,
}

impl ReplaySource {
    fn new(frames: &[Vec<u8>], count: u64, fps: f64) -> ReplaySource {
        ReplaySource {
            frames: frames.to_vec(),
            left: count,
            next: 0,
            pacer: crate::source::Pacer::new(fps),
            fps,
        }
    }
}

impl crate::source::FrameSource for ReplaySource {
    fn describe(&self) -> String {
        "bench-replay".into()
    }
    fn live(&self) -> bool {
        self.fps > 0.0
    }
    fn open(&mut self) -> Result<(), crate::source::SourceError> {
        Ok(())
    }
    fn next_frame(
        &mut self,
        stop: &StopToken,
    ) -> Result<Option<Frame>, crate::source::SourceError> {
        if self.left == 0 || self.frames.is_empty() || self.pacer.wait(stop) {
            return Ok(None);
        }
        self.left -= 1;
        let data = self.frames[self.next % self.frames.len()].clone();
        self.next += 1;
        Ok(Some(Frame::new(PixelFormat::Mjpeg, 0, 0, data)))
    }
}

/// Writes the benchmark frames as JPEG files and runs `benches/peer.py` on them.
fn run_peer(
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

/// The readable summary.
pub fn render_text(r: &BenchReport) -> String {
    let mut s = format!(
        "model {} input {:?}\n  kernels: {}\n  model only (1 thread): p50 {:.2} ms  p90 {:.2}  p99 {:.2}\n  start to first inference: {:.0} ms\n",
        r.model, r.input, r.kernels, r.model_ms.p50, r.model_ms.p90, r.model_ms.p99, r.start_to_first_inference_ms
    );
    if let Some(a) = &r.model_ms_assisted {
        s.push_str(&format!(
            "  model with an idle worker helping (pipeline.assist, 2 threads): p50 {:.2} ms  p90 {:.2}  p99 {:.2}  ({:.2}x one thread)\n",
            a.p50,
            a.p90,
            a.p99,
            if r.model_ms.p50 > 0.0 { a.p50 / r.model_ms.p50 } else { 0.0 }
        ));
    }
    for c in &r.comparisons {
        s.push_str(&format!(
            "  vs {} [{}]: model only p50 {:.2} ms = {:.2}x\n",
            c.model, c.kernels, c.model_ms.p50, c.ratio
        ));
    }
    if let Some(p) = &r.profile {
        s.push_str(&profile::render(p));
    }
    if r.workers == 0 {
        return s;
    }
    s.push_str("  preprocess (decode + resize + normalise), p50 ms and share of model time:\n");
    for p in &r.preprocess {
        s.push_str(&format!(
            "    {:>8} {:>4}x{:<4} {:>7.2} ms  {:>5.1}%\n",
            p.format,
            p.width,
            p.height,
            p.ms.p50,
            p.share_of_model * 100.0
        ));
    }
    s.push_str("  pipeline, 640x480 MJPEG in, p50 / p99 ms (queue wait, decode, resize + normalise, model):\n");
    for p in &r.pipeline {
        let rate = if p.source_fps > 0.0 {
            format!("{:.0} fps in", p.source_fps)
        } else {
            "unpaced".to_owned()
        };
        s.push_str(&format!(
            "    {:<12} {} workers, {:<11} {:>6.1} fps  e2e {:>6.2} / {:>6.2}  (wait {:.2}, decode {:.2}, resize {:.2}, model {:.2})  dropped {}, staleness {}, cpu {:.2} cores\n",
            p.name,
            p.workers,
            rate,
            p.fps,
            p.e2e_ms.p50,
            p.e2e_ms.p99,
            p.stages_ms.queue_wait.p50,
            p.stages_ms.decode.p50,
            p.stages_ms.preprocess.p50,
            p.stages_ms.infer.p50,
            p.dropped,
            p.max_staleness,
            p.cpu_cores
        ));
    }
    s.push_str(&format!("  peak RSS {:.1} MB\n", r.rss_mb));
    if let (Some(p), Some(x)) = (&r.peer, &r.ratios) {
        s.push_str(&format!(
            "  peer ({}, {} threads): model p50 {:.2} ms (1 thread; {:.2} ms with {}), e2e p50 {:.2} ms, {:.1} fps, RSS {:.1} MB\n  ratios ours/peer: model {:.2}x  e2e {:.2}x  fps {:.2}x\n",
            p.runtime, p.threads, p.model_ms.p50, p.model_ms_threads.p50, p.threads, p.e2e_ms.p50, p.fps, p.rss_mb, x.model_p50, x.e2e_p50, x.fps
        ));
    }
    if !r.checks.is_empty() {
        s.push_str("  targets (set for MobileNetV2 224x224 on a 2-core machine; the ratios mean little for much smaller models):\n");
        for c in &r.checks {
            let bound = match c.floor {
                Some(f) if !c.met && f > c.target => {
                    format!("; out of reach here: the JPEG entropy decoding alone makes it {f:.2}")
                }
                Some(f) => format!("; JPEG decode floor {f:.2}"),
                None => String::new(),
            };
            s.push_str(&format!(
                "    {:<48} {:>8.2}  (target {} {}) {}{bound}\n",
                c.name,
                c.value,
                c.op,
                c.target,
                if c.met { "met" } else { "NOT MET" }
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_samples() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p90, p.p99), (50.0, 90.0, 99.0));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
