//! Preprocessing: decoded RGB frame -> model input tensor.
//!
//! Resize (`stretch`, `crop`, `letterbox`) bit-exact with Pillow's `Image.resize(...,
//! BILINEAR)` (what most training and reference scripts use; [`super::resample`]), or with
//! fast_image_resize's convolution (`resampler = "fast"`); then channel order, `value = pixel /
//! scale`, `(value - mean) / std` through a per-channel lookup table, written in the model's
//! layout (NCHW/NHWC) and dtype. A JPEG frame's rows can be resized as they are decoded
//! ([`Preprocessor::run_filled`]).
//! Integer-input models (uint8/int8) get the pixel values themselves (int8: pixel - 128); `scale`,
//! `mean` and `std` apply to float inputs only.

use serde::Deserialize;

use super::InputSpec;
use crate::problems::Problems;

mod tensor;
#[cfg(test)]
mod tests;

pub use tensor::Preprocessor;

/// How a frame is fitted to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Scale the whole frame to the input size, ignoring aspect ratio.
    Stretch,
    /// Scale the shorter side to `resize_to`, then cut the centre (torchvision's Resize+CenterCrop).
    Crop,
    /// Scale the whole frame to fit inside, keeping aspect ratio; pad with black.
    Letterbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Memory layout of the input tensor, read from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Element type of the input tensor, read from the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    F32,
    U8,
    I8,
}

/// `[model.preprocess]`. Unset keys take the bundled model's values when `model.path` is unset,
/// else the generic defaults given with each key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    /// "stretch" | "crop" | "letterbox". Default "stretch".
    #[serde(default)]
    pub resize: Option<ResizeMode>,
    /// For "crop": the shorter side is scaled to this many pixels before the centre crop.
    /// Default: input size * 256 / 224 (256 for a 224 model).
    #[serde(default)]
    pub resize_to: Option<u32>,
    /// "rgb" | "bgr". Default "rgb".
    #[serde(default)]
    pub channel_order: Option<ChannelOrder>,
    /// value = pixel / scale. Default 255.0. Float32 inputs only: uint8 inputs get the pixel
    /// itself, int8 inputs pixel - 128, and setting scale, mean or std for them is an error.
    #[serde(default)]
    pub scale: Option<f32>,
    /// Per-channel mean subtracted after scaling (1 or 3 values). Default [0, 0, 0].
    #[serde(default)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel divisor after the mean (1 or 3 values, > 0). Default [1, 1, 1].
    #[serde(default)]
    pub std: Option<Vec<f32>>,
    /// "pillow" (bit-exact with Pillow, default) | "fast" (SIMD, within one grey level).
    #[serde(default)]
    pub resampler: Option<Resampler>,
    /// JPEG frames are decoded at reduced DCT scale (1/2, 1/4, 1/8) only while the decoded image
    /// stays at least this many times the size it is resized to: Pillow's `reducing_gap`.
    /// Default 2.0 (as Pillow's `thumbnail`): a 640x480 or 1280x720 frame is decoded in full
    /// for a 224x224 model. 1.0 is the fastest (both are decoded at 1/2 scale, then resized).
    #[serde(default)]
    pub reducing_gap: Option<f32>,
}

/// The resize implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resampler {
    /// Bit-exact with Pillow's `resize(..., BILINEAR)`: what most models were trained with.
    Pillow,
    /// fast_image_resize's SIMD bilinear convolution: faster, within one grey level of Pillow.
    Fast,
}

/// Preprocessing of the bundled model (`models/MODEL_CARD.md`).
pub const BUILTIN_MEAN: [f32; 3] = [0.28, 0.31, 0.3];
pub const BUILTIN_STD: [f32; 3] = [0.24, 0.21, 0.21];

/// Resolved preprocessing, every value set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    pub resize: ResizeMode,
    pub resize_to: u32,
    pub channel_order: ChannelOrder,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resampler: Resampler,
    /// See [`PreprocessConfig::reducing_gap`].
    pub reducing_gap: f32,
}

fn three(v: &[f32]) -> [f32; 3] {
    match v {
        [a] => [*a; 3],
        [a, b, c] => [*a, *b, *c],
        _ => [0.0; 3], // refused by validate()
    }
}

impl PreprocessConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if let Some(s) = self.scale {
            if !(s.is_finite() && s > 0.0) {
                p.push(
                    format!("{key}.scale"),
                    format!("expected a positive number, got {s}"),
                );
            }
        }
        if let Some(r) = self.resize_to {
            p.range(&format!("{key}.resize_to"), r, 1, 16384);
        }
        if let Some(g) = self.reducing_gap {
            if !(g.is_finite() && (1.0..=16.0).contains(&g)) {
                p.push(
                    format!("{key}.reducing_gap"),
                    format!("expected a number from 1.0 (fastest) to 16.0, got {g}; the default is {DEFAULT_REDUCING_GAP}"),
                );
            }
        }
        for (name, v, positive) in [("mean", &self.mean, false), ("std", &self.std, true)] {
            if let Some(v) = v {
                if !(v.len() == 1 || v.len() == 3) {
                    p.push(
                        format!("{key}.{name}"),
                        format!("expected 1 or 3 values, got {}", v.len()),
                    );
                } else if v.iter().any(|x| !x.is_finite() || (positive && *x <= 0.0)) {
                    let what = if positive {
                        "positive numbers"
                    } else {
                        "finite numbers"
                    };
                    p.push(
                        format!("{key}.{name}"),
                        format!("expected {what}, got {v:?}"),
                    );
                }
            }
        }
    }

    /// Fills unset values and checks them against the model's input.
    pub fn resolve(&self, builtin: bool, input: &InputSpec) -> Result<Preprocess, String> {
        let (mean, std) = if builtin {
            (BUILTIN_MEAN, BUILTIN_STD)
        } else {
            ([0.0; 3], [1.0; 3])
        };
        if input.dtype != InputType::F32
            && (self.scale.is_some() || self.mean.is_some() || self.std.is_some())
        {
            let fed = if input.dtype == InputType::U8 {
                "uint8 pixels as they are (0..255)"
            } else {
                "int8 values pixel - 128 (-128..127)"
            };
            return Err(format!(
                "model.preprocess.scale, mean and std apply to float32 inputs only; this model's input is {:?}, \
                 fed {fed} for the model's own first DequantizeLinear to scale: remove them",
                input.dtype
            ));
        }
        let longest = input.width.max(input.height) as u32;
        let p = Preprocess {
            resize: self.resize.unwrap_or(ResizeMode::Stretch),
            resize_to: self.resize_to.unwrap_or((longest * 256).div_ceil(224)),
            channel_order: self.channel_order.unwrap_or(ChannelOrder::Rgb),
            scale: self.scale.unwrap_or(255.0),
            mean: self.mean.as_deref().map_or(mean, three),
            std: self.std.as_deref().map_or(std, three),
            resampler: self.resampler.unwrap_or(Resampler::Pillow),
            reducing_gap: self.reducing_gap.unwrap_or(DEFAULT_REDUCING_GAP),
        };
        if p.resize == ResizeMode::Crop && p.resize_to < longest {
            return Err(format!(
                "model.preprocess.resize_to = {} is smaller than the model input ({}x{}); it must be at least {longest}",
                p.resize_to, input.width, input.height
            ));
        }
        Ok(p)
    }
}

/// Decoding a JPEG to at least this multiple of the size it is resized to keeps the resize
/// antialiased: the reduced-scale decode never does more than half of the downscaling.
pub const DEFAULT_REDUCING_GAP: f32 = 2.0;

/// A rectangle in source pixels (fractional) mapped onto a rectangle of the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Source crop box: left, top, width, height.
    pub src: (f64, f64, f64, f64),
    /// Destination rectangle inside the target: left, top, width, height.
    pub dst: (u32, u32, u32, u32),
}

impl Geometry {
    /// Whether the destination is the whole `tw` x `th` target (no padding).
    pub fn fills(&self, tw: u32, th: u32) -> bool {
        self.dst == (0, 0, tw, th)
    }
}

/// The buffer a resize writes: the target itself (`resized`) when it fills it, else `fitted`,
/// sized `dw` x `dh` RGB.
fn resize_target<'a>(
    resized: &'a mut Vec<u8>,
    fitted: &'a mut Vec<u8>,
    fills: bool,
    dw: u32,
    dh: u32,
) -> &'a mut Vec<u8> {
    let buf = if fills { resized } else { fitted };
    buf.clear();
    buf.resize((dw * dh * 3) as usize, 0);
    buf
}

impl Preprocess {
    /// Size of the whole frame after scaling, before crop or padding.
    pub fn scaled_size(&self, w: u32, h: u32, tw: u32, th: u32) -> (u32, u32) {
        let (w, h) = (w.max(1) as f64, h.max(1) as f64);
        match self.resize {
            ResizeMode::Stretch => (tw, th),
            ResizeMode::Crop => {
                let s = self.resize_to as f64 / w.min(h);
                (
                    ((w * s).round() as u32).max(tw),
                    ((h * s).round() as u32).max(th),
                )
            }
            ResizeMode::Letterbox => {
                let s = (tw as f64 / w).min(th as f64 / h);
                (
                    ((w * s).round() as u32).clamp(1, tw),
                    ((h * s).round() as u32).clamp(1, th),
                )
            }
        }
    }

    /// Where the source goes in a `tw` x `th` target.
    pub fn geometry(&self, w: u32, h: u32, tw: u32, th: u32) -> Geometry {
        let (rw, rh) = self.scaled_size(w, h, tw, th);
        let (wf, hf) = (w as f64, h as f64);
        match self.resize {
            ResizeMode::Stretch => Geometry {
                src: (0.0, 0.0, wf, hf),
                dst: (0, 0, tw, th),
            },
            ResizeMode::Crop => {
                // torchvision's center_crop: offset = round((scaled - target) / 2), ties to even.
                let left = ((rw - tw) as f64 / 2.0).round_ties_even();
                let top = ((rh - th) as f64 / 2.0).round_ties_even();
                let (sx, sy) = (wf / rw as f64, hf / rh as f64);
                Geometry {
                    src: (left * sx, top * sy, tw as f64 * sx, th as f64 * sy),
                    dst: (0, 0, tw, th),
                }
            }
            ResizeMode::Letterbox => Geometry {
                src: (0.0, 0.0, wf, hf),
                dst: ((tw - rw) / 2, (th - rh) / 2, rw, rh),
            },
        }
    }
}

/// Computes the smallest useful decode size for a frame (see [`PreprocessConfig::reducing_gap`]).
#[derive(Debug, Clone, Copy)]
pub struct DecodeSizer {
    spec: Preprocess,
    width: u32,
    height: u32,
}

impl DecodeSizer {
    pub fn min_decode_size(&self, w: u32, h: u32) -> (u32, u32) {
        let (rw, rh) = self.spec.scaled_size(w, h, self.width, self.height);
        let gap = self.spec.reducing_gap as f64;
        (
            (rw as f64 * gap).ceil() as u32,
            (rh as f64 * gap).ceil() as u32,
        )
    }
}
