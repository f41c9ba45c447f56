//! The 8-bit element-wise kernels over equal-length slices, each one pass in vector
//! registers where the CPU has AVX2 and the portable loop elsewhere, with the same f32
//! operations in the same order on every path, so the same bytes:
//!
//! - [`add`]: `QLinearAdd`/`QLinearMul`'s definition per element ([`Params`]): dequantize both
//!   operands, add or multiply, quantize ([`crate::quant::Quant`]);
//! - [`quantize`]: QuantizeLinear of f32 values to 8 bits;
//! - [`dequantize`]: DequantizeLinear of 8-bit values to f32, as tract computes it.
//!
//! Broadcasting, tensor types and the operators' constants are the operators' (`ops::qbinary`,
//! `ops::qunary`).

use crate::isa::Isa;
#[cfg(target_arch = "x86_64")]
use crate::quant::{narrow16_avx2, quant8_avx2};
use crate::quant::{PlaneIn, Quant, QuantOut};

/// The constants of one addition or multiplication.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub a_scale: f32,
    pub a_zero: f32,
    pub b_scale: f32,
    pub b_zero: f32,
    pub y: Quant,
    /// The dequantized values are multiplied, not added.
    pub mul: bool,
}

impl Params {
    /// One element, from `a - a_zero` and `b - b_zero`.
    #[inline(always)]
    pub(crate) fn one<O: QuantOut>(&self, a: f32, b: f32) -> O {
        let (x, y) = (a * self.a_scale, b * self.b_scale);
        self.y.one(if self.mul { x * y } else { x + y })
    }

    /// The same constants with the operands' roles swapped (both operations commute, bit for
    /// bit).
    pub(crate) fn swapped(&self) -> Params {
        Params {
            a_scale: self.b_scale,
            a_zero: self.b_zero,
            b_scale: self.a_scale,
            b_zero: self.a_zero,
            ..*self
        }
    }
}

/// `out[i] = q(a[i], b[i])` over equal-length slices.
pub fn add<A: PlaneIn, B: PlaneIn, O: QuantOut>(
    isa: Isa,
    q: &Params,
    a: &[A],
    b: &[B],
    out: &mut [O],
) {
    assert!(a.len() == out.len() && b.len() == out.len());
    match isa {
        Isa::Scalar | Isa::NeonDot => add_portable(q, a, b, out),
        // SAFETY: both AVX2 variants exist only after run-time detection of AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx2Vnni => unsafe { add_avx2(q, a, b, out) },
    }
}

fn add_portable<A: PlaneIn, B: PlaneIn, O: QuantOut>(q: &Params, a: &[A], b: &[B], out: &mut [O]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = q.one(x.centred(q.a_zero), y.centred(q.b_zero));
    }
}

/// Sixteen elements per step in AVX2 registers: the portable loop's operations (multiply,
/// multiply, add or multiply, then [`quant8_avx2`]), then the tail in the portable loop.
///
/// # Safety
/// The CPU has AVX2; `out` is an 8-bit type (every [`QuantOut`] is).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_avx2<A: PlaneIn, B: PlaneIn, O: QuantOut>(
    q: &Params,
    a: &[A],
    b: &[B],
    out: &mut [O],
) {
    use std::arch::x86_64::*;
    debug_assert_eq!(std::mem::size_of::<O>(), 1);
    let n = out.len();
    let body = n - n % 16;
    let (sa, sb) = (_mm256_set1_ps(q.a_scale), _mm256_set1_ps(q.b_scale));
    let (mut fa, mut fb) = ([0f32; 16], [0f32; 16]);
    for i in (0..body).step_by(16) {
        for h in 0..2 {
            let r = i + 8 * h..i + 8 * h + 8;
            let (da, db) = (&mut fa[8 * h..8 * h + 8], &mut fb[8 * h..8 * h + 8]);
            A::centred8(
                a[r.clone()].try_into().expect("8"),
                q.a_zero,
                da.try_into().expect("8"),
            );
            B::centred8(
                b[r].try_into().expect("8"),
                q.b_zero,
                db.try_into().expect("8"),
            );
        }
        // SAFETY: fa/fb hold 16 floats; out[i..i + 16] is in bounds (i + 16 <= body <= n)
        // and one byte per element.
        unsafe {
            let half = |h: usize| {
                let va = _mm256_loadu_ps(fa.as_ptr().add(8 * h));
                let vb = _mm256_loadu_ps(fb.as_ptr().add(8 * h));
                let (x, y) = (_mm256_mul_ps(va, sa), _mm256_mul_ps(vb, sb));
                let v = if q.mul {
                    _mm256_mul_ps(x, y)
                } else {
                    _mm256_add_ps(x, y)
                };
                quant8_avx2(&q.y, v)
            };
            let bytes = narrow16_avx2(half(0), half(1), O::MIN < 0.0);
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), bytes);
        }
    }
    add_portable(q, &a[body..], &b[body..], &mut out[body..]);
}

/// `out[i] = q(x[i])` over equal-length slices.
pub fn quantize<O: QuantOut>(isa: Isa, q: &Quant, x: &[f32], out: &mut [O]) {
    assert_eq!(x.len(), out.len());
    match isa {
        Isa::Scalar | Isa::NeonDot => quantize_portable(q, x, out),
        // SAFETY: both AVX2 variants exist only after run-time detection of AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx2Vnni => unsafe { quantize_avx2(q, x, out) },
    }
}

fn quantize_portable<O: QuantOut>(q: &Quant, x: &[f32], out: &mut [O]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = q.one(v);
    }
}

/// # Safety
/// The CPU has AVX2; `out` is an 8-bit type.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2<O: QuantOut>(q: &Quant, x: &[f32], out: &mut [O]) {
    use std::arch::x86_64::*;
    let n = out.len();
    let body = n - n % 16;
    for i in (0..body).step_by(16) {
        // SAFETY: i + 16 <= body <= n, for x (f32) and out (one byte each).
        unsafe {
            let lo = quant8_avx2(q, _mm256_loadu_ps(x.as_ptr().add(i)));
            let hi = quant8_avx2(q, _mm256_loadu_ps(x.as_ptr().add(i + 8)));
            let bytes = narrow16_avx2(lo, hi, O::MIN < 0.0);
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), bytes);
        }
    }
    quantize_portable(q, &x[body..], &mut out[body..]);
}

/// `out[i] = (x[i] - zero) * scale` over equal-length slices: DequantizeLinear as tract and
/// onnxruntime compute it (the difference is exact in f32, the product rounds once). Eight at
/// a time through [`PlaneIn::centred8`] (SSE2 on x86-64), then a multiply the compiler
/// vectorises; the same operations on every path, so the same bits.
pub fn dequantize<X: PlaneIn>(scale: f32, zero: f32, x: &[X], out: &mut [f32]) {
    assert_eq!(x.len(), out.len());
    let mut xs = x.chunks_exact(8);
    let mut os = out.chunks_exact_mut(8);
    for (xc, oc) in (&mut xs).zip(&mut os) {
        let oc: &mut [f32; 8] = oc.try_into().expect("8");
        X::centred8(xc.try_into().expect("8"), zero, oc);
        for v in oc.iter_mut() {
            *v *= scale;
        }
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = v.centred(zero) * scale;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn params(y_zero: i32, signed: bool) -> Params {
        let (qmin, qmax) = if signed {
            (-128.0, 127.0)
        } else {
            (0.0, 255.0)
        };
        Params {
            a_scale: 0.031,
            a_zero: 7.0,
            b_scale: 0.0173,
            b_zero: -3.0,
            y: Quant {
                scale: 0.042,
                zero: y_zero,
                lo: qmin - y_zero as f32,
                hi: qmax - y_zero as f32,
            },
            mul: false,
        }
    }

    #[test]
    fn one_element_is_the_onnx_definition() {
        // The definition in f64 for values away from rounding ties, and the saturation.
        let q = params(12, false);
        for (a, b) in [
            (0u8, 0u8),
            (7, 3),
            (100, 200),
            (255, 255),
            (3, 250),
            (200, 0),
        ] {
            let exact = ((a as f64 - 7.0) * 0.031f32 as f64 + (b as f64 + 3.0) * 0.0173f32 as f64)
                / 0.042f32 as f64;
            let want = (exact.round_ties_even() + 12.0).clamp(0.0, 255.0) as u8;
            let got: u8 = q.one(a.centred(q.a_zero), (b as i8).centred(q.b_zero));
            // (b as i8 wraps above 127: use the u8 reading for those.)
            let got = if b > 127 {
                q.one(a.centred(q.a_zero), b.centred(q.b_zero))
            } else {
                got
            };
            assert_eq!(got, want, "a {a} b {b}: exact {exact}");
        }
        // The product, against the definition in f64 (away from ties).
        let m = Params {
            mul: true,
            ..params(12, false)
        };
        for (a, b) in [
            (0u8, 0u8),
            (7, 3),
            (100, 200),
            (255, 255),
            (3, 250),
            (200, 1),
        ] {
            let exact = ((a as f64 - 7.0) * 0.031f32 as f64)
                * ((b as f64 + 3.0) * 0.0173f32 as f64)
                / 0.042f32 as f64;
            let want = (exact.round_ties_even() + 12.0).clamp(0.0, 255.0) as u8;
            let got: u8 = m.one(a.centred(m.a_zero), b.centred(m.b_zero));
            assert_eq!(got, want, "a {a} b {b}: exact {exact}");
        }
        // Far outside the range: saturates at both ends.
        let mut tiny = params(0, true);
        tiny.y.scale = 1e-6;
        assert_eq!(tiny.one::<i8>(200.0, 0.0), 127);
        assert_eq!(tiny.one::<i8>(-200.0, 0.0), -128);
        let u = params(0, false);
        assert_eq!(u.one::<u8>(-100.0, -100.0), 0);
    }

    /// xorshift bytes, so the test needs no dependency.
    pub(crate) fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    fn check_paths<
        A: PlaneIn + std::fmt::Debug,
        B: PlaneIn,
        O: QuantOut + PartialEq + std::fmt::Debug,
    >(
        a: &[A],
        b: &[B],
        q: &Params,
    ) {
        let mut want = vec![O::default(); a.len()];
        add_portable(q, a, b, &mut want);
        for isa in Isa::available() {
            let mut got = vec![O::default(); a.len()];
            add(isa, q, a, b, &mut got);
            assert_eq!(got, want, "{} length {}", isa.name(), a.len());
        }
    }

    #[test]
    fn every_path_gives_the_portable_bytes_for_every_type_and_tail() {
        for n in [0, 1, 15, 16, 17, 31, 64, 100, 1000] {
            let (ra, rb) = (bytes(n, 1 + n as u64), bytes(n, 77 + n as u64));
            let (sa, sb): (Vec<i8>, Vec<i8>) = (
                ra.iter().map(|&v| v as i8).collect(),
                rb.iter().map(|&v| v as i8).collect(),
            );
            for (zero, mul) in [(0, false), (128, false), (40, false), (0, true), (40, true)] {
                let qu = Params {
                    mul,
                    ..params(zero, false)
                };
                check_paths::<u8, u8, u8>(&ra, &rb, &qu);
                check_paths::<u8, i8, u8>(&ra, &sb, &qu);
                check_paths::<i8, u8, u8>(&sa, &rb, &qu);
                check_paths::<i8, i8, u8>(&sa, &sb, &qu);
                let qi = Params {
                    mul,
                    ..params(zero - 128, true)
                };
                check_paths::<u8, u8, i8>(&ra, &rb, &qi);
                check_paths::<i8, i8, i8>(&sa, &sb, &qi);
                check_paths::<u8, i8, i8>(&ra, &sb, &qi);
                check_paths::<i8, u8, i8>(&sa, &rb, &qi);
            }
        }
    }

    #[test]
    fn quantize_divides_rounds_half_to_even_and_saturates_on_every_path() {
        let q = Quant {
            scale: 0.5,
            zero: 10,
            lo: -10.0,
            hi: 245.0,
        };
        // Ties: 0.25 / 0.5 = 0.5 -> 0, 0.75 / 0.5 = 1.5 -> 2, -1.25 / 0.5 = -2.5 -> -2.
        let x = [
            0.25f32,
            0.75,
            -1.25,
            1000.0,
            -1000.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3.1,
        ];
        let want: [u8; 8] = [10, 12, 8, 255, 0, 255, 0, 16];
        let mut long: Vec<f32> = x.iter().cycle().take(8 * 5 + 3).copied().collect();
        long.extend((0..300).map(|i| (i as f32 - 150.0) * 0.37));
        for isa in Isa::available() {
            let mut got = [0u8; 8];
            quantize(isa, &q, &x, &mut got);
            assert_eq!(got, want, "{}", isa.name());
            let mut all = vec![0u8; long.len()];
            quantize(isa, &q, &long, &mut all);
            let mut plain = vec![0u8; long.len()];
            quantize_portable(&q, &long, &mut plain);
            assert_eq!(all, plain, "{}", isa.name());
            let mut signed = vec![0i8; long.len()];
            let qs = Quant {
                zero: -3,
                lo: -125.0,
                hi: 130.0,
                ..q
            };
            quantize(isa, &qs, &long, &mut signed);
            let mut plain_s = vec![0i8; long.len()];
            quantize_portable(&qs, &long, &mut plain_s);
            assert_eq!(signed, plain_s, "{}", isa.name());
        }
    }

    #[test]
    fn dequantize_is_tracts_definition_bit_for_bit() {
        // Every 8-bit value, at an odd length (eight-wide body and a tail), for both types and
        // zero points at both ends; against tract's DequantizeLinearF32 expression.
        let scale = 0.036654525f32;
        let us: Vec<u8> = (0..=255u8).chain(0..7).collect();
        let is: Vec<i8> = (-128..=127i8).chain(0..7).collect();
        for zero in [0i32, 130, 255] {
            let mut got = vec![0f32; us.len()];
            dequantize(scale, zero as f32, &us, &mut got);
            for (&x, &g) in us.iter().zip(&got) {
                let want = (x as i32 - zero) as f32 * scale;
                assert_eq!(g.to_bits(), want.to_bits(), "u8 {x} zero {zero}");
            }
        }
        for zero in [-128i32, -3, 127] {
            let mut got = vec![0f32; is.len()];
            dequantize(scale, zero as f32, &is, &mut got);
            for (&x, &g) in is.iter().zip(&got) {
                let want = (x as i32 - zero) as f32 * scale;
                assert_eq!(g.to_bits(), want.to_bits(), "i8 {x} zero {zero}");
            }
        }
    }
}
