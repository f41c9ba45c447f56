//! Model-only figures: the benchmarked model beside `--vs` models and tract's kernels, taking
//! turns run by run, and the JPEG decode floor.

use std::time::{Duration, Instant};

use lookout_engine::team::{self, Team};

use super::{BenchError, BenchOptions, Comparison, Percentiles};
use crate::config::Config;
use crate::daemon::DaemonError;
use crate::frame::Frame;
use crate::model::Model;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Model-only latency of the benchmarked model, and of each `--vs` model and with
/// `--vs-tract-kernels` of every model on tract's own kernels, on the same probe frame.
///
/// The models take turns run by run (A B C A B C ...), so a change in the machine's speed
/// during the measurement (frequent on shared virtual machines) affects them all alike and
/// the ratios stay meaningful.
pub(super) fn model_only(
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
    // helping (`lookout_engine::team`), as the paced pipeline runs it, run for run in turn.
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

/// p50 of `frame`'s JPEG decode at 1/8 DCT scale: its entropy decoding, with next to no
/// inverse DCT, upsampling or colour conversion (see [`PreprocessFigure::decode_floor_ms`]).
pub(super) fn decode_floor(frame: &Frame, opts: &BenchOptions) -> Result<f64, BenchError> {
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
