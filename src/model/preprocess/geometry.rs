//! Where a frame goes in the model's input: the size it is scaled to, the part of it kept
//! (`crop`) and where it is placed (`letterbox`, `fit_height`, `fit_width`), for every resize
//! mode. Pure arithmetic; the resizing itself is the resamplers'.

use super::{CropRounding, PadPlace, Preprocess, ResizeMode};

/// A rectangle in source pixels (fractional) mapped onto a rectangle of the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Source crop box: left, top, width, height.
    pub src: (f64, f64, f64, f64),
    /// Destination rectangle inside the target: left, top, width, height.
    pub dst: (u32, u32, u32, u32),
    /// The whole frame's size once scaled (before the crop).
    pub scaled: (u32, u32),
    /// Left and top of the part kept, in scaled pixels (`crop` only; else 0, 0).
    pub crop: (u32, u32),
}

impl Geometry {
    /// Whether the destination is the whole `tw` x `th` target (no padding).
    pub fn fills(&self, tw: u32, th: u32) -> bool {
        self.dst == (0, 0, tw, th)
    }
}

impl CropRounding {
    /// `n / d` (d > 0) rounded this way, exactly (integer arithmetic).
    pub fn ratio(self, n: u64, d: u64) -> u64 {
        let (q, r) = (n / d, n % d);
        let up = match self {
            CropRounding::Floor => false,
            CropRounding::Round => 2 * r >= d,
            CropRounding::HalfEven => 2 * r > d || (2 * r == d && q % 2 == 1),
        };
        q + u64::from(up)
    }

    /// Half of an odd margin, rounded this way.
    pub fn half(self, margin: u32) -> u32 {
        let h = margin as f64 / 2.0;
        (match self {
            CropRounding::HalfEven => h.round_ties_even(),
            CropRounding::Floor => h.floor(),
            CropRounding::Round => h.round(),
        }) as u32
    }
}

impl Preprocess {
    /// Size of the whole frame after scaling, before crop or padding.
    pub fn scaled_size(&self, w: u32, h: u32, tw: u32, th: u32) -> (u32, u32) {
        let (w, h) = (w.max(1) as f64, h.max(1) as f64);
        match self.resize {
            ResizeMode::Stretch => (tw, th),
            ResizeMode::Crop => {
                // The long side: resize_to * long / short, rounded as `long_side_rounding` says
                // (torchvision's Resize truncates: `floor`).
                let (w, h, to) = (w as u64, h as u64, self.resize_to as u64);
                let long = |l: u64, s: u64| self.long_side_rounding.ratio(to * l, s);
                let (rw, rh) = if w <= h {
                    (to, long(h, w))
                } else {
                    (long(w, h), to)
                };
                ((rw as u32).max(tw), (rh as u32).max(th))
            }
            ResizeMode::Letterbox => {
                let s = (tw as f64 / w).min(th as f64 / h);
                (
                    ((w * s).round() as u32).clamp(1, tw),
                    ((h * s).round() as u32).clamp(1, th),
                )
            }
            // PaddleOCR's resize_norm_img: width ceil(height * w / h), at most the input's.
            ResizeMode::FitHeight => (((th as f64 * (w / h)).ceil() as u32).clamp(1, tw), th),
            ResizeMode::FitWidth => (tw, ((tw as f64 * (h / w)).ceil() as u32).clamp(1, th)),
        }
    }

    /// Where the source goes in a `tw` x `th` target.
    pub fn geometry(&self, w: u32, h: u32, tw: u32, th: u32) -> Geometry {
        let (rw, rh) = self.scaled_size(w, h, tw, th);
        let (wf, hf) = (w as f64, h as f64);
        let whole = (0.0, 0.0, wf, hf);
        match self.resize {
            ResizeMode::Stretch => Geometry {
                src: whole,
                dst: (0, 0, tw, th),
                scaled: (tw, th),
                crop: (0, 0),
            },
            ResizeMode::Crop => {
                let left = self.crop_rounding.half(rw - tw);
                let top = self.crop_rounding.half(rh - th);
                let (sx, sy) = (wf / rw as f64, hf / rh as f64);
                Geometry {
                    src: (
                        left as f64 * sx,
                        top as f64 * sy,
                        tw as f64 * sx,
                        th as f64 * sy,
                    ),
                    dst: (0, 0, tw, th),
                    scaled: (rw, rh),
                    crop: (left, top),
                }
            }
            ResizeMode::Letterbox | ResizeMode::FitHeight | ResizeMode::FitWidth => {
                let (x, y) = match self.pad {
                    PadPlace::Center => ((tw - rw) / 2, (th - rh) / 2),
                    PadPlace::End => (0, 0),
                };
                Geometry {
                    src: whole,
                    dst: (x, y, rw, rh),
                    scaled: (rw, rh),
                    crop: (0, 0),
                }
            }
        }
    }
}

/// Computes the smallest useful decode size for a frame (see
/// [`super::PreprocessConfig::reducing_gap`]).
#[derive(Debug, Clone, Copy)]
pub struct DecodeSizer {
    pub(super) spec: Preprocess,
    pub(super) width: u32,
    pub(super) height: u32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_rounding_of_an_odd_margin() {
        // Margins 117 (341 - 224) and 5: half 58.5 and 2.5.
        for (r, want) in [
            (CropRounding::HalfEven, [58, 2]),
            (CropRounding::Floor, [58, 2]),
            (CropRounding::Round, [59, 3]),
        ] {
            assert_eq!([r.half(117), r.half(5)], want, "{r:?}");
        }
        // 256 * 500 / 416 = 307.7: 308 rounded, 307 truncated (torchvision); 5 / 2 = 2.5.
        assert_eq!(CropRounding::Round.ratio(256 * 500, 416), 308);
        assert_eq!(CropRounding::HalfEven.ratio(256 * 500, 416), 308);
        assert_eq!(CropRounding::Floor.ratio(256 * 500, 416), 307);
        assert_eq!(
            [
                CropRounding::Round,
                CropRounding::HalfEven,
                CropRounding::Floor
            ]
            .map(|r| r.ratio(5, 2)),
            [3, 2, 2]
        );
        // Half of 3 is 1.5: even is 2, floor 1.
        assert_eq!(CropRounding::HalfEven.half(3), 2);
        assert_eq!(CropRounding::Floor.half(3), 1);
        assert_eq!(CropRounding::Round.half(3), 2);
    }
}
