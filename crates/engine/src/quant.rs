//! Quantization arithmetic shared by the kernels, the operators and the rewrites: the 8-bit
//! types the kernels read ([`PlaneIn`]) and write ([`QuantOut`]), ONNX's per-tensor
//! QuantizeLinear to 8 bits ([`Quant`]), and the rounding and clamping every requantization
//! uses ([`clamp`], [`round_to_i32`]), with their AVX2 forms
//! ([`quant8_avx2`], [`narrow16_avx2`]).
//!
//! Every path rounds half to even and clamps before rounding, so a vector path and the
//! portable loop give the same bytes. How a kernel accumulates before requantizing (and in
//! which type) is the kernel's business.

/// One element type the quantized path writes.
pub trait QuantOut: Copy + Default + Send + Sync {
    const MIN: f32;
    const MAX: f32;
    /// `v` is already within `MIN..=MAX`.
    fn from_i32(v: i32) -> Self;
}

impl QuantOut for u8 {
    const MIN: f32 = 0.0;
    const MAX: f32 = 255.0;
    #[inline(always)]
    fn from_i32(v: i32) -> u8 {
        v as u8
    }
}

impl QuantOut for i8 {
    const MIN: f32 = -128.0;
    const MAX: f32 = 127.0;
    #[inline(always)]
    fn from_i32(v: i32) -> i8 {
        v as i8
    }
}

/// Pixel values the padded plane is filled from.
pub trait PlaneIn: Copy + Send + Sync {
    /// Whether the values are signed integers (i8); f32 and u8 are not.
    const SIGNED: bool;

    fn centred(self, zero: f32) -> f32;

    /// Eight at once (the compiler does not vectorise the 8-bit conversions by itself).
    #[inline(always)]
    fn centred8(v: &[Self; 8], zero: f32, out: &mut [f32; 8]) {
        for i in 0..8 {
            out[i] = v[i].centred(zero);
        }
    }

    /// Sixteen at once, split by column parity: `even[k] = v[2k]`, `odd[k] = v[2k + 1]`,
    /// centred (a stride-2 plane's two column phases).
    #[inline(always)]
    fn split16(v: &[Self; 16], zero: f32, even: &mut [f32; 8], odd: &mut [f32; 8]) {
        for k in 0..8 {
            even[k] = v[2 * k].centred(zero);
            odd[k] = v[2 * k + 1].centred(zero);
        }
    }
}

impl PlaneIn for f32 {
    const SIGNED: bool = false;

    #[inline(always)]
    fn centred(self, _zero: f32) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn split16(v: &[f32; 16], _zero: f32, even: &mut [f32; 8], odd: &mut [f32; 8]) {
        use std::arch::x86_64::*;
        // SAFETY: SSE is part of x86-64; 16 floats read, 8 + 8 written.
        unsafe {
            let p = v.as_ptr();
            for h in 0..2 {
                let (a, b) = (_mm_loadu_ps(p.add(8 * h)), _mm_loadu_ps(p.add(8 * h + 4)));
                _mm_storeu_ps(even.as_mut_ptr().add(4 * h), _mm_shuffle_ps(a, b, 0x88));
                _mm_storeu_ps(odd.as_mut_ptr().add(4 * h), _mm_shuffle_ps(a, b, 0xdd));
            }
        }
    }
}

/// Eight 16-bit lanes (integers) as floats, minus `zero`, at `out` (SSE2).
///
/// # Safety
/// `out` holds 8 floats.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn i16x8_centred(w: std::arch::x86_64::__m128i, zero: f32, out: *mut f32) {
    use std::arch::x86_64::*;
    // SAFETY: as the function's contract says. Sign extension to 32 bits: each lane doubled,
    // shifted down arithmetically.
    unsafe {
        let z = _mm_set1_ps(zero);
        let lo = _mm_cvtepi32_ps(_mm_srai_epi32(_mm_unpacklo_epi16(w, w), 16));
        let hi = _mm_cvtepi32_ps(_mm_srai_epi32(_mm_unpackhi_epi16(w, w), 16));
        _mm_storeu_ps(out, _mm_sub_ps(lo, z));
        _mm_storeu_ps(out.add(4), _mm_sub_ps(hi, z));
    }
}

impl PlaneIn for u8 {
    const SIGNED: bool = false;

    #[inline(always)]
    fn centred(self, zero: f32) -> f32 {
        self as f32 - zero
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn centred8(v: &[u8; 8], zero: f32, out: &mut [f32; 8]) {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; 8 bytes read, 8 floats written.
        unsafe {
            let b = _mm_loadl_epi64(v.as_ptr().cast());
            i16x8_centred(
                _mm_unpacklo_epi8(b, _mm_setzero_si128()),
                zero,
                out.as_mut_ptr(),
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn split16(v: &[u8; 16], zero: f32, even: &mut [f32; 8], odd: &mut [f32; 8]) {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; 16 bytes read, 8 + 8 floats written. As 16-bit
        // lanes, the even bytes are the low halves and the odd ones the high halves.
        unsafe {
            let b = _mm_loadu_si128(v.as_ptr().cast());
            i16x8_centred(
                _mm_and_si128(b, _mm_set1_epi16(0xff)),
                zero,
                even.as_mut_ptr(),
            );
            i16x8_centred(_mm_srli_epi16(b, 8), zero, odd.as_mut_ptr());
        }
    }
}

impl PlaneIn for i8 {
    const SIGNED: bool = true;

    #[inline(always)]
    fn centred(self, zero: f32) -> f32 {
        self as f32 - zero
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn centred8(v: &[i8; 8], zero: f32, out: &mut [f32; 8]) {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; 8 bytes read, 8 floats written. Sign extension:
        // each byte doubled into a 16-bit lane, shifted down arithmetically.
        unsafe {
            let b = _mm_loadl_epi64(v.as_ptr().cast());
            i16x8_centred(
                _mm_srai_epi16(_mm_unpacklo_epi8(b, b), 8),
                zero,
                out.as_mut_ptr(),
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn split16(v: &[i8; 16], zero: f32, even: &mut [f32; 8], odd: &mut [f32; 8]) {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; 16 bytes read, 8 + 8 floats written. Even bytes
        // (low halves of the 16-bit lanes) sign-extended by a shift up and back down.
        unsafe {
            let b = _mm_loadu_si128(v.as_ptr().cast());
            i16x8_centred(
                _mm_srai_epi16(_mm_slli_epi16(b, 8), 8),
                zero,
                even.as_mut_ptr(),
            );
            i16x8_centred(_mm_srai_epi16(b, 8), zero, odd.as_mut_ptr());
        }
    }
}

/// `v` limited to [lo, hi] (plain compares: the values are never NaN, and this compiles to
/// one vector min and max).
#[inline(always)]
pub fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v > hi { hi } else { v };
    if v < lo {
        lo
    } else {
        v
    }
}

/// 1.5 * 2^23: adding it to |v| < 2^22 leaves round_half_even(v) in the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;

/// Round half to even for |v| < 2^22, by the float unit's own rounding (vectorisable, unlike a
/// call to `roundevenf`): [`round_to_i32`]'s arithmetic as a float, which the tests check.
#[cfg(test)]
#[inline(always)]
pub fn round_half_even(v: f32) -> f32 {
    (v + MAGIC) - MAGIC
}

/// `round_half_even(v)` as an integer, for |v| < 2^22, read from the bits of `v + MAGIC`:
/// integer arithmetic only, so it vectorises (Rust's saturating `f32 as i32` does not).
#[inline(always)]
pub fn round_to_i32(v: f32) -> i32 {
    ((v + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32)
}

/// A per-tensor QuantizeLinear to 8 bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quant {
    pub scale: f32,
    pub zero: i32,
    /// The output range less the zero point: `qmin - zero`, `qmax - zero`.
    pub lo: f32,
    pub hi: f32,
}

impl Quant {
    /// Quantization to uint8 (`signed` false) or int8 with this scale and zero point.
    pub fn eight_bit(scale: f32, zero: i32, signed: bool) -> Quant {
        let (qmin, qmax) = if signed {
            (-128.0, 127.0)
        } else {
            (0.0, 255.0)
        };
        Quant {
            scale,
            zero,
            lo: qmin - zero as f32,
            hi: qmax - zero as f32,
        }
    }

    /// `saturate(round_half_to_even(x / scale) + zero)`. (`min`/`max`, not `clamp`, so that a
    /// NaN gives what the AVX2 `vminps`/`vmaxps` give: the top of the range.)
    #[inline(always)]
    pub(crate) fn one<O: QuantOut>(&self, x: f32) -> O {
        O::from_i32((x / self.scale).min(self.hi).max(self.lo).round_ties_even() as i32 + self.zero)
    }
}

/// The same as [`Quant::one`] on eight values in AVX2 registers: divide, clamp, round half to
/// even (`vcvtps2dq` under the default rounding mode), add the zero point.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn quant8_avx2(
    q: &Quant,
    x: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let y = _mm256_div_ps(x, _mm256_set1_ps(q.scale));
    let y = _mm256_max_ps(_mm256_min_ps(y, _mm256_set1_ps(q.hi)), _mm256_set1_ps(q.lo));
    _mm256_add_epi32(_mm256_cvtps_epi32(y), _mm256_set1_epi32(q.zero))
}

/// Sixteen i32 (`a` then `b`), each already within the 8-bit range, as 16 bytes in order.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub unsafe fn narrow16_avx2(
    a: std::arch::x86_64::__m256i,
    b: std::arch::x86_64::__m256i,
    signed: bool,
) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    // 32 -> 16 bits works per 128-bit lane: [a0..3 b0..3 | a4..7 b4..7]; put a before b.
    let w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0b11_01_10_00);
    let (w0, w1) = (_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    if signed {
        _mm_packs_epi16(w0, w1)
    } else {
        _mm_packus_epi16(w0, w1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_by_column_parity_sixteen_at_a_time_exactly() {
        for start in (0..256).step_by(16) {
            let u: [u8; 16] = std::array::from_fn(|i| (start + i) as u8);
            let s: [i8; 16] = std::array::from_fn(|i| (start + i) as u8 as i8);
            let f: [f32; 16] = std::array::from_fn(|i| (start + i) as f32 * 0.5 - 3.0);
            let (mut ue, mut uo, mut se, mut so, mut fe, mut fo) = (
                [0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8], [0f32; 8],
            );
            u8::split16(&u, 117.0, &mut ue, &mut uo);
            i8::split16(&s, -3.0, &mut se, &mut so);
            f32::split16(&f, 0.0, &mut fe, &mut fo);
            for k in 0..8 {
                assert_eq!(
                    (ue[k], uo[k]),
                    (u[2 * k] as f32 - 117.0, u[2 * k + 1] as f32 - 117.0)
                );
                assert_eq!(
                    (se[k], so[k]),
                    (s[2 * k] as f32 + 3.0, s[2 * k + 1] as f32 + 3.0)
                );
                assert_eq!((fe[k], fo[k]), (f[2 * k], f[2 * k + 1]));
            }
        }
    }

    #[test]
    fn eight_bit_values_widen_eight_at_a_time_exactly() {
        for start in (0..256).step_by(8) {
            let u: [u8; 8] = std::array::from_fn(|i| (start + i) as u8);
            let s: [i8; 8] = std::array::from_fn(|i| (start + i) as u8 as i8);
            let (mut gu, mut gs) = ([0f32; 8], [0f32; 8]);
            u8::centred8(&u, 117.0, &mut gu);
            i8::centred8(&s, -3.0, &mut gs);
            for i in 0..8 {
                assert_eq!(gu[i], u[i] as f32 - 117.0, "u8 {}", u[i]);
                assert_eq!(gs[i], s[i] as f32 + 3.0, "i8 {}", s[i]);
            }
        }
    }

    #[test]
    fn rounds_half_to_even() {
        for i in -300_000..300_000 {
            let v = i as f32 * 0.25;
            assert_eq!(round_to_i32(v), v.round_ties_even() as i32, "{v}");
        }
        for (v, r) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, 0.0),
            (-1.5, -2.0),
            (3.49, 3.0),
            (-200.7, -201.0),
        ] {
            assert_eq!(round_half_even(v), r, "{v}");
            assert_eq!(round_to_i32(v), r as i32, "{v}");
        }
    }
}
