//! Tests of preprocessing: geometry, every resize mode, layouts and dtypes, against Pillow's
//! and hand-computed values.

use super::super::InputSpec;
use super::*;
use crate::frame::RgbBuf;

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
                scaled: (224, 224),
                crop: (0, 0),
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
                scaled: (341, 256),
                crop: (58, 16),
            },
        ),
        (
            ResizeMode::Letterbox,
            (640, 480),
            Geometry {
                src: (0.0, 0.0, 640.0, 480.0),
                dst: (0, 28, 224, 168),
                scaled: (224, 168),
                crop: (0, 0),
            },
        ),
        (
            ResizeMode::Letterbox,
            (100, 400),
            Geometry {
                src: (0.0, 0.0, 100.0, 400.0),
                dst: (84, 0, 56, 224),
                scaled: (56, 224),
                crop: (0, 0),
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
