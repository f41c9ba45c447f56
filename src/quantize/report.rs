//! The quantized model judged against the fp32 one on the held-out images: top-1 agreement,
//! mean absolute difference of the outputs, accuracy when the images are labelled, model run
//! times and sizes; printed as a table and written as `OUT.quant.json`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::calibrate::{input, Image, Method};
use super::QuantizeError;
use crate::model::Model;

/// What `lookout quantize` did and measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub out: String,
    pub method: Method,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    pub per_channel: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_channel_note: Option<String>,
    pub batch_norms_folded: usize,
    pub calibration_images: usize,
    pub held_out_images: usize,
    /// Share of held-out images whose top-1 is the same in both models.
    pub top1_agreement: f64,
    /// Mean over held-out images and outputs of |int8 - fp32| (the raw outputs).
    pub mean_abs_output_diff: f64,
    /// With a labelled folder: top-1 accuracy of each model on the held-out images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fp32_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8_accuracy: Option<f64>,
    /// Median model run time (one thread) of each, and int8 / fp32.
    pub fp32_ms: f64,
    pub int8_ms: f64,
    pub speed_ratio: f64,
    pub fp32_bytes: u64,
    pub int8_bytes: u64,
    pub quantized_convs: usize,
    /// Operators left in float, with counts.
    pub float_ops: Vec<(String, usize)>,
    /// Convolutions left in float, with why.
    pub kept_float: Vec<(String, String)>,
    /// How lookout's engine runs the quantized model's convolutions.
    pub int8_kernels: String,
    /// Images that could not be decoded, with why.
    pub skipped: Vec<(String, String)>,
    pub seconds: f64,
    /// The images that set the ranges and those held out (benches/quantize_ref.py reads them
    /// to run onnxruntime's quantizer on the same split).
    pub calibration_files: Vec<String>,
    pub held_out_files: Vec<String>,
}

/// `parts.onnx` -> `parts.quant.json`.
pub fn json_path(out: &Path) -> PathBuf {
    out.with_extension("quant.json")
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Runs both models on `held` (images that do not decode join `skipped`).
pub fn evaluate(
    fp32: &Arc<Model>,
    int8: &Arc<Model>,
    held: &[Image],
    skipped: &mut Vec<(PathBuf, String)>,
) -> Result<Report, QuantizeError> {
    let mut a = fp32.session()?;
    let mut b = int8.session()?;
    let (mut same, mut n, mut diff, mut count) = (0usize, 0usize, 0f64, 0usize);
    let (mut labelled, mut right_a, mut right_b) = (0usize, 0usize, 0usize);
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let progress = crate::progress::Progress::new("judging");
    for (i, im) in held.iter().enumerate() {
        progress.show(i, held.len(), "");
        let t = match input(&mut a, &im.path) {
            Ok(t) => t,
            Err(why) => {
                skipped.push((im.path.clone(), why));
                continue;
            }
        };
        let t0 = Instant::now();
        let ya = a.run_raw(t.clone())?;
        ta.push(t0.elapsed());
        let t0 = Instant::now();
        let yb = b.run_raw(t)?;
        tb.push(t0.elapsed());
        n += 1;
        let (ka, kb) = (argmax(&ya), argmax(&yb));
        same += usize::from(ka == kb);
        for (x, y) in ya.iter().zip(&yb) {
            diff += f64::from((x - y).abs());
            count += 1;
        }
        if let Some(label) = &im.label {
            if let Some(truth) = fp32.labels.iter().position(|l| l == label) {
                labelled += 1;
                right_a += usize::from(ka == truth);
                right_b += usize::from(kb == truth);
            }
        }
    }
    progress.done();
    let share = |k: usize, of: usize| if of == 0 { 0.0 } else { k as f64 / of as f64 };
    let (fp32_ms, int8_ms) = (median(ta), median(tb));
    Ok(Report {
        model: String::new(),
        out: String::new(),
        method: Method::Minmax,
        percentile: None,
        per_channel: false,
        per_channel_note: None,
        batch_norms_folded: 0,
        calibration_images: 0,
        held_out_images: n,
        top1_agreement: share(same, n),
        mean_abs_output_diff: if count == 0 { 0.0 } else { diff / count as f64 },
        fp32_accuracy: (labelled > 0).then(|| share(right_a, labelled)),
        int8_accuracy: (labelled > 0).then(|| share(right_b, labelled)),
        fp32_ms,
        int8_ms,
        speed_ratio: if fp32_ms > 0.0 {
            int8_ms / fp32_ms
        } else {
            0.0
        },
        fp32_bytes: 0,
        int8_bytes: 0,
        quantized_convs: 0,
        float_ops: Vec::new(),
        kept_float: Vec::new(),
        int8_kernels: int8.kernels.clone(),
        skipped: Vec::new(),
        seconds: 0.0,
        calibration_files: Vec::new(),
        held_out_files: held.iter().map(|i| i.path.display().to_string()).collect(),
    })
}

impl Report {
    /// The table `lookout quantize` prints.
    pub fn print(&self, out: &mut dyn Write, json: &Path) {
        let pct = |v: f64| format!("{:.1} %", v * 100.0);
        let mut lines = vec![
            format!(
                "wrote {} ({} KB; fp32 {} KB) and {}",
                self.out,
                self.int8_bytes / 1000,
                self.fp32_bytes / 1000,
                json.display()
            ),
            format!(
                "method {:?}{}, weights per {}{}, {} batch norms folded",
                self.method,
                self.percentile.map_or(String::new(), |p| format!(" {p}")),
                if self.per_channel {
                    "channel"
                } else {
                    "tensor"
                },
                self.per_channel_note
                    .as_ref()
                    .map_or(String::new(), |n| format!(" ({n})")),
                self.batch_norms_folded
            ),
            format!(
                "calibrated on {} images, judged on {} held out",
                self.calibration_images, self.held_out_images
            ),
            format!(
                "top-1 agreement int8 vs fp32:   {}",
                pct(self.top1_agreement)
            ),
            format!(
                "mean |int8 - fp32| output:      {:.4}",
                self.mean_abs_output_diff
            ),
        ];
        if let (Some(a), Some(b)) = (self.fp32_accuracy, self.int8_accuracy) {
            lines.push(format!(
                "accuracy fp32 / int8:           {} / {}",
                pct(a),
                pct(b)
            ));
        }
        lines.push(format!(
            "model run fp32 / int8:          {:.2} / {:.2} ms (int8/fp32 {:.2})",
            self.fp32_ms, self.int8_ms, self.speed_ratio
        ));
        lines.push(format!(
            "quantized: {} convolutions ({})",
            self.quantized_convs, self.int8_kernels
        ));
        if !self.float_ops.is_empty() {
            let ops: Vec<String> = self
                .float_ops
                .iter()
                .map(|(op, n)| format!("{op}x{n}"))
                .collect();
            lines.push(format!("left in float: {}", ops.join(" ")));
        }
        for (name, why) in &self.kept_float {
            lines.push(format!("kept in float: {name}: {why}"));
        }
        if !self.skipped.is_empty() {
            lines.push(format!(
                "skipped {} images that do not decode:",
                self.skipped.len()
            ));
            for (p, why) in &self.skipped {
                lines.push(format!("  {p}: {why}"));
            }
        }
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
    }
}
