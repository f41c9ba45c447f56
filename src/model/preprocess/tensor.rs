//! [`Preprocessor`]: one worker's preprocessing state (resizer, buffers, the normalisation
//! lookup table), turning decoded RGB into the model's input tensor frame after frame.

use fast_image_resize as fr;
use tract_onnx::prelude::Tensor;

use super::super::resample::opencv::{self, CvScratch};
use super::super::resample::{self, RowWriter};
use super::super::InputSpec;
use super::resize_target;
use super::DecodeSizer;
use super::{ChannelOrder, Geometry, InputType, Layout, PadFill, Preprocess, Resampler};
use crate::frame::RgbBuf;

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
    scratch: resample::Scratch,
    /// OpenCV resamplers: the whole scaled frame before `crop`, and the resize's buffers.
    scaled: Vec<u8>,
    cv: CvScratch,
    /// Where the last image went in the target (left, top, width, height); the rest is padding.
    placed: (u32, u32, u32, u32),
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
            scratch: resample::Scratch::with_filter(spec.resampler.pillow().unwrap_or_default()),
            scaled: Vec::new(),
            cv: CvScratch::default(),
            placed: (0, 0, 0, 0),
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
    /// [`resample::resize_rgb_filled`]); the tensor is the same either way. Returns
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
        if self.spec.resampler.pillow().is_none() {
            resample::fill_all(&mut rgb.data, w as usize * 3, h as usize, fill)?;
            return Ok(self.run(rgb));
        }
        let (tw, th) = (self.input.width as u32, self.input.height as u32);
        let g = self.spec.geometry(w, h, tw, th);
        let (_, _, dw, dh) = g.dst;
        let direct = g.fills(tw, th);
        self.clear_resized(g);
        let dst_buf = resize_target(&mut self.resized, &mut self.fitted, direct, dw, dh);
        let (sl, st, sw, sh) = g.src;
        resample::resize_rgb_filled(
            &mut rgb.data,
            w as usize,
            h as usize,
            (sl, st, sl + sw, st + sh),
            dst_buf,
            dw as usize,
            dh as usize,
            (g.scaled.0 as usize, g.scaled.1 as usize),
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
                    let slot = &mut all[b * per_item..][..per_item];
                    self.write_item(slot, |v, c| lut[c][v as usize]);
                    if let PadFill::Normalized(values) = self.spec.pad_fill {
                        self.fill_padding(slot, values);
                    }
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

    /// Sets every padded position of one float batch slot to `values[model channel]`.
    fn fill_padding(&self, out: &mut [f32], values: [f32; 3]) {
        let (w, h, channels) = (self.input.width, self.input.height, self.input.channels);
        let (x0, y0, pw, ph) = self.placed;
        let (x0, y0, x1, y1) = (
            x0 as usize,
            y0 as usize,
            (x0 + pw) as usize,
            (y0 + ph) as usize,
        );
        if (x0, y0, x1, y1) == (0, 0, w, h) {
            return;
        }
        let inside = |x: usize, y: usize| (x0..x1).contains(&x) && (y0..y1).contains(&y);
        for y in 0..h {
            for x in 0..w {
                if inside(x, y) {
                    continue;
                }
                for (c, &v) in values.iter().enumerate().take(channels) {
                    let at = match self.input.layout {
                        Layout::Nchw => c * w * h + y * w + x,
                        Layout::Nhwc => (y * w + x) * channels + c,
                    };
                    out[at] = v;
                }
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

    /// Sizes `self.resized` for the target, padding filled with the pad pixel, and notes where
    /// the image goes.
    fn clear_resized(&mut self, g: Geometry) {
        let (tw, th) = (self.input.width, self.input.height);
        let pad = match self.spec.pad_fill {
            PadFill::Pixel(p) if !g.fills(tw as u32, th as u32) => p,
            _ => [0; 3],
        };
        self.resized.clear();
        if pad == [0; 3] {
            self.resized.resize(tw * th * 3, 0);
        } else {
            for _ in 0..tw * th {
                self.resized.extend_from_slice(&pad);
            }
        }
        self.placed = g.dst;
    }

    fn resize(&mut self, rgb: &RgbBuf, tw: u32, th: u32) {
        let need = (tw * th * 3) as usize;
        let g = self.spec.geometry(rgb.width, rgb.height, tw, th);
        self.clear_resized(g);
        let (_, _, dw, dh) = g.dst;
        let direct = g.fills(tw, th);
        let (sl, st, sw, sh) = g.src;
        if direct && sl == 0.0 && st == 0.0 && (sw, sh) == (tw as f64, th as f64) {
            self.resized.copy_from_slice(&rgb.data[..need]);
            return;
        }
        let dst_buf = resize_target(&mut self.resized, &mut self.fitted, direct, dw, dh);
        if let Some(interp) = self.spec.resampler.opencv() {
            self.resize_opencv(rgb, g, interp, direct);
        } else if self.spec.resampler.pillow().is_some() {
            resample::resize_rgb(
                &rgb.data,
                rgb.width as usize,
                rgb.height as usize,
                (sl, st, sl + sw, st + sh),
                dst_buf,
                dw as usize,
                dh as usize,
                (g.scaled.0 as usize, g.scaled.1 as usize),
                &mut self.scratch,
            );
        } else if self.spec.resampler == Resampler::PillowNearest {
            resample::nearest::resize_rgb(
                &rgb.data,
                rgb.width as usize,
                rgb.height as usize,
                (g.scaled.0 as usize, g.scaled.1 as usize),
                (g.crop.0 as usize, g.crop.1 as usize),
                dst_buf,
                dw as usize,
                dh as usize,
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

    /// `cv2.resize` of the whole frame to its scaled size, then the part kept (`crop`) copied
    /// out, as the OpenCV pipelines do it.
    fn resize_opencv(
        &mut self,
        rgb: &RgbBuf,
        g: Geometry,
        interp: opencv::Interpolation,
        direct: bool,
    ) {
        let (_, _, dw, dh) = g.dst;
        let (rw, rh) = g.scaled;
        let (sw, sh) = (rgb.width as usize, rgb.height as usize);
        let whole = (rw, rh) == (dw, dh);
        let out = if direct {
            &mut self.resized
        } else {
            &mut self.fitted
        };
        if whole {
            opencv::resize(
                &rgb.data,
                sw,
                sh,
                3,
                out,
                dw as usize,
                dh as usize,
                interp,
                &mut self.cv,
            );
            return;
        }
        self.scaled.clear();
        self.scaled.resize((rw * rh * 3) as usize, 0);
        opencv::resize(
            &rgb.data,
            sw,
            sh,
            3,
            &mut self.scaled,
            rw as usize,
            rh as usize,
            interp,
            &mut self.cv,
        );
        let (cx, cy) = g.crop;
        let row = dw as usize * 3;
        for y in 0..dh as usize {
            let from = ((cy as usize + y) * rw as usize + cx as usize) * 3;
            out[y * row..(y + 1) * row].copy_from_slice(&self.scaled[from..from + row]);
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
