//! The `synthetic` source: rendered scenes of parts on a conveyor, with their true label.
//!
//! It needs no hardware, so the daemon, the demo and the tests run anywhere. Scenes come from
//! [`super::scene`], the same renderer the bundled model was trained on (`models/train.py`), so
//! the daemon can report its accuracy. Frames are delivered in the pixel format a camera would
//! use (`rgb24`, `mjpeg`, `yuyv422`, `gray`), so the decode path is exercised too.

use std::sync::Arc;

use serde::Deserialize;

use super::scene::{self, SceneRng, CLASSES};
use super::{validate_fps, FrameSource, Pacer, SourceError};
use crate::frame::{Frame, PixelFormat};
use crate::problems::Problems;
use crate::stop::StopToken;

/// Pixel formats the synthetic source can emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyntheticFormat {
    #[default]
    Rgb24,
    Mjpeg,
    Yuyv422,
    Gray,
}

/// `type = "synthetic"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Frame width in pixels. Default 320.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Frame height in pixels. Default 240.
    #[serde(default = "default_height")]
    pub height: u32,
    /// Frames per second; 0 = as fast as the workers take them (no frame dropped). Default 10.
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// "rgb24" | "mjpeg" | "yuyv422" | "gray". Default "rgb24".
    #[serde(default)]
    pub format: SyntheticFormat,
    /// Seed of the scene generator: the same seed gives the same frames. Default 1.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Stop after this many frames; 0 = never. Default 0.
    #[serde(default)]
    pub count: u64,
    /// Scene classes to draw from, uniformly. Default: all of ok, scratch, dent, missing.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
}

fn default_width() -> u32 {
    320
}
fn default_height() -> u32 {
    240
}
fn default_fps() -> f64 {
    10.0
}
fn default_seed() -> u64 {
    1
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            width: default_width(),
            height: default_height(),
            fps: default_fps(),
            format: SyntheticFormat::default(),
            seed: default_seed(),
            count: 0,
            classes: None,
        }
    }
}

impl SyntheticConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        p.range(&format!("{key}.width"), self.width, 32, 4096);
        p.range(&format!("{key}.height"), self.height, 32, 4096);
        if matches!(self.format, SyntheticFormat::Yuyv422) && !self.width.is_multiple_of(2) {
            p.push(format!("{key}.width"), "must be even for yuyv422");
        }
        validate_fps(key, self.fps, p);
        if let Some(classes) = &self.classes {
            if classes.is_empty() {
                p.push(
                    format!("{key}.classes"),
                    format!("list at least one of {}", CLASSES.join(", ")),
                );
            }
            for c in classes {
                if !CLASSES.contains(&c.as_str()) {
                    p.push(
                        format!("{key}.classes"),
                        format!(
                            "unknown class {c:?}; expected some of {}",
                            CLASSES.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

pub struct SyntheticSource {
    cfg: SyntheticConfig,
    rng: SceneRng,
    classes: Vec<usize>,
    produced: u64,
    pacer: Pacer,
    image: image::RgbImage,
}

impl SyntheticSource {
    pub fn new(cfg: SyntheticConfig) -> SyntheticSource {
        let classes = match &cfg.classes {
            Some(names) => names
                .iter()
                .filter_map(|n| CLASSES.iter().position(|c| c == n))
                .collect(),
            None => (0..CLASSES.len()).collect(),
        };
        SyntheticSource {
            rng: SceneRng::new(cfg.seed),
            pacer: Pacer::new(cfg.fps),
            image: image::RgbImage::new(cfg.width, cfg.height),
            classes,
            produced: 0,
            cfg,
        }
    }

    fn encode(&self) -> Result<(PixelFormat, Vec<u8>), SourceError> {
        let rgb = self.image.as_raw();
        Ok(match self.cfg.format {
            SyntheticFormat::Rgb24 => (PixelFormat::Rgb24, rgb.clone()),
            SyntheticFormat::Gray => (
                PixelFormat::Gray8,
                rgb.chunks_exact(3)
                    .map(|p| luma(p[0], p[1], p[2]))
                    .collect(),
            ),
            SyntheticFormat::Yuyv422 => (PixelFormat::Yuyv422, rgb_to_yuyv(rgb)),
            SyntheticFormat::Mjpeg => {
                let mut out = Vec::with_capacity(rgb.len() / 8);
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                    .encode_image(&self.image)
                    .map_err(SourceError::Encode)?;
                (PixelFormat::Mjpeg, out)
            }
        })
    }
}

fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// RGB -> BT.601 limited-range YUYV, chroma averaged over each pixel pair (what a camera sends).
pub fn rgb_to_yuyv(rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len() / 3 * 2);
    for pair in rgb.chunks_exact(6) {
        let y = |r: f32, g: f32, b: f32| {
            (16.0 + 0.256_788 * r + 0.504_129 * g + 0.097_906 * b)
                .round()
                .clamp(0.0, 255.0) as u8
        };
        let (r0, g0, b0) = (pair[0] as f32, pair[1] as f32, pair[2] as f32);
        let (r1, g1, b1) = (pair[3] as f32, pair[4] as f32, pair[5] as f32);
        let (r, g, b) = ((r0 + r1) / 2.0, (g0 + g1) / 2.0, (b0 + b1) / 2.0);
        let u = (128.0 - 0.148_223 * r - 0.290_993 * g + 0.439_216 * b)
            .round()
            .clamp(0.0, 255.0) as u8;
        let v = (128.0 + 0.439_216 * r - 0.367_788 * g - 0.071_427 * b)
            .round()
            .clamp(0.0, 255.0) as u8;
        out.extend_from_slice(&[y(r0, g0, b0), u, y(r1, g1, b1), v]);
    }
    out
}

impl FrameSource for SyntheticSource {
    fn describe(&self) -> String {
        "synthetic".into()
    }

    fn live(&self) -> bool {
        self.cfg.fps > 0.0
    }

    fn open(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, SourceError> {
        if self.cfg.count > 0 && self.produced >= self.cfg.count {
            return Ok(None);
        }
        if self.pacer.wait(stop) {
            return Ok(None);
        }
        let class = self.classes[self.rng.below(self.classes.len())];
        scene::render_into(class, &mut self.rng, &mut self.image);
        let (format, data) = self.encode()?;
        let (w, h) = (self.cfg.width, self.cfg.height);
        let mut frame = Frame::new(format, w, h, data);
        if format == PixelFormat::Mjpeg {
            (frame.width, frame.height) = (0, 0);
        }
        frame.truth = Some(Arc::from(CLASSES[class]));
        self.produced += 1;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_rgb, RgbBuf};

    #[test]
    fn every_format_decodes_back_to_the_scene() {
        for format in [
            SyntheticFormat::Rgb24,
            SyntheticFormat::Mjpeg,
            SyntheticFormat::Yuyv422,
            SyntheticFormat::Gray,
        ] {
            let cfg = SyntheticConfig {
                fps: 0.0,
                format,
                count: 2,
                ..Default::default()
            };
            let mut s = SyntheticSource::new(cfg);
            let stop = StopToken::new();
            let f = s.next_frame(&stop).expect("frame").expect("some");
            assert!(f.truth.is_some());
            let mut rgb = RgbBuf::default();
            decode_rgb(&f, None, &mut rgb).expect("decodes");
            assert_eq!((rgb.width, rgb.height), (320, 240), "{format:?}");
            // Mean absolute difference to the rendered image stays small for every format.
            let diff: u64 = rgb
                .data
                .iter()
                .zip(s.image.as_raw())
                .map(|(a, b)| (*a as i64 - *b as i64).unsigned_abs())
                .sum();
            let mad = diff as f64 / rgb.data.len() as f64;
            let limit = if format == SyntheticFormat::Gray {
                40.0
            } else {
                6.0
            };
            assert!(mad < limit, "{format:?}: mean abs diff {mad}");
            s.next_frame(&stop).expect("second").expect("some");
            assert!(
                s.next_frame(&stop).expect("end").is_none(),
                "count = 2 ends the source"
            );
        }
    }

    #[test]
    fn same_seed_same_frames() {
        let cfg = SyntheticConfig {
            fps: 0.0,
            ..Default::default()
        };
        let stop = StopToken::new();
        let a = SyntheticSource::new(cfg.clone())
            .next_frame(&stop)
            .expect("a")
            .expect("a");
        let b = SyntheticSource::new(cfg)
            .next_frame(&stop)
            .expect("b")
            .expect("b");
        assert_eq!(a.data, b.data);
        assert_eq!(a.truth, b.truth);
    }
}
