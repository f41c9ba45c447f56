//! Regions of a frame classified as their own crops: the frame is decoded once at full size
//! (a JPEG only in the window that holds every region, [`decode_jpeg_window`]: its pixels are
//! the full decode's), each region cut out of it and given the model's preprocessing, and the crops go through the
//! model a batch at a time when the model's batch is larger than one (set `input_shape`'s batch
//! to the number of regions on a model whose batch dimension is open), else one run each.

use std::time::{Duration, Instant};

use lookout_engine::team;

use super::{ModelError, Scores, Session};
use crate::frame::jpeg_window::{decode_jpeg_window, PixelRect};
use crate::frame::rect::pixels;
use crate::frame::{decode_rgb, jpeg_data, Frame, FrameError, RgbBuf};
use crate::model::ClassifyError;

/// The `rect` (fractions of the frame) of `rgb`, copied out.
pub fn crop(rgb: &RgbBuf, rect: [f64; 4]) -> RgbBuf {
    crop_pixels(rgb, pixels(rect, rgb.width, rgb.height))
}

/// The pixels `(x, y, w, h)` of `rgb` (inside it), copied out.
pub fn crop_pixels(rgb: &RgbBuf, (x, y, w, h): PixelRect) -> RgbBuf {
    let stride = rgb.width as usize * 3;
    let mut data = Vec::with_capacity(w as usize * h as usize * 3);
    for row in y..y + h {
        let start = row as usize * stride + x as usize * 3;
        data.extend_from_slice(&rgb.data[start..start + w as usize * 3]);
    }
    RgbBuf {
        width: w,
        height: h,
        data,
    }
}

/// The crops of `rects` (fractions of the frame) of `frame`, in order: a JPEG is decoded only
/// in the window that holds them all, another format whole; `rgb` is the decode buffer.
pub fn decode_crops(
    frame: &Frame,
    rects: &[[f64; 4]],
    rgb: &mut RgbBuf,
) -> Result<Vec<RgbBuf>, ClassifyError> {
    Ok(match jpeg_data(frame) {
        Some(data) => {
            // Only the rows and iMCU columns that hold every region are decoded.
            let mut px = Vec::with_capacity(rects.len());
            let at = decode_jpeg_window(
                data,
                |fw, fh| {
                    px.extend(rects.iter().map(|r| pixels(*r, fw, fh)));
                    bounds(&px)
                },
                rgb,
            )?;
            let (ww, wh) = (rgb.width, rgb.height);
            let inside = |&(x, y, w, h): &PixelRect| {
                x >= at.x && y >= at.y && x + w <= at.x + ww && y + h <= at.y + wh
            };
            if !px.iter().all(inside) {
                return Err(FrameError::Jpeg("the decoded window misses a region".into()).into());
            }
            px.iter()
                .map(|&(x, y, w, h)| crop_pixels(rgb, (x - at.x, y - at.y, w, h)))
                .collect::<Vec<_>>()
        }
        None => {
            decode_rgb(frame, None, rgb)?;
            let (w, h) = (rgb.width, rgb.height);
            if w == 0 || h == 0 || rgb.data.len() < w as usize * h as usize * 3 {
                return Err(FrameError::Geometry {
                    format: frame.format.name(),
                    width: w,
                    height: h,
                    why: "a frame with regions needs pixels to crop",
                }
                .into());
            }
            rects.iter().map(|r| crop(rgb, *r)).collect()
        }
    })
}

impl Session {
    /// Classifies each of `rects` (fractions of the frame) of `frame` as its own image; one
    /// result per rectangle, in order. The frame's decode time is shared out over them.
    pub fn classify_regions(
        &mut self,
        frame: &Frame,
        rects: &[[f64; 4]],
    ) -> Result<Vec<Scores>, ClassifyError> {
        // Idle workers (`pipeline.assist`) are invited before decoding (see `team::invite`).
        team::invite();
        let t0 = Instant::now();
        let mut rgb = std::mem::take(&mut self.rgb);
        let crops = decode_crops(frame, rects, &mut rgb);
        self.rgb = rgb;
        let crops = crops?;
        let decode = t0.elapsed() / rects.len().max(1) as u32;
        self.classify_crops(&crops.iter().collect::<Vec<_>>(), decode)
    }

    /// Classifies crops already cut out of a frame ([`decode_crops`]), a batch at a time;
    /// `decode` is recorded as each one's share of the decode time. Several models' sessions
    /// classify their regions of one decoded frame this way.
    pub fn classify_crops(
        &mut self,
        crops: &[&RgbBuf],
        decode: Duration,
    ) -> Result<Vec<Scores>, ClassifyError> {
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(self.batch()) {
            out.extend(self.infer(chunk).map_err(ModelError::Infer)?);
        }
        for s in &mut out {
            s.decode = decode;
        }
        Ok(out)
    }
}

/// The smallest rectangle holding every one of `rects` (nothing: an empty one at 0, 0).
fn bounds(rects: &[PixelRect]) -> PixelRect {
    let x0 = rects.iter().map(|r| r.0).min().unwrap_or(0);
    let y0 = rects.iter().map(|r| r.1).min().unwrap_or(0);
    let x1 = rects.iter().map(|r| r.0 + r.2).max().unwrap_or(0);
    let y1 = rects.iter().map(|r| r.1 + r.3).max().unwrap_or(0);
    (x0, y0, x1 - x0, y1 - y0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crop_copies_the_rectangle_row_by_row() {
        // 4x2 image whose pixel (x, y) is [x, y, 7].
        let mut data = Vec::new();
        for y in 0..2u8 {
            for x in 0..4u8 {
                data.extend_from_slice(&[x, y, 7]);
            }
        }
        let rgb = RgbBuf {
            width: 4,
            height: 2,
            data,
        };
        let c = crop(&rgb, [0.5, 0.5, 0.5, 0.5]);
        assert_eq!((c.width, c.height), (2, 1));
        assert_eq!(c.data, [2, 1, 7, 3, 1, 7]);
        let all = crop(&rgb, [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(all.data, rgb.data);
    }

    /// Regions of a JPEG frame (its window decoded only) score exactly as the same regions
    /// of the frame decoded in full: the window's pixels are the full decode's, bit for bit.
    #[test]
    fn regions_of_a_partly_decoded_jpeg_score_as_a_full_decode() {
        use crate::frame::PixelFormat;
        use crate::model::{Model, ModelConfig};
        let model = std::sync::Arc::new(Model::load(&ModelConfig::default()).expect("model"));
        let mut session = model.session().expect("session");
        let mut rng = crate::source::scene::SceneRng::new(9);
        let img = crate::source::scene::render(2, &mut rng, 640, 480);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .expect("encode");
        let mut full = RgbBuf::default();
        crate::frame::decode_jpeg(&jpeg, None, &mut full).expect("decode");
        let decoded = Frame::new(PixelFormat::Rgb24, full.width, full.height, full.data);
        let jpeg = Frame::new(PixelFormat::Mjpeg, 0, 0, jpeg);
        for rects in [
            vec![[0.0, 0.0, 0.3, 0.3]],
            vec![[0.55, 0.6, 0.45, 0.4], [0.7, 0.75, 0.1, 0.1]],
            vec![[0.2, 0.1, 0.2, 0.8]],
        ] {
            let a = session.classify_regions(&jpeg, &rects).expect("window");
            let b = session.classify_regions(&decoded, &rects).expect("full");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.raw, y.raw, "{rects:?}");
            }
        }
    }

    #[test]
    fn the_window_of_regions_bounds_them_all() {
        assert_eq!(bounds(&[(10, 20, 5, 5), (2, 30, 4, 10)]), (2, 20, 13, 20));
        assert_eq!(bounds(&[]), (0, 0, 0, 0));
    }

    #[test]
    fn each_region_is_classified_as_the_image_it_crops() {
        // A frame of two synthetic scenes side by side: each half classified alone gives the
        // same scores as that scene classified as a whole frame.
        use crate::model::{Model, ModelConfig};
        let model = std::sync::Arc::new(Model::load(&ModelConfig::default()).expect("model"));
        let mut session = model.session().expect("session");
        let scene = |seed| {
            let cfg = crate::source::synthetic::SyntheticConfig {
                width: 160,
                height: 120,
                fps: 0.0,
                seed,
                ..Default::default()
            };
            let mut src = crate::source::synthetic::SyntheticSource::new(cfg);
            use crate::source::FrameSource;
            src.open().expect("open");
            src.next_frame(&crate::stop::StopToken::new())
                .expect("frame")
                .expect("one")
        };
        let (a, b) = (scene(3), scene(11));
        let mut data = Vec::with_capacity(320 * 120 * 3);
        for row in 0..120 {
            data.extend_from_slice(&a.data[row * 480..][..480]);
            data.extend_from_slice(&b.data[row * 480..][..480]);
        }
        let both = Frame::new(crate::frame::PixelFormat::Rgb24, 320, 120, data);
        let got = session
            .classify_regions(&both, &[[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 0.5, 1.0]])
            .expect("classified");
        assert_eq!(got.len(), 2);
        for (region, whole) in got.iter().zip([&a, &b]) {
            let alone = session.classify_frame(whole).expect("classified");
            for (x, y) in region.probs.iter().zip(&alone.probs) {
                assert!(
                    (x - y).abs() < 1e-5,
                    "{:?} vs {:?}",
                    region.probs,
                    alone.probs
                );
            }
        }
    }
}
