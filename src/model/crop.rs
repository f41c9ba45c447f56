//! Regions of a frame classified as their own crops: the frame is decoded once at full size,
//! each region cut out of it and given the model's preprocessing, and the crops go through the
//! model a batch at a time when the model's batch is larger than one (set `input_shape`'s batch
//! to the number of regions on a model whose batch dimension is open), else one run each.

use std::time::{Duration, Instant};

use lookout_engine::team;

use super::{ModelError, Scores, Session};
use crate::frame::rect::pixels;
use crate::frame::{decode_rgb, Frame, FrameError, RgbBuf};
use crate::model::ClassifyError;

/// The `rect` (fractions of the frame) of `rgb`, copied out.
pub fn crop(rgb: &RgbBuf, rect: [f64; 4]) -> RgbBuf {
    let (x, y, w, h) = pixels(rect, rgb.width, rgb.height);
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

/// Decodes `frame` at full size into `rgb`, for cropping regions out of it.
pub fn decode_whole(frame: &Frame, rgb: &mut RgbBuf) -> Result<(), ClassifyError> {
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
    Ok(())
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
        let out = decode_whole(frame, &mut rgb).and_then(|()| {
            let decode = t0.elapsed() / rects.len().max(1) as u32;
            self.classify_crops(&rgb, rects, decode)
        });
        self.rgb = rgb;
        out
    }

    /// Classifies each of `rects` of a frame already decoded at full size ([`decode_whole`]),
    /// a batch at a time; `decode` is recorded as each one's share of the decode time. Several
    /// models' sessions classify their regions of one decoded frame this way.
    pub fn classify_crops(
        &mut self,
        rgb: &RgbBuf,
        rects: &[[f64; 4]],
        decode: Duration,
    ) -> Result<Vec<Scores>, ClassifyError> {
        let crops: Vec<RgbBuf> = rects.iter().map(|r| crop(rgb, *r)).collect();
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(self.batch()) {
            let images: Vec<&RgbBuf> = chunk.iter().collect();
            out.extend(self.infer(&images).map_err(ModelError::Infer)?);
        }
        for s in &mut out {
            s.decode = decode;
        }
        Ok(out)
    }
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
