//! The benchmark's frames: rendered synthetic scenes, encoded once, and the source that
//! replays them through the pipeline at a set rate; and the pipeline runs' figures added up.

use std::time::{Duration, Instant};

use super::process::cpu_time;
use super::BenchError;
use super::Percentiles;
use super::PipelineRun;
use super::Stages;
use crate::config::Config;
use crate::daemon;
use crate::daemon::DaemonError;
use crate::frame::{Frame, PixelFormat};
use crate::model::Model;
use crate::source::scene::{self, SceneRng};
use crate::source::synthetic::rgb_to_yuyv;
use crate::stop::StopToken;
use std::sync::Arc;

pub(super) fn render_frame(width: u32, height: u32, seed: u64) -> image::RgbImage {
    let mut rng = SceneRng::new(seed);
    let class = rng.below(scene::CLASSES.len());
    scene::render(class, &mut rng, width, height)
}

pub(super) fn encode(img: &image::RgbImage, format: PixelFormat) -> Frame {
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

/// `n` distinct rendered 640x480 scenes, JPEG-encoded (the frames both lookout and the peer get).
pub(super) fn bench_frames(n: u64) -> Vec<Vec<u8>> {
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

/// Replays pre-encoded JPEG frames, `count` in all (or for `limit` from its first frame), at
/// `fps` (0: as fast as workers take them).
pub(super) struct ReplaySource {
    frames: Vec<Vec<u8>>,
    left: u64,
    next: usize,
    pacer: crate::source::Pacer,
    fps: f64,
    /// How long it delivers, from its first frame (`--sources` runs: every source as long).
    limit: Option<(Duration, Option<Instant>)>,
    /// Waited before the first frame: independent cameras do not deliver in step.
    phase: Duration,
    /// Fails this long after each opening (a camera that drops out); the capture thread then
    /// closes it and reopens it with its back-off. The time it was last opened.
    fail_every: Option<(Duration, Option<Instant>)>,
}

impl ReplaySource {
    pub(super) fn new(frames: &[Vec<u8>], count: u64, fps: f64) -> ReplaySource {
        ReplaySource {
            frames: frames.to_vec(),
            left: count,
            next: 0,
            pacer: crate::source::Pacer::new(fps),
            fps,
            limit: None,
            phase: Duration::ZERO,
            fail_every: None,
        }
    }

    /// Delivers for `secs` seconds from its first frame, which comes `phase` after its first
    /// call and is frame `first`; with `fail_every`, fails that long after each opening.
    pub(super) fn timed(
        frames: &[Vec<u8>],
        fps: f64,
        (secs, phase): (f64, Duration),
        first: usize,
        fail_every: Option<Duration>,
    ) -> ReplaySource {
        ReplaySource {
            next: first,
            limit: Some((Duration::from_secs_f64(secs), None)),
            phase,
            fail_every: fail_every.map(|d| (d, None)),
            ..ReplaySource::new(frames, u64::MAX, fps)
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
        if let Some((_, opened)) = &mut self.fail_every {
            *opened = Some(Instant::now());
        }
        Ok(())
    }
    fn next_frame(
        &mut self,
        stop: &StopToken,
    ) -> Result<Option<Frame>, crate::source::SourceError> {
        if let Some((limit, started)) = &mut self.limit {
            if started.is_none() && stop.sleep(self.phase) {
                return Ok(None);
            }
            if started.get_or_insert_with(Instant::now).elapsed() >= *limit {
                return Ok(None);
            }
        }
        if let Some((every, opened)) = &mut self.fail_every {
            if opened.get_or_insert_with(Instant::now).elapsed() >= *every {
                *opened = None;
                return Err(crate::source::SourceError::Input(format!(
                    "bench replay: this source fails every {:.1} s (as a camera that drops out)",
                    every.as_secs_f64()
                )));
            }
        }
        if self.left == 0 || self.frames.is_empty() || self.pacer.wait(stop) {
            return Ok(None);
        }
        self.left -= 1;
        let data = self.frames[self.next % self.frames.len()].clone();
        self.next += 1;
        Ok(Some(Frame::new(PixelFormat::Mjpeg, 0, 0, data)))
    }
}

/// Pipeline runs of one kind, added up (several rounds taking turns with another kind).
#[derive(Default)]
pub(super) struct Accumulated {
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
    pub(super) fn add(
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
        parts.sources = vec![crate::pipeline::SourcePart {
            name: "replay".into(),
            key: String::new(),
            source: Box::new(ReplaySource::new(frames, count, fps)),
            regions: Vec::new(),
            model: crate::models::DEFAULT.into(),
        }];
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

    pub(super) fn finish(self, name: &'static str, workers: usize, fps: f64) -> PipelineRun {
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
