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

use fast_image_resize as fr;
use serde::Deserialize;
use tract_onnx::prelude::Tensor;

use super::resample::RowWriter;
use super::InputSpec;
use crate::config::Problems;
use crate::frame::RgbBuf;

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

/// Per-worker preprocessing state: the resizer and its buffers, reused frame after frame.
pub struct Preprocessor {
    spec: Preprocess,
    input: InputSpec,
    resizer: fr::Resizer,
    /// Resized RGB at the model's input size.
    resized: Vec<u8>,
    /// Letterbox: the fitted image before padding.
    fitted: Vec<u8>,
    /// Intermediate rows of the two-pass Pillow resize.
    scratch: super::resample::Scratch,
    /// lut[c][v]: normalised value of pixel value `v` in model channel `c`.
    lut: [[f32; 256]; 3],
}

impl Preprocessor {
    pub fn new(spec: Preprocess, input: InputSpec) -> Preprocessor {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = ((v as f32 / spec.scale) - spec.mean[c]) / spec.std[c];
            }
        }
        Preprocessor {
            spec,
            input,
            resizer: fr::Resizer::new(),
            resized: Vec::new(),
            fitted: Vec::new(),
            scratch: Default::default(),
            lut,
        }
    }

    /// For a frame whose full size is `w` x `h`: the smallest decode that keeps quality.
    pub fn min_decode_size(&self, w: u32, h: u32) -> (u32, u32) {
        self.decode_sizer().min_decode_size(w, h)
    }

    /// A copy of what [`Self::min_decode_size`] needs, to use while `self` is borrowed.
    pub fn decode_sizer(&self) -> DecodeSizer {
        DecodeSizer {
            spec: self.spec,
            width: self.input.width as u32,
            height: self.input.height as u32,
        }
    }

    /// The resized RGB image of the last [`Self::run`], at the model's input size.
    pub fn resized(&self) -> &[u8] {
        &self.resized
    }

    /// Resizes and normalises `rgb` into a new input tensor. A model with a fixed batch larger
    /// than 1 gets this image in every slot.
    pub fn run(&mut self, rgb: &RgbBuf) -> Tensor {
        self.run_batch(&[rgb])
    }

    /// Resizes and normalises up to a batch of images into one input tensor: image `i` in slot
    /// `i`; slots beyond the images given repeat the last one (their results are not used).
    pub fn run_batch(&mut self, rgbs: &[&RgbBuf]) -> Tensor {
        let (tw, th) = (self.input.width as u32, self.input.height as u32);
        self.tensor(rgbs.len(), |pre, b| pre.resize(rgbs[b], tw, th))
    }

    /// [`Self::run`] for an image that `fill` writes into `rgb` (resized here to `w` x `h`) top
    /// to bottom as it decodes it. With an idle worker helping, the Pillow resize's horizontal
    /// pass runs beside the decode, on the rows already written (see
    /// [`super::resample::resize_rgb_filled`]); the tensor is the same either way. Returns
    /// `fill`'s error.
    pub fn run_filled<E>(
        &mut self,
        rgb: &mut RgbBuf,
        w: u32,
        h: u32,
        fill: impl FnOnce(&mut RowWriter<'_>) -> Result<(), E>,
    ) -> Result<Tensor, E> {
        rgb.width = w;
        rgb.height = h;
        // Every byte is written by `fill`: no clearing when the size stays.
        rgb.data.resize(w as usize * h as usize * 3, 0);
        if self.spec.resampler != Resampler::Pillow {
            super::resample::fill_all(&mut rgb.data, w as usize * 3, h as usize, fill)?;
            return Ok(self.run(rgb));
        }
        let (tw, th) = (self.input.width as u32, self.input.height as u32);
        let g = self.spec.geometry(w, h, tw, th);
        let (_, _, dw, dh) = g.dst;
        let direct = g.fills(tw, th);
        self.resized.clear();
        self.resized.resize((tw * th * 3) as usize, 0);
        let dst_buf = resize_target(&mut self.resized, &mut self.fitted, direct, dw, dh);
        let (sl, st, sw, sh) = g.src;
        super::resample::resize_rgb_filled(
            &mut rgb.data,
            w as usize,
            h as usize,
            (sl, st, sl + sw, st + sh),
            dst_buf,
            dw as usize,
            dh as usize,
            &mut self.scratch,
            fill,
        )?;
        if !direct {
            self.place_fitted(g.dst);
        }
        Ok(self.tensor(1, |_, _| {}))
    }

    /// A new input tensor of `n` images (at most the batch; slots beyond repeat the last):
    /// `resize(self, b)` leaves image `b` in `self.resized`, which is then normalised into
    /// slot `b`.
    fn tensor(&mut self, n: usize, mut resize: impl FnMut(&mut Self, usize)) -> Tensor {
        let (tw, th) = (self.input.width as u32, self.input.height as u32);
        let shape = self.input.shape();
        let batch = if self.input.has_batch_axis {
            shape[0]
        } else {
            1
        };
        let per_item = (tw * th) as usize * self.input.channels;
        let n = n.min(batch);
        match self.input.dtype {
            InputType::F32 => {
                let mut all = vec![0f32; per_item * batch];
                for b in 0..n {
                    resize(self, b);
                    let lut = &self.lut;
                    self.write_item(&mut all[b * per_item..][..per_item], |v, c| {
                        lut[c][v as usize]
                    });
                }
                repeat_last(&mut all, n, per_item);
                shaped(all, &shape)
            }
            InputType::U8 => {
                let mut all = vec![0u8; per_item * batch];
                for b in 0..n {
                    resize(self, b);
                    self.write_item(&mut all[b * per_item..][..per_item], |v, _| v);
                }
                repeat_last(&mut all, n, per_item);
                shaped(all, &shape)
            }
            InputType::I8 => {
                let mut all = vec![0i8; per_item * batch];
                for b in 0..n {
                    resize(self, b);
                    self.write_item(&mut all[b * per_item..][..per_item], |v, _| {
                        (v as i16 - 128) as i8
                    });
                }
                repeat_last(&mut all, n, per_item);
                shaped(all, &shape)
            }
        }
    }

    /// Writes the resized image (`self.resized`) into one batch slot, in the model's layout,
    /// channel order and element type (`conv(pixel value, model channel)`).
    fn write_item<T>(&self, out: &mut [T], conv: impl Fn(u8, usize) -> T) {
        let plane = self.input.width * self.input.height;
        let channels = self.input.channels;
        let order = self.spec.channel_order;
        let layout = self.input.layout;
        // Source channel for model channel c (gray models take luma, computed below).
        let src_channel = |c: usize| if order == ChannelOrder::Bgr { 2 - c } else { c };
        let pixels = &self.resized;
        let luma = |i: usize| {
            let p = &pixels[i * 3..i * 3 + 3];
            // ITU-R 601-2 luma, as Pillow's convert("L").
            ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
        };
        if channels == 1 {
            for (i, o) in out.iter_mut().enumerate().take(plane) {
                *o = conv(luma(i), 0);
            }
            return;
        }
        match layout {
            Layout::Nchw => {
                for c in 0..channels {
                    let s = src_channel(c);
                    let plane_out = &mut out[c * plane..(c + 1) * plane];
                    for (o, p) in plane_out.iter_mut().zip(pixels.chunks_exact(3)) {
                        *o = conv(p[s], c);
                    }
                }
            }
            Layout::Nhwc => {
                for (o, p) in out.chunks_exact_mut(channels).zip(pixels.chunks_exact(3)) {
                    for (c, v) in o.iter_mut().enumerate() {
                        *v = conv(p[src_channel(c)], c);
                    }
                }
            }
        }
    }

    fn resize(&mut self, rgb: &RgbBuf, tw: u32, th: u32) {
        let need = (tw * th * 3) as usize;
        self.resized.clear();
        self.resized.resize(need, 0);
        let g = self.spec.geometry(rgb.width, rgb.height, tw, th);
        let (_, _, dw, dh) = g.dst;
        let direct = g.fills(tw, th);
        let (sl, st, sw, sh) = g.src;
        if direct && sl == 0.0 && st == 0.0 && (sw, sh) == (tw as f64, th as f64) {
            self.resized.copy_from_slice(&rgb.data[..need]);
            return;
        }
        let dst_buf = resize_target(&mut self.resized, &mut self.fitted, direct, dw, dh);
        if self.spec.resampler == Resampler::Pillow {
            super::resample::resize_rgb(
                &rgb.data,
                rgb.width as usize,
                rgb.height as usize,
                (sl, st, sl + sw, st + sh),
                dst_buf,
                dw as usize,
                dh as usize,
                &mut self.scratch,
            );
        } else {
            self.resize_fast(rgb, g);
        }
        if !direct {
            self.place_fitted(g.dst);
        }
    }

    /// Copies the fitted image (`self.fitted`) into its rectangle `dst` of `self.resized`.
    fn place_fitted(&mut self, dst: (u32, u32, u32, u32)) {
        let (dx, dy, dw, dh) = dst;
        let tw = self.input.width;
        let row = (dw * 3) as usize;
        for y in 0..dh as usize {
            let to = ((dy as usize + y) * tw + dx as usize) * 3;
            self.resized[to..to + row].copy_from_slice(&self.fitted[y * row..(y + 1) * row]);
        }
    }

    fn resize_fast(&mut self, rgb: &RgbBuf, g: Geometry) {
        let (tw, th) = (self.input.width as u32, self.input.height as u32);
        let (_, _, dw, dh) = g.dst;
        let (sl, st, sw, sh) = g.src;
        let dst_buf = if g.fills(tw, th) {
            &mut self.resized
        } else {
            &mut self.fitted
        };
        let options = fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
            .crop(sl, st, sw, sh);
        // Both images are U8x3 with buffers of exactly the right size (checked by the decoder and
        // sized above), so neither constructor nor resize can fail; should one ever do, the
        // frame is left black rather than panicking.
        let resized =
            fr::images::ImageRef::new(rgb.width, rgb.height, &rgb.data, fr::PixelType::U8x3)
                .and_then(|src| {
                    fr::images::Image::from_slice_u8(
                        dw,
                        dh,
                        dst_buf.as_mut_slice(),
                        fr::PixelType::U8x3,
                    )
                    .map(|dst| (src, dst))
                });
        if let Ok((src, mut dst)) = resized {
            if let Err(e) = self.resizer.resize(&src, &mut dst, &options) {
                log::debug!("resize failed, frame left black. error={e}");
            }
        }
    }
}

/// A tensor of `shape` over `all` (no copy). The element count always matches (the callers size
/// `all` from the shape); were it ever not to, the flat tensor is returned, as before shaping.
fn shaped<T: tract_onnx::prelude::Datum>(all: Vec<T>, shape: &[usize]) -> Tensor {
    use tract_onnx::prelude::tract_ndarray::{Array1, ArrayD, IxDyn};
    if shape.iter().product::<usize>() != all.len() {
        return Tensor::from(Array1::from_vec(all));
    }
    match ArrayD::from_shape_vec(IxDyn(shape), all) {
        Ok(a) => Tensor::from(a),
        // Unreachable: a standard-layout array of a matching element count.
        Err(_) => Tensor::from(Array1::<T>::from_vec(Vec::new())),
    }
}

/// Fills batch slots `n..` with a copy of slot `n - 1` (nothing when `n` is 0).
fn repeat_last<T: Copy>(all: &mut [T], n: usize, per_item: usize) {
    if n == 0 {
        return;
    }
    let last = (n - 1) * per_item;
    let slots = all.len() / per_item.max(1);
    for b in n..slots {
        all.copy_within(last..last + per_item, b * per_item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(layout: Layout, dtype: InputType, c: usize, h: usize, w: usize) -> InputSpec {
        InputSpec {
            name: "x".into(),
            layout,
            dtype,
            batch: 1,
            has_batch_axis: true,
            channels: c,
            height: h,
            width: w,
        }
    }

    fn spec(resize: ResizeMode) -> Preprocess {
        PreprocessConfig {
            resize: Some(resize),
            ..Default::default()
        }
        .resolve(false, &input(Layout::Nchw, InputType::F32, 3, 224, 224))
        .expect("valid")
    }

    fn rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> RgbBuf {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&f(x, y));
            }
        }
        RgbBuf {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn geometry_per_resize_mode() {
        // (mode, source size, expected geometry) for a 224x224 target.
        let cases = [
            (
                ResizeMode::Stretch,
                (640, 480),
                Geometry {
                    src: (0.0, 0.0, 640.0, 480.0),
                    dst: (0, 0, 224, 224),
                },
            ),
            // shorter side 480 -> 256: scaled 341x256, offsets round(58.5)=58 (ties to even), 16.
            (
                ResizeMode::Crop,
                (640, 480),
                Geometry {
                    src: (
                        58.0 * 640.0 / 341.0,
                        16.0 * 480.0 / 256.0,
                        224.0 * 640.0 / 341.0,
                        224.0 * 480.0 / 256.0,
                    ),
                    dst: (0, 0, 224, 224),
                },
            ),
            (
                ResizeMode::Letterbox,
                (640, 480),
                Geometry {
                    src: (0.0, 0.0, 640.0, 480.0),
                    dst: (0, 28, 224, 168),
                },
            ),
            (
                ResizeMode::Letterbox,
                (100, 400),
                Geometry {
                    src: (0.0, 0.0, 100.0, 400.0),
                    dst: (84, 0, 56, 224),
                },
            ),
        ];
        for (mode, (w, h), want) in cases {
            assert_eq!(
                spec(mode).geometry(w, h, 224, 224),
                want,
                "{mode:?} {w}x{h}"
            );
        }
    }

    #[test]
    fn normalisation_layouts_and_dtypes() {
        // A 2x1 image: red then blue, target 2x1 (no resize).
        let img = rgb(2, 1, |x, _| if x == 0 { [255, 0, 0] } else { [0, 0, 255] });
        let cfg = PreprocessConfig {
            mean: Some(vec![0.5]),
            std: Some(vec![0.5]),
            ..Default::default()
        };
        let run = |layout, dtype, order| {
            let mut cfg = cfg.clone();
            cfg.channel_order = Some(order);
            if dtype != InputType::F32 {
                // Integer inputs take pixels as they are; mean/std for them is an error.
                (cfg.mean, cfg.std) = (None, None);
            }
            let inp = input(layout, dtype, 3, 1, 2);
            let spec = cfg.resolve(false, &inp).expect("valid");
            Preprocessor::new(spec, inp).run(&img)
        };
        let t = run(Layout::Nchw, InputType::F32, ChannelOrder::Rgb);
        assert_eq!(t.shape(), &[1, 3, 1, 2]);
        assert_eq!(
            t.to_plain_array_view::<f32>()
                .expect("f32")
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![1.0, -1.0, -1.0, -1.0, -1.0, 1.0]
        );
        let t = run(Layout::Nhwc, InputType::F32, ChannelOrder::Rgb);
        assert_eq!(t.shape(), &[1, 1, 2, 3]);
        assert_eq!(
            t.to_plain_array_view::<f32>()
                .expect("f32")
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![1.0, -1.0, -1.0, -1.0, -1.0, 1.0]
        );
        let t = run(Layout::Nchw, InputType::F32, ChannelOrder::Bgr);
        assert_eq!(
            t.to_plain_array_view::<f32>()
                .expect("f32")
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![-1.0, 1.0, -1.0, -1.0, 1.0, -1.0]
        );
        let t = run(Layout::Nhwc, InputType::U8, ChannelOrder::Rgb);
        assert_eq!(
            t.to_plain_array_view::<u8>()
                .expect("u8")
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![255, 0, 0, 0, 0, 255]
        );
        let t = run(Layout::Nchw, InputType::I8, ChannelOrder::Rgb);
        assert_eq!(
            t.to_plain_array_view::<i8>()
                .expect("i8")
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![127, -128, -128, -128, -128, 127]
        );
    }

    #[test]
    fn float_normalisation_is_refused_for_integer_inputs() {
        let cfg = PreprocessConfig {
            std: Some(vec![0.5]),
            ..Default::default()
        };
        let e = cfg
            .resolve(false, &input(Layout::Nhwc, InputType::I8, 3, 4, 4))
            .expect_err("std on int8");
        assert!(
            e.contains("float32 inputs only") && e.contains("pixel - 128"),
            "{e}"
        );
    }

    #[test]
    fn gray_models_get_luma_and_batches_are_filled() {
        let img = rgb(1, 1, |_, _| [255, 255, 255]);
        let mut inp = input(Layout::Nchw, InputType::U8, 1, 1, 1);
        inp.batch = 4;
        let spec = PreprocessConfig::default()
            .resolve(false, &inp)
            .expect("valid");
        let t = Preprocessor::new(spec, inp).run(&img);
        assert_eq!(t.shape(), &[4, 1, 1, 1]);
        assert_eq!(
            t.to_plain_array_view::<u8>()
                .expect("u8")
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![255, 255, 255, 255]
        );
    }

    #[test]
    fn a_batch_takes_one_image_per_slot_and_repeats_the_last() {
        let imgs: Vec<RgbBuf> = [10u8, 20, 30]
            .iter()
            .map(|&v| rgb(1, 1, move |_, _| [v, v, v]))
            .collect();
        let mut inp = input(Layout::Nhwc, InputType::U8, 3, 1, 1);
        inp.batch = 5;
        let spec = PreprocessConfig::default()
            .resolve(false, &inp)
            .expect("valid");
        let refs: Vec<&RgbBuf> = imgs.iter().collect();
        let t = Preprocessor::new(spec, inp).run_batch(&refs);
        assert_eq!(t.shape(), &[5, 1, 1, 3]);
        let firsts: Vec<u8> = t
            .to_plain_array_view::<u8>()
            .expect("u8")
            .iter()
            .step_by(3)
            .copied()
            .collect();
        assert_eq!(firsts, [10, 20, 30, 30, 30]);
    }

    #[test]
    fn letterbox_pads_black_and_stretch_fills() {
        let white = rgb(40, 20, |_, _| [255, 255, 255]);
        let mut inp = input(Layout::Nhwc, InputType::U8, 3, 20, 20);
        let spec = PreprocessConfig {
            resize: Some(ResizeMode::Letterbox),
            ..Default::default()
        }
        .resolve(false, &inp)
        .expect("valid");
        let mut p = Preprocessor::new(spec, inp.clone());
        p.run(&white);
        let r = p.resized();
        assert_eq!(&r[..3], &[0, 0, 0], "top-left is padding");
        assert_eq!(
            &r[(10 * 20 + 10) * 3..(10 * 20 + 10) * 3 + 3],
            &[255, 255, 255],
            "centre is image"
        );
        inp.layout = Layout::Nhwc;
        let spec = PreprocessConfig::default()
            .resolve(false, &inp)
            .expect("valid");
        let mut p = Preprocessor::new(spec, inp);
        p.run(&white);
        assert!(p.resized().iter().all(|&v| v == 255));
    }

    /// An image written into the preprocessor row by row (as a JPEG decode does) gives the
    /// tensor of the whole image: every resize mode, both resamplers, float and integer inputs,
    /// two-pass and (an input as tall as the image) one-pass resizes. (With a helper:
    /// `resample`'s tests.)
    #[test]
    fn an_image_filled_row_by_row_gives_the_same_tensor() {
        let img = rgb(97, 61, |x, y| {
            [(x * 3 + y) as u8, (x ^ y) as u8, (x * y) as u8]
        });
        for resize in [ResizeMode::Stretch, ResizeMode::Crop, ResizeMode::Letterbox] {
            for resampler in [Resampler::Pillow, Resampler::Fast] {
                for (dtype, side) in [
                    (InputType::F32, 32),
                    (InputType::U8, 24),
                    (InputType::I8, 61),
                ] {
                    let inp = input(Layout::Nchw, dtype, 3, side, side);
                    let spec = PreprocessConfig {
                        resize: Some(resize),
                        resize_to: Some(side as u32),
                        resampler: Some(resampler),
                        ..Default::default()
                    }
                    .resolve(false, &inp)
                    .expect("valid");
                    let mut p = Preprocessor::new(spec, inp);
                    let whole = p.run(&img);
                    let mut filled = RgbBuf::default();
                    let tensor = p
                        .run_filled(&mut filled, 97, 61, |rows| {
                            let mut at = 0;
                            while rows.left() > 0 {
                                rows.write(5, |buf| {
                                    buf.copy_from_slice(&img.data[at..at + buf.len()]);
                                    at += buf.len();
                                    Ok::<_, ()>(())
                                })?;
                            }
                            Ok::<_, ()>(())
                        })
                        .expect("filled");
                    assert_eq!(filled.data, img.data);
                    assert_eq!((filled.width, filled.height), (97, 61));
                    assert_eq!(tensor, whole, "{resize:?} {resampler:?} {dtype:?}");
                }
            }
        }
    }

    #[test]
    fn crop_keeps_the_centre() {
        // Left third red, middle green, right third blue: a centre crop sees only green.
        let img = rgb(300, 100, |x, _| {
            if x < 100 {
                [255, 0, 0]
            } else if x < 200 {
                [0, 255, 0]
            } else {
                [0, 0, 255]
            }
        });
        let inp = input(Layout::Nhwc, InputType::U8, 3, 32, 32);
        let spec = PreprocessConfig {
            resize: Some(ResizeMode::Crop),
            resize_to: Some(40),
            ..Default::default()
        }
        .resolve(false, &inp)
        .expect("valid");
        let mut p = Preprocessor::new(spec, inp);
        p.run(&img);
        assert!(p
            .resized()
            .chunks(3)
            .all(|px| px[1] > 200 && px[0] < 30 && px[2] < 30));
    }

    #[test]
    fn crop_smaller_than_input_is_refused() {
        let inp = input(Layout::Nchw, InputType::F32, 3, 224, 224);
        let e = PreprocessConfig {
            resize: Some(ResizeMode::Crop),
            resize_to: Some(200),
            ..Default::default()
        }
        .resolve(false, &inp)
        .expect_err("too small");
        assert!(e.contains("at least 224"), "{e}");
    }

    #[test]
    fn fast_resampler_stays_within_two_grey_levels_of_pillow() {
        let img = rgb(97, 61, |x, y| {
            [
                ((x * 13 + y * 7) % 256) as u8,
                ((x * y) % 256) as u8,
                ((x + 3 * y) % 256) as u8,
            ]
        });
        let inp = input(Layout::Nhwc, InputType::U8, 3, 24, 32);
        let run = |resampler| {
            let spec = PreprocessConfig {
                resampler: Some(resampler),
                ..Default::default()
            }
            .resolve(false, &inp)
            .expect("valid");
            let mut p = Preprocessor::new(spec, inp.clone());
            p.run(&img);
            p.resized().to_vec()
        };
        let (pillow, fast) = (run(Resampler::Pillow), run(Resampler::Fast));
        assert_eq!(pillow.len(), fast.len());
        let worst = pillow
            .iter()
            .zip(&fast)
            .map(|(a, b)| (*a as i16 - *b as i16).abs())
            .max()
            .expect("pixels");
        assert!(
            worst <= 2,
            "fast resampler differs from Pillow by {worst} grey levels"
        );
    }

    #[test]
    fn reduced_decode_size_keeps_the_reducing_gap() {
        let inp = input(Layout::Nchw, InputType::F32, 3, 224, 224);
        let p = Preprocessor::new(spec(ResizeMode::Stretch), inp.clone());
        assert_eq!(p.min_decode_size(1280, 720), (448, 448));
        let fast = Preprocess {
            reducing_gap: 1.0,
            ..spec(ResizeMode::Stretch)
        };
        assert_eq!(
            Preprocessor::new(fast, inp.clone()).min_decode_size(1280, 720),
            (224, 224)
        );
        let between = Preprocess {
            reducing_gap: 1.5,
            ..spec(ResizeMode::Stretch)
        };
        assert_eq!(
            Preprocessor::new(between, inp).min_decode_size(640, 480),
            (336, 336)
        );
    }

    #[test]
    fn reducing_gap_is_validated() {
        for (g, ok) in [
            (1.0, true),
            (2.0, true),
            (16.0, true),
            (0.5, false),
            (f32::NAN, false),
            (17.0, false),
        ] {
            let c = PreprocessConfig {
                reducing_gap: Some(g),
                ..Default::default()
            };
            let mut p = Problems::default();
            c.validate("model.preprocess", &mut p);
            assert_eq!(p.is_empty(), ok, "{g}: {p:?}");
        }
    }
}
