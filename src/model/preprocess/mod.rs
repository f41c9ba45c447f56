//! Preprocessing: decoded RGB frame -> model input tensor.
//!
//! Resize (`stretch`, `crop`, `letterbox`, `fit_height`, `fit_width`: [`geometry`]) bit-exact
//! with Pillow's `Image.resize(..., BILINEAR)` (what most training and reference scripts use;
//! [`super::resample`]), with OpenCV's `cv2.resize` (`resampler = "opencv-linear"` etc.;
//! [`super::resample::opencv`]), or with fast_image_resize's convolution (`resampler = "fast"`);
//! padding with a pixel value or a normalised value; then channel order, `value = pixel /
//! scale`, `(value - mean) / std` through a per-channel lookup table, written in the model's
//! layout (NCHW/NHWC) and dtype. A JPEG frame's rows can be resized as they are decoded
//! ([`Preprocessor::run_filled`]).
//! Integer-input models (uint8/int8) get the pixel values themselves (int8: pixel - 128); `scale`,
//! `mean` and `std` apply to float inputs only.

use serde::Deserialize;

use super::InputSpec;
use crate::problems::Problems;

mod geometry;
mod preset;
mod tensor;
#[cfg(test)]
mod tests;

pub use geometry::{DecodeSizer, Geometry};
pub use preset::{Preset, IMAGENET_MEAN, IMAGENET_STD};
pub use tensor::Preprocessor;

use super::resample;
use super::resample::opencv::Interpolation;

/// How a frame is fitted to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Scale the whole frame to the input size, ignoring aspect ratio.
    Stretch,
    /// Scale the shorter side to `resize_to`, then cut the centre (torchvision's Resize+CenterCrop).
    Crop,
    /// Scale the whole frame to fit inside, keeping aspect ratio; pad (centred by default).
    Letterbox,
    /// Scale to the input's height keeping aspect ratio, the width at most the input's
    /// (`ceil(height * w / h)`, PaddleOCR's `resize_norm_img`); pad the rest (at the end by
    /// default).
    FitHeight,
    /// Scale to the input's width keeping aspect ratio, the height at most the input's; pad
    /// the rest (at the end by default).
    FitWidth,
}

/// Where the padding of `letterbox`, `fit_height` and `fit_width` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadPlace {
    /// Equal margins (the odd pixel right and below): Ultralytics' letterbox.
    Center,
    /// The image at the top left, the padding right and below: PaddleOCR.
    End,
}

/// The value of padded pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PadFill {
    /// A pixel value (R, G, B), normalised like the image.
    Pixel([u8; 3]),
    /// The tensor value itself, per model channel, after normalisation.
    Normalized([f32; 3]),
}

/// How `crop` rounds half of an odd margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropRounding {
    /// Ties to even: torchvision's `center_crop` (Python's `round`), hence timm.
    HalfEven,
    /// Down: `(h - th) // 2`, as Keras' `CenterCrop` and many NumPy/OpenCV scripts.
    Floor,
    /// Ties away from zero: `int(x + 0.5)`, C's `round`.
    Round,
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
    /// Every key below at once, as one ecosystem's own preprocessing: "torchvision-imagenet",
    /// "ultralytics-cls" or "paddle-cls" ([`Preset`] says what each matches). Keys set beside
    /// it override it.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// "stretch" | "crop" | "letterbox" | "fit_height" | "fit_width". Default "stretch".
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
    /// "pillow" (bit-exact with Pillow, default) | "fast" (SIMD, within one grey level of
    /// Pillow) | "opencv-linear" | "opencv-area" | "opencv-nearest" (bit-exact with
    /// `cv2.resize`'s INTER_LINEAR, INTER_AREA, INTER_NEAREST) | "opencv-cubic" |
    /// "opencv-lanczos4" (within one grey level of INTER_CUBIC, INTER_LANCZOS4).
    #[serde(default)]
    pub resampler: Option<Resampler>,
    /// For "letterbox", "fit_height", "fit_width": where the padding goes, "center" or "end"
    /// (right and below). Default "center" for letterbox, "end" for the others.
    #[serde(default)]
    pub pad: Option<PadPlace>,
    /// Padding as a pixel value, 1 or 3 values 0..255 (R, G, B), normalised like the image
    /// (Ultralytics: 114). Default 0 (black).
    #[serde(default)]
    pub pad_value: Option<Vec<u8>>,
    /// Padding as the tensor value itself, after normalisation (1 or 3 values; PaddleOCR: 0.0).
    /// Float inputs only; not with `pad_value`.
    #[serde(default)]
    pub pad_normalized: Option<Vec<f32>>,
    /// For "crop": how half of an odd margin is rounded, "half_even" (torchvision, timm;
    /// default), "floor" (Keras, `//` in scripts) or "round" (ties away from zero).
    #[serde(default)]
    pub crop_rounding: Option<CropRounding>,
    /// For "crop": how the long side, `resize_to * long / short`, is rounded: "round" (ties
    /// away from zero; default) or "floor" (torchvision's `Resize` truncates) or "half_even".
    #[serde(default)]
    pub long_side_rounding: Option<CropRounding>,
    /// JPEG frames are decoded at reduced DCT scale (1/2, 1/4, 1/8) only while the decoded image
    /// stays at least this many times the size it is resized to: Pillow's `reducing_gap`.
    /// Default 2.0 (as Pillow's `thumbnail`): a 640x480 or 1280x720 frame is decoded in full
    /// for a 224x224 model. 1.0 is the fastest (both are decoded at 1/2 scale, then resized).
    #[serde(default)]
    pub reducing_gap: Option<f32>,
}

/// The resize implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resampler {
    /// Bit-exact with Pillow's `resize(..., BILINEAR)`: what most models were trained with.
    Pillow,
    /// Bit-exact with Pillow's `resize(..., BICUBIC)`: timm's default, and torchvision's with
    /// `interpolation=BICUBIC`.
    PillowBicubic,
    /// Bit-exact with Pillow's `resize(..., NEAREST)`: Keras' `load_img` default.
    PillowNearest,
    /// fast_image_resize's SIMD bilinear convolution: faster, within one grey level of Pillow.
    Fast,
    /// `cv2.resize(..., interpolation=INTER_NEAREST)`, bit-exact.
    OpencvNearest,
    /// `cv2.resize(..., interpolation=INTER_LINEAR)` (OpenCV's default), bit-exact.
    OpencvLinear,
    /// `cv2.resize(..., interpolation=INTER_AREA)`, bit-exact.
    OpencvArea,
    /// `cv2.resize(..., interpolation=INTER_CUBIC)`, within one grey level.
    OpencvCubic,
    /// `cv2.resize(..., interpolation=INTER_LANCZOS4)`, within one grey level.
    OpencvLanczos4,
}

impl Resampler {
    /// Pillow's filter for the `pillow*` resamplers (lookout's own Pillow-exact resampler).
    pub fn pillow(self) -> Option<resample::Filter> {
        match self {
            Resampler::Pillow => Some(resample::Filter::Bilinear),
            Resampler::PillowBicubic => Some(resample::Filter::Bicubic),
            _ => None,
        }
    }

    /// OpenCV's interpolation for the `opencv-*` resamplers.
    pub fn opencv(self) -> Option<Interpolation> {
        Some(match self {
            Resampler::Pillow
            | Resampler::PillowBicubic
            | Resampler::PillowNearest
            | Resampler::Fast => return None,
            Resampler::OpencvNearest => Interpolation::Nearest,
            Resampler::OpencvLinear => Interpolation::Linear,
            Resampler::OpencvArea => Interpolation::Area,
            Resampler::OpencvCubic => Interpolation::Cubic,
            Resampler::OpencvLanczos4 => Interpolation::Lanczos4,
        })
    }
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
    pub pad: PadPlace,
    pub pad_fill: PadFill,
    pub crop_rounding: CropRounding,
    pub long_side_rounding: CropRounding,
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
        if self.preset.is_some() {
            return self.with_preset().validate_keys(key, p);
        }
        self.validate_keys(key, p)
    }

    fn validate_keys(&self, key: &str, p: &mut Problems) {
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
        let pads = matches!(
            self.resize,
            Some(ResizeMode::Letterbox | ResizeMode::FitHeight | ResizeMode::FitWidth)
        );
        for (name, set) in [
            ("pad", self.pad.is_some()),
            ("pad_value", self.pad_value.is_some()),
            ("pad_normalized", self.pad_normalized.is_some()),
        ] {
            if set && !pads {
                p.push(
                    format!("{key}.{name}"),
                    "applies to resize = \"letterbox\", \"fit_height\" or \"fit_width\" only: set one, or remove it".to_owned(),
                );
            }
        }
        if self.pad_value.is_some() && self.pad_normalized.is_some() {
            p.push(
                format!("{key}.pad_normalized"),
                "set either pad_value (a pixel value) or pad_normalized (a tensor value), not both"
                    .to_owned(),
            );
        }
        if let Some(v) = &self.pad_value {
            if !(v.len() == 1 || v.len() == 3) {
                p.push(
                    format!("{key}.pad_value"),
                    format!("expected 1 or 3 values 0..255, got {}", v.len()),
                );
            }
        }
        for (name, set) in [
            ("crop_rounding", self.crop_rounding.is_some()),
            ("long_side_rounding", self.long_side_rounding.is_some()),
        ] {
            if set && self.resize != Some(ResizeMode::Crop) {
                p.push(
                    format!("{key}.{name}"),
                    format!("applies to resize = \"crop\" only: set it, or remove {name}"),
                );
            }
        }
        for (name, v, positive) in [
            ("mean", &self.mean, false),
            ("std", &self.std, true),
            ("pad_normalized", &self.pad_normalized, false),
        ] {
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
        if let Some(preset) = self.preset {
            let mut c = self.with_preset();
            c.preset = None;
            let longest = input.width.max(input.height) as u32;
            c.resize_to = c.resize_to.or(preset.resize_to(longest));
            return c.resolve(builtin, input);
        }
        let (mean, std) = if builtin {
            (BUILTIN_MEAN, BUILTIN_STD)
        } else {
            ([0.0; 3], [1.0; 3])
        };
        if input.dtype != InputType::F32 && self.pad_normalized.is_some() {
            return Err(format!(
                "model.preprocess.pad_normalized applies to float32 inputs only; this model's input is {:?}: use pad_value (a pixel value) instead",
                input.dtype
            ));
        }
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
        let resize = self.resize.unwrap_or(ResizeMode::Stretch);
        let pad_fill = match (&self.pad_value, &self.pad_normalized) {
            (_, Some(v)) => PadFill::Normalized(three(v)),
            (Some(v), None) => PadFill::Pixel(match v[..] {
                [a] => [a; 3],
                [a, b, c] => [a, b, c],
                _ => [0; 3], // refused by validate()
            }),
            (None, None) => PadFill::Pixel([0; 3]),
        };
        let p = Preprocess {
            resize,
            resize_to: self.resize_to.unwrap_or((longest * 256).div_ceil(224)),
            channel_order: self.channel_order.unwrap_or(ChannelOrder::Rgb),
            scale: self.scale.unwrap_or(255.0),
            mean: self.mean.as_deref().map_or(mean, three),
            std: self.std.as_deref().map_or(std, three),
            resampler: self.resampler.unwrap_or(Resampler::Pillow),
            reducing_gap: self.reducing_gap.unwrap_or(DEFAULT_REDUCING_GAP),
            pad: self.pad.unwrap_or(if resize == ResizeMode::Letterbox {
                PadPlace::Center
            } else {
                PadPlace::End
            }),
            pad_fill,
            crop_rounding: self.crop_rounding.unwrap_or(CropRounding::HalfEven),
            long_side_rounding: self.long_side_rounding.unwrap_or(CropRounding::Round),
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
