//! The eight-channel kernel against the plane kernel, bit for bit, for float and each 8-bit
//! type combination (skipped, with a note, on a CPU without AVX2 and FMA).

use super::*;
use crate::isa::Isa;
use crate::kernels::depthwise::tests::geometry;
use crate::kernels::depthwise::{plane, Finish};

fn geometries() -> Vec<Geometry> {
    vec![
        geometry(7, 7, 3, 1, 1, 1),
        geometry(14, 14, 3, 1, 1, 1),
        geometry(14, 14, 3, 2, 1, 1),
        geometry(28, 28, 3, 2, 1, 1),
        geometry(9, 10, 3, 2, 1, 1),
        geometry(5, 37, 3, 1, 1, 1),
        geometry(13, 11, 5, 2, 1, 2),
        geometry(10, 10, 3, 1, 2, 2),
        geometry(5, 6, 3, 3, 1, 0),
        geometry(1, 1, 3, 1, 1, 1),
        geometry(11, 11, 3, 2, 1, 0),
        // TensorFlow's "SAME": no padding at the top and left, one at the bottom and right.
        Geometry {
            pad_top: 0,
            pad_left: 0,
            oh: 7,
            ow: 7,
            ..geometry(14, 14, 3, 2, 1, 1)
        },
    ]
}

fn avx2() -> bool {
    Isa::available().contains(&Isa::Avx2Fma)
}

/// The same outputs, bit for bit, as the plane kernel (itself tested against the
/// definition in `depthwise.rs`), for float and for each 8-bit type combination.
#[test]
fn eight_channels_match_the_plane_kernel_bit_for_bit() {
    if !avx2() {
        eprintln!("skipped: this CPU has no AVX2 + FMA, so the kernel is never used");
        return;
    }
    for g in geometries() {
        let (hw, ohw, k) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
        let x: Vec<f32> = (0..BLOCK * hw)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let taps: Vec<f32> = (0..BLOCK * k)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 3.0)
            .collect();
        let bias: Vec<f32> = (0..BLOCK).map(|c| c as f32 * 0.5 - 2.0).collect();
        let mut want = vec![0f32; BLOCK * ohw];
        for c in 0..BLOCK {
            plane::<f32, u8>(
                Isa::Avx2Fma,
                &g,
                &x[c * hw..(c + 1) * hw],
                0.0,
                &taps[c * k..(c + 1) * k],
                bias[c],
                Finish::Float {
                    out: &mut want[c * ohw..(c + 1) * ohw],
                    min: -1.0,
                    max: 6.0,
                },
            );
        }
        let mut got = vec![f32::NAN; BLOCK * ohw];
        // SAFETY: AVX2 and FMA checked above.
        unsafe {
            block8::<f32, u8>(
                &g,
                &x,
                0.0,
                &taps,
                &bias,
                Finish8::Float {
                    out: &mut got,
                    min: -1.0,
                    max: 6.0,
                },
            )
        };
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(a.to_bits() == b.to_bits(), "{g:?} output {i}: {a} vs {b}");
        }
        let xu: Vec<u8> = (0..BLOCK * hw).map(|i| (i * 53 % 256) as u8).collect();
        let xs: Vec<i8> = xu.iter().map(|&v| v as i8).collect();
        let wq: Vec<f32> = (0..BLOCK * k)
            .map(|i| [-128.0, 127.0, 3.0, -7.0, 0.0, 55.0, -90.0, 12.0, 101.0][i % 9])
            .collect();
        check_quantized(&g, &xu, 117.0, &wq);
        check_quantized(&g, &xs, -3.0, &wq);
    }
}

fn check_quantized<I: PlaneIn>(g: &Geometry, x: &[I], x_zero: f32, taps: &[f32]) {
    let (hw, ohw, k) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let bias: Vec<f32> = (0..BLOCK).map(|c| c as f32 * 300.0 - 1000.0).collect();
    let multipliers: Vec<f32> = (0..BLOCK).map(|c| 1e-4 * (c + 1) as f32).collect();
    for signed in [false, true] {
        let (zero, lo, hi) = if signed {
            (-5, -128.0 + 5.0, 127.0 + 5.0)
        } else {
            (120, -120.0, 255.0 - 120.0)
        };
        let run = |out_u: &mut Vec<u8>, out_i: &mut Vec<i8>, blocked: bool| {
            if blocked {
                // SAFETY: the caller checked AVX2 and FMA.
                unsafe {
                    if signed {
                        block8(
                            g,
                            x,
                            x_zero,
                            taps,
                            &bias,
                            Finish8::Quant {
                                out: out_i.as_mut_slice(),
                                multipliers: &multipliers,
                                zero,
                                lo,
                                hi,
                            },
                        )
                    } else {
                        block8(
                            g,
                            x,
                            x_zero,
                            taps,
                            &bias,
                            Finish8::Quant {
                                out: out_u.as_mut_slice(),
                                multipliers: &multipliers,
                                zero,
                                lo,
                                hi,
                            },
                        )
                    }
                }
                return;
            }
            for c in 0..BLOCK {
                let (xc, tc) = (&x[c * hw..(c + 1) * hw], &taps[c * k..(c + 1) * k]);
                if signed {
                    plane(
                        Isa::Avx2Fma,
                        g,
                        xc,
                        x_zero,
                        tc,
                        bias[c],
                        Finish::Quant {
                            out: &mut out_i[c * ohw..(c + 1) * ohw],
                            multiplier: multipliers[c],
                            zero,
                            lo,
                            hi,
                        },
                    );
                } else {
                    plane(
                        Isa::Avx2Fma,
                        g,
                        xc,
                        x_zero,
                        tc,
                        bias[c],
                        Finish::Quant {
                            out: &mut out_u[c * ohw..(c + 1) * ohw],
                            multiplier: multipliers[c],
                            zero,
                            lo,
                            hi,
                        },
                    );
                }
            }
        };
        let (mut wu, mut wi) = (vec![0u8; BLOCK * ohw], vec![0i8; BLOCK * ohw]);
        let (mut gu, mut gi) = (vec![7u8; BLOCK * ohw], vec![7i8; BLOCK * ohw]);
        run(&mut wu, &mut wi, false);
        run(&mut gu, &mut gi, true);
        if signed {
            assert_eq!(gi, wi, "{g:?} i8 out");
        } else {
            assert_eq!(gu, wu, "{g:?} u8 out");
        }
        // Not one value everywhere (the sums are not all clamped to one end).
        let (mut mn, mut mx) = (i32::MAX, i32::MIN);
        for v in if signed {
            gi.iter().map(|&v| v as i32).collect::<Vec<_>>()
        } else {
            gu.iter().map(|&v| v as i32).collect()
        } {
            mn = mn.min(v);
            mx = mx.max(v);
        }
        assert!(mn < mx, "{g:?}: constant output {mn}");
    }
}
