//! The integer matrix product against the convolution's definition
//! ([`crate::kernels::im2col::tests::reference`]) on every [`Isa`] this CPU runs, and its
//! requantization (rounding half to even, saturation; the AVX2 form against the portable one).

use super::*;
use crate::kernels::im2col::tests::reference;
#[cfg(target_arch = "x86_64")]
use crate::quant::{clamp, round_to_i32};

fn requant_plain(m: usize, bias: i32) -> Vec<Requant> {
    vec![
        Requant {
            bias,
            multiplier: 1.0,
            zero: 0,
            lo: -1e9,
            hi: 1e9,
        };
        m
    ]
}

/// A wide "quantized" output type so the raw accumulators can be checked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Raw(f32);
impl QuantOut for Raw {
    const MIN: f32 = f32::MIN;
    const MAX: f32 = f32::MAX;
    fn from_i32(v: i32) -> Raw {
        Raw(v as f32)
    }
}

#[test]
fn integer_products_are_exact_for_every_shape_and_kernel() {
    for isa in Isa::available() {
        for (c, h, w, k, s, p, m) in [
            (5, 4, 5, 1, 1, 0, 7),
            (16, 7, 7, 1, 1, 0, 13),
            (3, 9, 11, 3, 2, 1, 32),
            (4, 6, 6, 3, 1, 1, 6),
            (33, 3, 3, 1, 1, 0, 1),
        ] {
            let oh = (h + 2 * p - k) / s + 1;
            let ow = (w + 2 * p - k) / s + 1;
            let g = Im2col {
                c,
                h,
                w,
                kh: k,
                kw: k,
                stride: [s, s],
                dil: [1, 1],
                pad_top: p,
                pad_left: p,
                oh,
                ow,
            };
            let x: Vec<u8> = (0..c * h * w).map(|i| (i * 89 % 256) as u8).collect();
            let wq: Vec<i32> = (0..m * g.k())
                .map(|i| (i as i32 * 37 % 256) - 128)
                .collect();
            // Centred weights from -129 to 128 (the i16 path everywhere), then from -128
            // to 127 (on aarch64 with DotProd, the i8 dot-product path).
            for wz in [
                (0..m).map(|r| (r as i32 % 3) - 1).collect::<Vec<i32>>(),
                vec![0; m],
            ] {
                let packed = PackedWeights::new(&wq, m, g.k(), &wz, isa);
                let x_zero = 100i16;
                let rq: Vec<Requant> = (0..m)
                    .map(|r| requant_plain(1, 7 - x_zero as i32 * packed.row_sums[r])[0])
                    .collect();
                let mut out = vec![Raw::default(); m * oh * ow];
                conv(
                    isa,
                    &packed,
                    &g,
                    &x,
                    x_zero,
                    &rq,
                    &mut Scratch::default(),
                    &mut out,
                );
                let want = reference(&g, &x, x_zero, &wq, &wz, 7);
                for (i, (got, acc)) in out.iter().zip(&want).enumerate() {
                    let (r, oy, ox) = (i / (oh * ow), i / ow % oh, i % ow);
                    assert_eq!(
                        got.0 as i64, *acc,
                        "{isa:?} c{c} k{k} s{s} m{m}: row {r} ({oy},{ox})"
                    );
                }
            }
        }
    }
}

#[test]
fn requantizes_with_rounding_half_even_and_saturation() {
    let packed = PackedWeights::new(&[1], 1, 1, &[0], Isa::Scalar);
    let g = Im2col {
        c: 1,
        h: 1,
        w: 4,
        kh: 1,
        kw: 1,
        stride: [1, 1],
        dil: [1, 1],
        pad_top: 0,
        pad_left: 0,
        oh: 1,
        ow: 4,
    };
    let x: Vec<u8> = vec![0, 5, 7, 255];
    let rq = [Requant {
        bias: 0,
        multiplier: 0.5,
        zero: 3,
        lo: -3.0,
        hi: 252.0,
    }];
    let mut out = [0u8; 4];
    conv(
        Isa::Scalar,
        &packed,
        &g,
        &x,
        0,
        &rq,
        &mut Scratch::default(),
        &mut out,
    );
    // 0 -> 3; 2.5 -> 2 (+3 = 5); 3.5 -> 4 (+3 = 7); 127.5 -> 128 (+3 = 131)
    assert_eq!(out, [3, 5, 7, 131]);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_requantization_matches_the_portable_arithmetic() {
    if !Isa::available().contains(&Isa::Avx2Fma) {
        eprintln!("no AVX2 on this CPU: the vector requantization is not run here");
        return;
    }
    // Accumulators around every rounding tie and both clamps, for u8 and i8 outputs.
    let row: [i32; NR] = std::array::from_fn(|i| (i as i32 - 8) * 37 + 1);
    for (signed, zero, qmin, qmax) in [(false, 3.0f32, 0.0, 255.0), (true, -5.0, -128.0, 127.0)] {
        for (bias, multiplier) in [(0, 0.5f32), (-1, 0.25), (7, 1.5), (100, 0.01)] {
            let q = Requant {
                bias,
                multiplier,
                zero: zero as i32,
                lo: qmin - zero,
                hi: qmax - zero,
            };
            for np in [NR, 5] {
                let mut got = [0u8; NR];
                // SAFETY: AVX2 checked above; row holds 16 i32, got NR bytes.
                unsafe {
                    use std::arch::x86_64::*;
                    let a = _mm256_loadu_si256(row.as_ptr().cast());
                    let b = _mm256_loadu_si256(row.as_ptr().add(8).cast());
                    store_bytes(requant16_avx2(a, b, &q, signed), got.as_mut_ptr(), np)
                };
                for (i, &a) in row.iter().enumerate().take(np) {
                    let v = clamp((a + q.bias) as f32 * q.multiplier, q.lo, q.hi);
                    let want = round_to_i32(v) + q.zero;
                    let got = if signed {
                        got[i] as i8 as i32
                    } else {
                        got[i] as i32
                    };
                    assert_eq!(
                        got, want,
                        "signed {signed} bias {bias} x{multiplier} at {i}"
                    );
                }
            }
        }
    }
}
