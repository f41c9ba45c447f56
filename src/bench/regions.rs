//! `bench --regions`: a 1920x1080 JPEG frame's 3x2 grid of regions classified as crops
//! ([`crate::model::crop`]), in model runs of six (the model loaded with `input_shape`'s
//! batch set to 6, where its batch dimension is open) against one run per crop, the two
//! taking turns frame by frame; and the JPEG decoded only in the window a corner region
//! needs ([`crate::frame::jpeg_window`]) against its full decode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::replay::{encode, render_frame};
use super::{BenchError, BenchOptions, Percentiles, RegionsFigures, RegionsTiming, WindowDecode};
use crate::config::Config;
use crate::daemon::DaemonError;
use crate::frame::jpeg_window::decode_jpeg_window;
use crate::frame::rect::pixels;
use crate::frame::{decode_jpeg, Frame, PixelFormat, RgbBuf};
use crate::model::{Model, Session};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;
const GRID: [u32; 2] = [3, 2];

/// The regions figures for `config`'s model (`base`: the model as configured). `single` is
/// `base` (batch 1, or a batch the model fixes); `batched` the same model with a batch of six.
pub(super) fn regions(
    config: &Config,
    base: &Arc<Model>,
    opts: &BenchOptions,
) -> Result<RegionsFigures, BenchError> {
    let frame = encode(&render_frame(WIDTH, HEIGHT, 5), PixelFormat::Mjpeg);
    let rects: Vec<[f64; 4]> = (0..GRID[1])
        .flat_map(|r| (0..GRID[0]).map(move |c| (c, r)))
        .map(|(c, r)| {
            let (w, h) = (1.0 / GRID[0] as f64, 1.0 / GRID[1] as f64);
            [c as f64 * w, r as f64 * h, w, h]
        })
        .collect();
    let n = rects.len();
    let mut single = base.session().map_err(DaemonError::from)?;
    // A batch of every region: the model's batch set with input_shape, where it is open.
    let mut shape = base.input.shape();
    let (mut batched, batch_from) = if single.batch() > 1 {
        let why = format!(
            "none: the configured model has a fixed batch of {}, which `single` runs",
            single.batch()
        );
        (None, why)
    } else if !base.input.has_batch_axis {
        (None, "none: the model's input has no batch axis".to_owned())
    } else {
        shape[0] = n;
        let mut cfg = config.model.clone();
        cfg.input_shape = Some(shape.clone());
        match Model::load(&cfg) {
            Ok(m) => {
                let m = Arc::new(m);
                (
                    Some(m.session().map_err(DaemonError::from)?),
                    format!("input_shape {shape:?} (the model's batch dimension is open)"),
                )
            }
            Err(e) => (
                None,
                format!(
                    "none: the model fixes its batch (input_shape {shape:?} failed: {})",
                    crate::retry::chain(&e)
                ),
            ),
        }
    };
    let runs = opts.runs.clamp(3, 30);
    let (mut b_model, mut b_total) = (Vec::new(), Vec::new());
    let (mut s_model, mut s_total) = (Vec::new(), Vec::new());
    for i in 0..runs + opts.warmup.min(3) {
        let keep = i >= opts.warmup.min(3);
        if let Some(session) = batched.as_mut() {
            let (model, total) = timed(session, &frame, &rects)?;
            if keep {
                b_model.push(model);
                b_total.push(total);
            }
        }
        let (model, total) = timed(&mut single, &frame, &rects)?;
        if keep {
            s_model.push(model);
            s_total.push(total);
        }
    }
    let single_timing = RegionsTiming {
        batch: single.batch(),
        model_ms: Percentiles::of(&mut s_model),
        total_ms: Percentiles::of(&mut s_total),
    };
    let batched_timing = batched.as_ref().map(|s| RegionsTiming {
        batch: s.batch(),
        model_ms: Percentiles::of(&mut b_model),
        total_ms: Percentiles::of(&mut b_total),
    });
    let model_ratio = batched_timing
        .as_ref()
        .filter(|_| single_timing.model_ms.p50 > 0.0)
        .map(|b| b.model_ms.p50 / single_timing.model_ms.p50);
    let corners = [[0.0, 0.0, 0.25, 0.25], [0.75, 0.75, 0.25, 0.25]];
    let window_decode = corners
        .iter()
        .map(|r| window_decode(&frame, *r, runs))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RegionsFigures {
        width: WIDTH,
        height: HEIGHT,
        grid: GRID,
        batch_from,
        batched: batched_timing,
        single: single_timing,
        model_ratio,
        window_decode,
    })
}

/// One frame's regions classified: the model runs' time (a batch's time counts once), and
/// the whole call's.
fn timed(
    session: &mut Session,
    frame: &Frame,
    rects: &[[f64; 4]],
) -> Result<(Duration, Duration), BenchError> {
    let t0 = Instant::now();
    let scores = session.classify_regions(frame, rects)?;
    let total = t0.elapsed();
    // Every crop of one model run carries that run's time.
    let model = scores
        .chunks(session.batch())
        .filter_map(|run| run.first())
        .map(|s| s.infer)
        .sum();
    Ok((model, total))
}

/// `frame`'s JPEG decoded in the window of `region` against in full, taking turns.
fn window_decode(frame: &Frame, region: [f64; 4], runs: usize) -> Result<WindowDecode, BenchError> {
    let mut out = RgbBuf::default();
    let (mut full, mut window) = (Vec::new(), Vec::new());
    let mut decoded = [0, 0];
    let err = |e: crate::frame::FrameError| BenchError::Frame(e.into());
    for _ in 0..runs {
        let t0 = Instant::now();
        decode_jpeg(&frame.data, None, &mut out).map_err(err)?;
        full.push(t0.elapsed());
        let t0 = Instant::now();
        decode_jpeg_window(&frame.data, |w, h| pixels(region, w, h), &mut out).map_err(err)?;
        window.push(t0.elapsed());
        decoded = [out.width, out.height];
    }
    let (full_ms, window_ms) = (
        Percentiles::of(&mut full).p50,
        Percentiles::of(&mut window).p50,
    );
    Ok(WindowDecode {
        region,
        decoded,
        full_ms,
        window_ms,
        ratio: if full_ms > 0.0 {
            window_ms / full_ms
        } else {
            0.0
        },
    })
}
