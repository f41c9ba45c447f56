//! Calibration: the images (a folder, flat or one subfolder per label), split with a fixed
//! seed into those that set the ranges and those held out to judge the result, and the ranges
//! themselves: the fp32 model run on lookout's engine with every activation to quantize as an
//! extra output, recording its minimum and maximum (`minmax`), or a histogram over that range
//! and the values at a percentile of either end (`percentile`, a second pass).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::frame::image_file::{is_image_file, visible_entries};
use crate::frame::{Frame, PixelFormat};
use crate::model::Session;

use super::QuantizeError;

/// One image: its file and, in a labelled folder, its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub path: PathBuf,
    pub label: Option<String>,
}

/// The images of `dir`: `dir/*` and `dir/<label>/*` (hidden entries skipped), sorted.
pub fn list(dir: &Path) -> Result<Vec<Image>, QuantizeError> {
    let read = |p: &Path| -> Result<Vec<PathBuf>, QuantizeError> {
        visible_entries(p).map_err(|source| QuantizeError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let mut out = Vec::new();
    for p in read(dir)? {
        if p.is_dir() {
            let label = p.file_name().map(|n| n.to_string_lossy().into_owned());
            for f in read(&p)? {
                if f.is_file() && is_image_file(&f) {
                    out.push(Image {
                        path: f,
                        label: label.clone(),
                    });
                }
            }
        } else if p.is_file() && is_image_file(&p) {
            out.push(Image {
                path: p,
                label: None,
            });
        }
    }
    if out.is_empty() {
        return Err(QuantizeError::NoImages(dir.to_owned()));
    }
    Ok(out)
}

/// Splits `images` into calibration (at most `max`) and held-out ones (`holdout` of each
/// label, at least one when there are two or more images), shuffled with `seed`.
pub fn split(
    mut images: Vec<Image>,
    holdout: f64,
    max: usize,
    seed: u64,
) -> (Vec<Image>, Vec<Image>) {
    // A small xorshift: the order only has to be fixed for a seed.
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for i in (1..images.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        images.swap(i, j);
    }
    let mut by_label: Vec<(Option<String>, Vec<Image>)> = Vec::new();
    for im in images {
        match by_label.iter_mut().find(|(l, _)| *l == im.label) {
            Some((_, v)) => v.push(im),
            None => by_label.push((im.label.clone(), vec![im])),
        }
    }
    let (mut calib, mut held) = (Vec::new(), Vec::new());
    for (_, v) in by_label {
        let n = if v.len() >= 2 {
            ((v.len() as f64 * holdout).round() as usize).clamp(1, v.len() - 1)
        } else {
            0
        };
        let mut v = v.into_iter();
        held.extend(v.by_ref().take(n));
        calib.extend(v);
    }
    calib.truncate(max);
    (calib, held)
}

/// How ranges are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The smallest and largest value seen.
    Minmax,
    /// The values at `--percentile` of either end (outliers clipped).
    Percentile,
}

/// A decoded, preprocessed image.
pub fn input(session: &mut Session, path: &Path) -> Result<tract_onnx::prelude::Tensor, String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let frame = Frame::new(PixelFormat::Encoded, 0, 0, data);
    session.prepare_frame(&frame).map_err(|e| e.to_string())
}

const BINS: usize = 2048;

/// Each calibrated tensor's `(lo, hi)`.
pub type Ranges = HashMap<String, (f32, f32)>;

/// The ranges of `tensors` over `images`: the model's input for those `is_input` marks, the
/// extra outputs 1.. of `session`'s model (in order) for the others. Images that do not
/// decode are skipped and returned with why.
pub fn ranges(
    session: &mut Session,
    tensors: &[String],
    is_input: &[bool],
    images: &[Image],
    method: Method,
    percentile: f64,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Ranges, Vec<(PathBuf, String)>), QuantizeError> {
    let mut lo = vec![f32::INFINITY; tensors.len()];
    let mut hi = vec![f32::NEG_INFINITY; tensors.len()];
    let mut skipped = Vec::new();
    let passes = if method == Method::Percentile { 2 } else { 1 };
    let total = images.len() * passes;
    for (i, im) in images.iter().enumerate() {
        progress(i, total);
        let t = match input(session, &im.path) {
            Ok(t) => t,
            Err(why) => {
                skipped.push((im.path.clone(), why));
                continue;
            }
        };
        let outs = values_of(session, &t, is_input)?;
        for (k, v) in outs.iter().enumerate() {
            for &x in v {
                if x.is_finite() {
                    lo[k] = lo[k].min(x);
                    hi[k] = hi[k].max(x);
                }
            }
        }
    }
    if skipped.len() == images.len() {
        return Err(QuantizeError::NoneDecoded(skipped));
    }
    if method == Method::Percentile {
        let mut hist = vec![vec![0u64; BINS]; tensors.len()];
        // The images are decoded again rather than kept: 200 MobileNet inputs are 120 MB,
        // too much for a small board.
        for (i, im) in images.iter().enumerate() {
            progress(images.len() + i, total);
            let Ok(t) = input(session, &im.path) else {
                continue; // skipped (and counted) in the first pass
            };
            let outs = values_of(session, &t, is_input)?;
            for (k, v) in outs.iter().enumerate() {
                let width = (hi[k] - lo[k]).max(f32::MIN_POSITIVE);
                for &x in v {
                    if x.is_finite() {
                        let b = (((x - lo[k]) / width) * BINS as f32) as usize;
                        hist[k][b.min(BINS - 1)] += 1;
                    }
                }
            }
        }
        for k in 0..tensors.len() {
            let (a, b) = percentile_range(&hist[k], lo[k], hi[k], percentile);
            lo[k] = a;
            hi[k] = b;
        }
    }
    progress(total, total);
    let out = tensors
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let r = if lo[k].is_finite() {
                (lo[k], hi[k])
            } else {
                (0.0, 0.0)
            };
            (t.clone(), r)
        })
        .collect();
    Ok((out, skipped))
}

/// Each calibrated tensor's values for one input: the input itself, or an extra output.
fn values_of(
    session: &mut Session,
    input: &tract_onnx::prelude::Tensor,
    is_input: &[bool],
) -> Result<Vec<Vec<f32>>, QuantizeError> {
    let fed: Vec<f32> = if is_input.contains(&true) {
        input
            .cast_to::<f32>()
            .ok()
            .and_then(|t| {
                t.to_plain_array_view::<f32>()
                    .ok()
                    .map(|v| v.iter().copied().collect())
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut outs = session
        .run_all(input.clone())
        .map_err(QuantizeError::Model)?
        .into_iter()
        .skip(1);
    Ok(is_input
        .iter()
        .map(|&i| {
            if i {
                fed.clone()
            } else {
                outs.next().unwrap_or_default()
            }
        })
        .collect())
}

/// The range keeping `percentile` % of a histogram's values on either side: the lower edge
/// of the bin where `(100 - p)` % of the values lie below, the upper edge of the bin where
/// `p` % lie below.
pub fn percentile_range(hist: &[u64], lo: f32, hi: f32, percentile: f64) -> (f32, f32) {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return (lo, hi);
    }
    let width = (hi - lo) / hist.len() as f32;
    let tail = ((1.0 - percentile / 100.0) * total as f64).floor() as u64;
    let mut below = 0u64;
    let mut a = lo;
    for (i, &c) in hist.iter().enumerate() {
        if below + c > tail {
            a = lo + i as f32 * width;
            break;
        }
        below += c;
    }
    let mut above = 0u64;
    let mut b = hi;
    for (i, &c) in hist.iter().enumerate().rev() {
        if above + c > tail {
            b = lo + (i + 1) as f32 * width;
            break;
        }
        above += c;
    }
    (a.min(b), b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_per_label_fixed_by_the_seed_and_capped() {
        let images: Vec<Image> = (0..20)
            .map(|i| Image {
                path: PathBuf::from(format!("{i}.jpg")),
                label: Some(if i < 10 { "a" } else { "b" }.into()),
            })
            .collect();
        let (c, h) = split(images.clone(), 0.2, 100, 1);
        assert_eq!((c.len(), h.len()), (16, 4));
        assert_eq!(
            h.iter().filter(|i| i.label.as_deref() == Some("a")).count(),
            2
        );
        assert_eq!(split(images.clone(), 0.2, 100, 1), (c.clone(), h.clone()));
        assert_ne!(split(images.clone(), 0.2, 100, 2).1, h);
        assert_eq!(split(images, 0.2, 5, 1).0.len(), 5);
    }

    #[test]
    fn percentiles_clip_the_outliers_of_a_histogram() {
        // 1000 values in bins 0..10 of 100, and one outlier in the last bin.
        let mut hist = vec![0u64; 100];
        for b in hist.iter_mut().take(10) {
            *b = 100;
        }
        hist[99] = 1;
        let (a, b) = percentile_range(&hist, 0.0, 100.0, 99.9);
        assert_eq!(a, 0.0);
        assert_eq!(b, 10.0);
        assert_eq!(percentile_range(&hist, 0.0, 100.0, 100.0), (0.0, 100.0));
    }
}
