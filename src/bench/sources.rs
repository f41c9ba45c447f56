//! `bench --sources N`: N replayed 640x480 MJPEG streams, each its own live source, through
//! the one worker pool the daemon shares between sources ([`crate::pipeline`]'s fair queue):
//! one source alone (the latency yardstick), N paced, N overloaded (the fairness ratio), and N
//! paced with one source failing every second. Each run's sources deliver for the same time,
//! so per-source fps and shares compare directly; the paced kinds take turns in rounds, and
//! the sources' frames are spread over the frame interval (independent cameras are not in
//! step). The figures' targets are checked in `targets`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::replay::ReplaySource;
use super::{BenchError, Percentiles, SourceFigure, SourcesFigures, SourcesRun};
use crate::config::Config;
use crate::daemon::{self, DaemonError};
use crate::model::Model;
use crate::pipeline::SourcePart;
use crate::stop::StopToken;

/// The per-source rate of the paced runs when `--fps` is not given: the camera rate.
pub(super) const DEFAULT_FPS: f64 = 15.0;

/// How often the failing source fails.
const FAIL_EVERY: Duration = Duration::from_secs(1);

/// One source of a run: its rate, and whether it fails every [`FAIL_EVERY`].
#[derive(Clone, Copy)]
struct Spec {
    fps: f64,
    fails: bool,
}

/// What the runs share: the pipeline's config (no rules or sinks), the model, the frames.
pub(super) struct Bench<'a> {
    pub(super) config: &'a Config,
    pub(super) model: &'a Arc<Model>,
    pub(super) frames: &'a [Vec<u8>],
    pub(super) workers: usize,
}

/// The paced runs (one source alone, N sources, N with one failing) take turns in this many
/// rounds, so that their ratios hold while the machine's speed changes.
const ROUNDS: usize = 3;

/// One kind of run's counters and latencies, added up over its rounds.
#[derive(Default)]
struct Tally {
    secs: f64,
    per: Vec<SourceTally>,
}

#[derive(Default)]
struct SourceTally {
    name: String,
    captured: u64,
    inferred: u64,
    dropped: u64,
    errors: u64,
    reconnects: u64,
    e2e: Vec<Duration>,
}

impl Bench<'_> {
    /// The four runs for `n` sources at `fps` each (`frames` frames per source in the paced
    /// runs), the overload at 3x `capacity` (the workers' unpaced fps) shared out.
    pub(super) fn run(
        &self,
        n: usize,
        fps: f64,
        frames: u64,
        capacity: f64,
    ) -> Result<SourcesFigures, BenchError> {
        let n = n.max(1);
        // Each round lasts long enough for the failing source to fail twice.
        let round = (frames as f64 / fps / ROUNDS as f64).max(2.5 * FAIL_EVERY.as_secs_f64());
        let paced = vec![Spec { fps, fails: false }; n];
        let mut failing_specs = paced.clone();
        failing_specs[0].fails = true;
        let (mut baseline, mut paced_t, mut failing_t) = Default::default();
        for _ in 0..ROUNDS {
            self.many(&paced[..1], round, &mut baseline)?;
            self.many(&paced, round, &mut paced_t)?;
            self.many(&failing_specs, round, &mut failing_t)?;
        }
        let over = Spec {
            fps: capacity.max(1.0) * 3.0 / n as f64,
            fails: false,
        };
        let mut overload_t = Tally::default();
        self.many(&vec![over; n], round, &mut overload_t)?;
        let baseline = finish("1 source", fps, baseline);
        let paced_run = finish("paced", fps, paced_t);
        let failing = finish("one failing", fps, failing_t);
        let overload = finish("overload 3x", over.fps, overload_t);

        let base_p50 = baseline.per_source[0].e2e_ms.p50;
        let slowest = paced_run
            .per_source
            .iter()
            .map(|s| s.e2e_ms.p50)
            .fold(0.0, f64::max);
        let shares = overload.per_source.iter().map(|s| s.share);
        let (lo, hi) = shares.fold((f64::MAX, 0.0f64), |(lo, hi), s| (lo.min(s), hi.max(s)));
        let others = |r: &SourcesRun| r.per_source.iter().skip(1).map(|s| s.fps).sum::<f64>();
        // With one source there are no others: the ratio is left at 1.
        let failing_ratio = if n > 1 && others(&paced_run) > 0.0 {
            others(&failing) / others(&paced_run)
        } else {
            1.0
        };
        Ok(SourcesFigures {
            sources: n,
            workers: self.workers,
            fps,
            secs: round * ROUNDS as f64,
            paced_e2e_p50_ratio: ratio(slowest, base_p50),
            fairness: ratio(lo, hi),
            failing_others_fps_ratio: failing_ratio,
            baseline,
            paced: paced_run,
            overload,
            failing,
        })
    }

    /// One run, added to `tally`: a live replay source per spec, each delivering for `secs`,
    /// source `i` starting `i / n` of a frame interval after the first (cameras do not
    /// deliver in step; in step, every frame interval starts with n frames for the workers).
    fn many(&self, specs: &[Spec], secs: f64, tally: &mut Tally) -> Result<(), BenchError> {
        let memory = crate::sink::memory::MemorySink::new();
        let mut parts = daemon::build_with_model(
            self.config,
            Arc::clone(self.model),
            vec![("bench".into(), Box::new(memory))],
        )?;
        parts.workers = self.workers;
        parts.trace_frames = true;
        let step = self.frames.len() / specs.len().max(1);
        let n = specs.len().max(1) as f64;
        parts.sources = specs
            .iter()
            .enumerate()
            .map(|(i, s)| SourcePart {
                name: format!("replay-{i}"),
                key: String::new(),
                source: Box::new(ReplaySource::timed(
                    self.frames,
                    s.fps,
                    (secs, Duration::from_secs_f64(i as f64 / n / s.fps.max(1.0))),
                    i * step,
                    s.fails.then_some(FAIL_EVERY),
                )),
                regions: Vec::new(),
                model: crate::models::DEFAULT.into(),
            })
            .collect();
        let t0 = Instant::now();
        let running = crate::pipeline::start(parts, StopToken::new()).map_err(DaemonError::from)?;
        let metrics = Arc::clone(running.metrics());
        let snap = running.wait(Duration::from_secs(600));
        // The sources deliver for `secs`; the pipeline's start and drain are not theirs.
        tally.secs += secs.min(t0.elapsed().as_secs_f64());
        let times = metrics.frame_times();
        if tally.per.len() < snap.sources.len() {
            tally
                .per
                .resize_with(snap.sources.len(), SourceTally::default);
        }
        for (t, s) in tally.per.iter_mut().zip(&snap.sources) {
            t.name.clone_from(&s.name);
            t.captured += s.captured;
            t.inferred += s.inferred;
            t.dropped += s.dropped;
            t.errors += s.source_errors;
            t.reconnects += s.reconnects;
            t.e2e.extend(
                times
                    .iter()
                    .filter(|f| f.source.as_deref() == Some(s.name.as_str()))
                    .map(|f| f.total),
            );
        }
        Ok(())
    }
}

/// A kind of run's figures from its rounds' tally.
fn finish(name: &'static str, fps: f64, tally: Tally) -> SourcesRun {
    let secs = tally.secs.max(1e-9);
    let total: u64 = tally.per.iter().map(|s| s.inferred).sum();
    let n = tally.per.len().max(1) as f64;
    let per_source: Vec<SourceFigure> = tally
        .per
        .into_iter()
        .map(|mut s| {
            let share = if total > 0 {
                s.inferred as f64 / total as f64
            } else {
                0.0
            };
            SourceFigure {
                captured: s.captured,
                frames: s.inferred,
                dropped: s.dropped,
                source_errors: s.errors,
                reconnects: s.reconnects,
                fps: s.inferred as f64 / secs,
                e2e_ms: Percentiles::of(&mut s.e2e),
                share,
                share_of_equal: share * n,
                name: s.name,
            }
        })
        .collect();
    SourcesRun {
        name,
        source_fps: fps,
        frames: total,
        dropped: per_source.iter().map(|s| s.dropped).sum(),
        fps: total as f64 / secs,
        per_source,
    }
}

/// `a / b`, 0 where `b` is 0.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}
