//! `preset`: the preprocessing of a training ecosystem, every key at once. A key set beside the
//! preset wins over the preset's value.
//!
//! Each preset names the code it reproduces; `tests/preprocess_refs.rs` feeds the same photo
//! through a transcription of that code (tests/fixtures/preprocess_refs.py) and through lookout
//! and compares the tensors.

use serde::Deserialize;

use super::{ChannelOrder, CropRounding, PadPlace, PreprocessConfig, Resampler, ResizeMode};

/// ImageNet's per-channel mean and standard deviation (torchvision, timm).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// torchvision's ImageNet evaluation transform (`Resize(256)`, `CenterCrop(224)`,
    /// `ToTensor()`, `Normalize(IMAGENET_MEAN, IMAGENET_STD)` on a PIL image): shorter side to
    /// input * 256 / 224 with Pillow's antialiased bilinear, centre crop rounding ties to even,
    /// RGB, ImageNet mean and std.
    TorchvisionImagenet,
    /// timm's default evaluation transform (`timm.data.create_transform(..., is_training=False)`
    /// with crop_pct 0.875, interpolation "bicubic", ImageNet mean and std): shorter side to
    /// `floor(input / 0.875)` with Pillow's antialiased bicubic, centre crop rounding ties to
    /// even, RGB, ImageNet mean and std. Models with another `crop_pct`, mean or std (their
    /// `pretrained_cfg`) set `resize_to`, `mean` and `std` beside the preset.
    Timm,
    /// Ultralytics' classifiers (`classify_transforms`, YOLOv8/11 `-cls`, crop_fraction 1.0):
    /// shorter side to the input size with Pillow's bilinear, centre crop, RGB, / 255, no mean
    /// or std.
    UltralyticsCls,
    /// PaddleOCR's text-direction classifiers (`tools/infer/predict_cls.py`,
    /// `resize_norm_img`): the image in OpenCV's BGR, height to the input's with
    /// `cv2.resize` INTER_LINEAR keeping the aspect ratio (width `ceil`, at most the input's),
    /// `(x / 255 - 0.5) / 0.5`, padded on the right with 0 after normalisation.
    PaddleCls,
    /// Keras' MobileNet family (`keras.utils.load_img(path, target_size=...)`, whose default
    /// interpolation is Pillow's nearest, then `keras.applications.mobilenet_v2.preprocess_input`,
    /// mode "tf"): stretched to the input size with Pillow's NEAREST, RGB, `x / 127.5 - 1`.
    KerasMobilenet,
}

impl Preset {
    /// The preset's keys; `resize_to` is left to [`Preset::resize_to`] (it depends on the model).
    pub fn config(self) -> PreprocessConfig {
        match self {
            Preset::TorchvisionImagenet | Preset::Timm | Preset::UltralyticsCls => {
                let imagenet = self != Preset::UltralyticsCls;
                PreprocessConfig {
                    resize: Some(ResizeMode::Crop),
                    crop_rounding: Some(CropRounding::HalfEven),
                    // torchvision's Resize: int(size * long / short).
                    long_side_rounding: Some(CropRounding::Floor),
                    resampler: Some(if self == Preset::Timm {
                        Resampler::PillowBicubic
                    } else {
                        Resampler::Pillow
                    }),
                    channel_order: Some(ChannelOrder::Rgb),
                    scale: Some(255.0),
                    mean: Some(if imagenet {
                        IMAGENET_MEAN.to_vec()
                    } else {
                        vec![0.0]
                    }),
                    std: Some(if imagenet {
                        IMAGENET_STD.to_vec()
                    } else {
                        vec![1.0]
                    }),
                    ..Default::default()
                }
            }
            Preset::KerasMobilenet => PreprocessConfig {
                resize: Some(ResizeMode::Stretch),
                resampler: Some(Resampler::PillowNearest),
                channel_order: Some(ChannelOrder::Rgb),
                scale: Some(127.5),
                mean: Some(vec![1.0]),
                std: Some(vec![1.0]),
                ..Default::default()
            },
            Preset::PaddleCls => PreprocessConfig {
                resize: Some(ResizeMode::FitHeight),
                resampler: Some(Resampler::OpencvLinear),
                channel_order: Some(ChannelOrder::Bgr),
                scale: Some(255.0),
                mean: Some(vec![0.5]),
                std: Some(vec![0.5]),
                pad: Some(PadPlace::End),
                pad_normalized: Some(vec![0.0]),
                ..Default::default()
            },
        }
    }

    /// The shorter side before the crop for a model whose longer input side is `longest`.
    pub fn resize_to(self, longest: u32) -> Option<u32> {
        match self {
            // torchvision's reference scripts: Resize(256) for 224.
            Preset::TorchvisionImagenet => Some((longest * 256).div_ceil(224)),
            // timm: scale_size = math.floor(img_size / crop_pct), crop_pct 0.875 = 7/8.
            Preset::Timm => Some(longest * 8 / 7),
            // crop_fraction 1.0: scale_size = floor(size / 1.0).
            Preset::UltralyticsCls => Some(longest),
            Preset::PaddleCls | Preset::KerasMobilenet => None,
        }
    }
}

impl PreprocessConfig {
    /// These keys with the preset's values where unset (a copy; without a preset, the same).
    pub fn with_preset(&self) -> PreprocessConfig {
        let Some(preset) = self.preset else {
            return self.clone();
        };
        let mut d = preset.config();
        // The preset's pad and crop keys go only with a resize mode that uses them.
        let resize = self.resize.or(d.resize);
        if !matches!(
            resize,
            Some(ResizeMode::Letterbox | ResizeMode::FitHeight | ResizeMode::FitWidth)
        ) {
            (d.pad, d.pad_value, d.pad_normalized) = (None, None, None);
        }
        if resize != Some(ResizeMode::Crop) {
            (d.crop_rounding, d.long_side_rounding) = (None, None);
        }
        PreprocessConfig {
            preset: self.preset,
            resize,
            resize_to: self.resize_to.or(d.resize_to),
            channel_order: self.channel_order.or(d.channel_order),
            scale: self.scale.or(d.scale),
            mean: self.mean.clone().or(d.mean),
            std: self.std.clone().or(d.std),
            resampler: self.resampler.or(d.resampler),
            reducing_gap: self.reducing_gap.or(d.reducing_gap),
            pad: self.pad.or(d.pad),
            // A pixel pad set beside the preset replaces its normalised one.
            pad_value: self.pad_value.clone().or(d.pad_value),
            pad_normalized: if self.pad_value.is_some() {
                self.pad_normalized.clone()
            } else {
                self.pad_normalized.clone().or(d.pad_normalized)
            },
            crop_rounding: self.crop_rounding.or(d.crop_rounding),
            long_side_rounding: self.long_side_rounding.or(d.long_side_rounding),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{InputType, Layout, PadFill};
    use super::*;
    use crate::model::InputSpec;
    use crate::problems::Problems;

    fn input(dtype: InputType, h: usize, w: usize) -> InputSpec {
        InputSpec {
            name: "x".into(),
            layout: Layout::Nchw,
            dtype,
            batch: 1,
            has_batch_axis: true,
            channels: 3,
            height: h,
            width: w,
        }
    }

    fn problems(c: &PreprocessConfig) -> Vec<String> {
        let mut p = Problems::default();
        c.validate("model.preprocess", &mut p);
        p.0.iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect()
    }

    #[test]
    fn keys_set_beside_a_preset_override_it() {
        let c = PreprocessConfig {
            preset: Some(Preset::PaddleCls),
            std: Some(vec![0.25]),
            pad_value: Some(vec![7]),
            ..Default::default()
        };
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        let p = c
            .resolve(false, &input(InputType::F32, 48, 192))
            .expect("valid");
        assert_eq!(p.resize, ResizeMode::FitHeight);
        assert_eq!(p.resampler, Resampler::OpencvLinear);
        assert_eq!(p.channel_order, ChannelOrder::Bgr);
        assert_eq!((p.mean, p.std), ([0.5; 3], [0.25; 3]));
        assert_eq!(p.pad_fill, PadFill::Pixel([7; 3]));
        // A resize without padding drops the preset's pad keys instead of refusing them.
        let stretch = PreprocessConfig {
            preset: Some(Preset::PaddleCls),
            resize: Some(ResizeMode::Stretch),
            ..Default::default()
        };
        assert!(problems(&stretch).is_empty(), "{:?}", problems(&stretch));
    }

    #[test]
    fn presets_resolve_their_crop_size_from_the_model() {
        let tv = PreprocessConfig {
            preset: Some(Preset::TorchvisionImagenet),
            ..Default::default()
        };
        let p = tv
            .resolve(true, &input(InputType::F32, 224, 224))
            .expect("valid");
        assert_eq!((p.resize, p.resize_to), (ResizeMode::Crop, 256));
        assert_eq!(
            (p.mean, p.std),
            (IMAGENET_MEAN, IMAGENET_STD),
            "the preset wins over the bundled model's"
        );
        let yolo = PreprocessConfig {
            preset: Some(Preset::UltralyticsCls),
            ..Default::default()
        };
        let p = yolo
            .resolve(false, &input(InputType::F32, 224, 224))
            .expect("valid");
        assert_eq!((p.resize_to, p.mean, p.std), (224, [0.0; 3], [1.0; 3]));
        let timm = PreprocessConfig {
            preset: Some(Preset::Timm),
            ..Default::default()
        };
        for (side, scaled) in [(224, 256), (288, 329), (384, 438)] {
            let p = timm
                .resolve(false, &input(InputType::F32, side, side))
                .expect("valid");
            // floor(side / 0.875), as timm's Python computes it.
            assert_eq!((side as f64 / 0.875).floor() as u32, scaled);
            assert_eq!(
                (p.resize, p.resize_to, p.resampler),
                (ResizeMode::Crop, scaled, Resampler::PillowBicubic)
            );
            assert_eq!((p.mean, p.std), (IMAGENET_MEAN, IMAGENET_STD));
        }
    }

    #[test]
    fn pad_and_crop_keys_are_checked() {
        let cases: [(PreprocessConfig, &str); 4] = [
            (
                PreprocessConfig {
                    pad_value: Some(vec![114]),
                    ..Default::default()
                },
                "pad_value: applies to resize",
            ),
            (
                PreprocessConfig {
                    resize: Some(ResizeMode::Letterbox),
                    pad_value: Some(vec![1, 2]),
                    ..Default::default()
                },
                "expected 1 or 3 values",
            ),
            (
                PreprocessConfig {
                    resize: Some(ResizeMode::FitHeight),
                    pad_value: Some(vec![0]),
                    pad_normalized: Some(vec![0.0]),
                    ..Default::default()
                },
                "not both",
            ),
            (
                PreprocessConfig {
                    resize: Some(ResizeMode::Letterbox),
                    crop_rounding: Some(CropRounding::Floor),
                    ..Default::default()
                },
                "crop_rounding: applies to resize = \"crop\" only",
            ),
        ];
        for (c, want) in cases {
            let got = problems(&c);
            assert!(got.iter().any(|p| p.contains(want)), "{want}: {got:?}");
        }
        let normalized = PreprocessConfig {
            resize: Some(ResizeMode::FitHeight),
            pad_normalized: Some(vec![0.0]),
            ..Default::default()
        };
        let err = normalized
            .resolve(false, &input(InputType::U8, 48, 192))
            .expect_err("uint8 input");
        assert!(
            err.contains("pad_normalized applies to float32 inputs only"),
            "{err}"
        );
    }
}
