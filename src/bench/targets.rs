//! The benchmark's targets, checked against this run's figures.

use super::{Check, PipelineRun, PreprocessFigure, RegionsFigures, SourcesFigures};
use crate::frame::PixelFormat;
use std::time::Duration;

/// The targets of the benchmark issue, from this run's figures. Latency is compared with the
/// model's own time on the paced run's frames (one thread, uncontended, measured at the same
/// moment: this machine's speed changes from minute to minute).
pub(super) fn targets(
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

/// `--sources`: every source's paced latency against one source alone, each source's share
/// under overload against an equal share, and the others' throughput while one fails.
pub(super) fn source_targets(f: &SourcesFigures) -> Vec<Check> {
    let shares = f.overload.per_source.iter().map(|s| s.share_of_equal);
    let lo = shares.clone().fold(f64::MAX, f64::min);
    let hi = shares.fold(0.0, f64::max);
    vec![
        Check::at_most(
            "sources paced: slowest source's e2e p50 / one source's",
            f.paced_e2e_p50_ratio,
            1.3,
        ),
        Check::at_least(
            "sources overload 3x: smallest share / equal share",
            if lo == f64::MAX { 0.0 } else { lo },
            0.8,
        ),
        Check::at_most("sources overload 3x: largest share / equal share", hi, 1.25),
        Check::at_most(
            "sources, one failing every second: |others' fps / without it - 1|",
            (f.failing_others_fps_ratio - 1.0).abs(),
            0.05,
        ),
    ]
}

/// `--regions`: the six crops' model time in one batch against six runs, where batched.
pub(super) fn region_targets(f: &RegionsFigures) -> Vec<Check> {
    f.model_ratio
        .map(|r| Check::at_most("regions 3x2: model time batched / one run per crop", r, 0.8))
        .into_iter()
        .collect()
}
