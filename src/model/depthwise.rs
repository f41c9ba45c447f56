//! Depthwise 2-D convolution kernels (one filter per channel, NCHW), for float32 and for
//! quantized (uint8/int8 activations, int8/uint8 weights) convolutions.
//!
//! tract 0.23 sends a quantized depthwise convolution through its generic im2col path, where
//! MobileNetV2's 17 depthwise layers took most of the model's time (see `docs/engine.md`).
//! This kernel is used instead for both formats:
//!
//! - each channel's plane is copied once into a zero-padded scratch buffer, split into
//!   `stride` column phases so that every tap of a strided convolution reads contiguous memory;
//! - each output row accumulates `kernel_h * kernel_w` contiguous multiply-adds over the row,
//!   which the compiler vectorises: AVX2 + FMA on x86-64 when the CPU has them (detected at
//!   run time), NEON on aarch64, scalar code elsewhere ([`Isa`]);
//! - the quantized path computes `sum((x - x_zero) * (w - w_zero)) + bias` on integers held in
//!   float32, which is exact while the sum stays below 2^24 (255 * 255 * 258 taps: every real
//!   depthwise kernel), then requantizes as onnxruntime does: `clamp(round_half_even(acc *
//!   x_scale * w_scale / y_scale) + y_zero)`.
//!
//! The tract operators that call these kernels are in [`super::fastops`].

use std::cell::RefCell;

/// Shape of one depthwise convolution over a plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geometry {
    /// Padded rows the kernel reads.
    fn rows(&self) -> usize {
        (self.oh - 1) * self.stride_h + (self.kh - 1) * self.dil_h + 1
    }

    /// Width of one column phase of the padded plane: output columns rounded up to whole
    /// [`LANES`] chunks (the kernel always computes whole chunks and keeps the valid part),
    /// plus the kernel's reach.
    fn phase_width(&self) -> usize {
        self.ow.div_ceil(LANES) * LANES + ((self.kw - 1) * self.dil_w) / self.stride_w + 1
    }

    /// Output size along one axis, or None when the kernel does not fit.
    pub fn output_len(
        input: usize,
        kernel: usize,
        stride: usize,
        dil: usize,
        pad: usize,
    ) -> Option<usize> {
        let span = (kernel - 1) * dil + 1;
        (input + pad).checked_sub(span).map(|d| d / stride + 1)
    }
}

/// Which code the kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable code (what the compiler makes of it for the target's baseline).
    Scalar,
    /// x86-64 with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Isa {
    /// The best the running CPU offers. `LOOKOUT_KERNELS=scalar` forces the portable code.
    pub fn detect() -> Isa {
        if std::env::var_os("LOOKOUT_KERNELS").is_some_and(|v| v == "scalar") {
            return Isa::Scalar;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx2Fma;
        }
        Isa::Scalar
    }

    /// Every variant this CPU can run (for tests).
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            v.push(Isa::Avx2Fma);
        }
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar if cfg!(target_arch = "aarch64") => "neon",
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => "avx2+fma",
        }
    }
}

/// What to do with a channel's accumulated row.
#[derive(Debug)]
pub enum Finish<'a, T> {
    /// Float output, optionally clamped (a fused Clip/Relu).
    Float {
        out: &'a mut [f32],
        min: f32,
        max: f32,
    },
    /// Quantized output: `clamp(round_half_even(acc * multiplier) + zero)`.
    Quant {
        out: &'a mut [T],
        multiplier: f32,
        zero: i32,
        lo: f32,
        hi: f32,
    },
}

/// One element type the quantized path writes.
pub trait QuantOut: Copy + Default {
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
pub trait PlaneIn: Copy {
    fn centred(self, zero: f32) -> f32;

    /// Eight at once (the compiler does not vectorise the 8-bit conversions by itself).
    #[inline(always)]
    fn centred8(v: &[Self; 8], zero: f32, out: &mut [f32; 8]) {
        for i in 0..8 {
            out[i] = v[i].centred(zero);
        }
    }
}

impl PlaneIn for f32 {
    #[inline(always)]
    fn centred(self, _zero: f32) -> f32 {
        self
    }
}

impl PlaneIn for u8 {
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
            let w = _mm_unpacklo_epi8(b, _mm_setzero_si128());
            let z = _mm_set1_ps(zero);
            let lo = _mm_cvtepi32_ps(_mm_unpacklo_epi16(w, _mm_setzero_si128()));
            let hi = _mm_cvtepi32_ps(_mm_unpackhi_epi16(w, _mm_setzero_si128()));
            _mm_storeu_ps(out.as_mut_ptr(), _mm_sub_ps(lo, z));
            _mm_storeu_ps(out.as_mut_ptr().add(4), _mm_sub_ps(hi, z));
        }
    }
}

impl PlaneIn for i8 {
    #[inline(always)]
    fn centred(self, zero: f32) -> f32 {
        self as f32 - zero
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn centred8(v: &[i8; 8], zero: f32, out: &mut [f32; 8]) {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; 8 bytes read, 8 floats written. Sign extension:
        // each byte doubled into a 16-bit lane, shifted down arithmetically, and again to 32.
        unsafe {
            let b = _mm_loadl_epi64(v.as_ptr().cast());
            let w = _mm_srai_epi16(_mm_unpacklo_epi8(b, b), 8);
            let z = _mm_set1_ps(zero);
            let lo = _mm_cvtepi32_ps(_mm_srai_epi32(_mm_unpacklo_epi16(w, w), 16));
            let hi = _mm_cvtepi32_ps(_mm_srai_epi32(_mm_unpackhi_epi16(w, w), 16));
            _mm_storeu_ps(out.as_mut_ptr(), _mm_sub_ps(lo, z));
            _mm_storeu_ps(out.as_mut_ptr().add(4), _mm_sub_ps(hi, z));
        }
    }
}

thread_local! {
    /// Per-thread scratch: the padded plane, and the geometry it was last filled for (its
    /// padding, zero, is then still in place). Reused across calls, so the steady state
    /// allocates nothing.
    static SCRATCH: RefCell<(Vec<f32>, Option<Geometry>)> = const { RefCell::new((Vec::new(), None)) };
}

/// Convolves one channel plane `x` (h * w values, centred on `x_zero`) with `taps` (kh * kw
/// values), starting every output from `bias`, and finishes each output row as `finish` says.
pub fn plane<I: PlaneIn, T: QuantOut>(
    isa: Isa,
    g: &Geometry,
    x: &[I],
    x_zero: f32,
    taps: &[f32],
    bias: f32,
    finish: Finish<'_, T>,
) {
    assert_eq!(x.len(), g.h * g.w);
    assert_eq!(taps.len(), g.kh * g.kw);
    SCRATCH.with(|s| {
        let (padded, last) = &mut *s.borrow_mut();
        match isa {
            Isa::Scalar => {
                fill_padded(g, x, x_zero, padded, last);
                rows::<T, false>(g, padded, taps, bias, finish)
            }
            // SAFETY: `Isa::Avx2Fma` is only constructed after run-time detection of both
            // features (`Isa::detect`, `Isa::available`).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { plane_avx2(g, x, x_zero, padded, last, taps, bias, finish) },
        }
    })
}

/// Copies `x` into `padded` as `stride_w` column phases of `rows()` rows each, zero outside the
/// plane (the centred value of the zero point), so tap (i, j) of output column `c` reads
/// `phase[(j * dil_w) % stride_w][row][c + (j * dil_w) / stride_w]`.
///
/// Which cells hold the plane and which the padding depends on the geometry only: filled for
/// the same geometry as last time (`last`), the padding is still zero and only the plane's
/// cells are written.
#[inline(always)]
fn fill_padded<I: PlaneIn>(
    g: &Geometry,
    x: &[I],
    x_zero: f32,
    padded: &mut Vec<f32>,
    last: &mut Option<Geometry>,
) {
    let rows = g.rows();
    let pw = g.phase_width();
    let phase_len = rows * pw;
    let s = g.stride_w;
    if *last != Some(*g) || padded.len() != s * phase_len {
        padded.clear();
        padded.resize(s * phase_len, 0.0);
        *last = Some(*g);
    }
    for r in 0..rows {
        let Some(src_r) = r.checked_sub(g.pad_top).filter(|&y| y < g.h) else {
            continue;
        };
        let src = &x[src_r * g.w..(src_r + 1) * g.w];
        if s == 2 && (g.w + g.pad_left) / 2 < pw {
            // Source column sc lands in phase (sc + pad_left) % 2 at (sc + pad_left) / 2: one
            // pass over the row with two fixed destinations, which vectorises (an
            // interleaved load).
            let pl = g.pad_left;
            let row = r * pw;
            let (a, b) = (
                (pl % 2) * phase_len + row + pl / 2,
                ((pl + 1) % 2) * phase_len + row + pl.div_ceil(2),
            );
            let pairs = g.w / 2;
            // Two disjoint destinations (different phases): slices, so the loop has no
            // bounds checks and vectorises.
            let (lo_at, hi_at) = (a.min(b), a.max(b));
            let (head, tail) = padded.split_at_mut(hi_at);
            let (first, second) = (&mut head[lo_at..lo_at + pairs], &mut tail[..pairs]);
            let (da, db) = if a < b {
                (first, second)
            } else {
                (second, first)
            };
            for ((oa, ob), v) in da.iter_mut().zip(db.iter_mut()).zip(src.chunks_exact(2)) {
                *oa = v[0].centred(x_zero);
                *ob = v[1].centred(x_zero);
            }
            if g.w % 2 == 1 {
                padded[a + pairs] = src[g.w - 1].centred(x_zero);
            }
            continue;
        }
        for p in 0..s {
            // Phase element c holds padded column p + c * s, i.e. source column
            // p + c * s - pad_left: the valid c are those mapping into 0..w.
            let c0 = g.pad_left.saturating_sub(p).div_ceil(s);
            let first = p + c0 * s - g.pad_left;
            if first >= g.w {
                continue;
            }
            let n = ((g.w - 1 - first) / s + 1).min(pw.saturating_sub(c0));
            let dst = &mut padded[p * phase_len + r * pw + c0..p * phase_len + r * pw + c0 + n];
            if s == 1 {
                // Eight at a time with fixed sizes (converts as vectors), then the rest.
                let src = &src[first..first + n];
                let mut d8 = dst.chunks_exact_mut(8);
                let mut s8 = src.chunks_exact(8);
                for (d, v) in (&mut d8).zip(&mut s8) {
                    let (d, v): (&mut [f32; 8], &[I; 8]) = (
                        d.try_into().expect("8 values"),
                        v.try_into().expect("8 values"),
                    );
                    I::centred8(v, x_zero, d);
                }
                d8.into_remainder()
                    .iter_mut()
                    .zip(s8.remainder())
                    .for_each(|(d, v)| *d = v.centred(x_zero));
            } else {
                dst.iter_mut()
                    .zip(src[first..].iter().step_by(s))
                    .for_each(|(d, v)| *d = v.centred(x_zero));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn plane_avx2<I: PlaneIn, T: QuantOut>(
    g: &Geometry,
    x: &[I],
    x_zero: f32,
    padded: &mut Vec<f32>,
    last: &mut Option<Geometry>,
    taps: &[f32],
    bias: f32,
    finish: Finish<'_, T>,
) {
    fill_padded(g, x, x_zero, padded, last);
    rows::<T, true>(g, padded, taps, bias, finish)
}

/// Output columns computed together, in registers, across all taps.
const LANES: usize = 16;
/// Largest kernel (taps) the kernels take: 7x7 and 8x8 fit; [`supports`] says so before use.
pub const MAX_TAPS: usize = 64;

/// Whether the kernels handle a `kh` x `kw` filter.
pub fn supports(kh: usize, kw: usize) -> bool {
    kh >= 1 && kw >= 1 && kh * kw <= MAX_TAPS
}

#[inline(always)]
fn rows<T: QuantOut, const FMA: bool>(
    g: &Geometry,
    padded: &[f32],
    taps: &[f32],
    bias: f32,
    finish: Finish<'_, T>,
) {
    let pw = g.phase_width();
    let phase_len = g.rows() * pw;
    // Each tap's offset in the padded phases from the output row's start: no division in the
    // loops below.
    let mut offsets = [0usize; MAX_TAPS];
    let n_taps = g.kh * g.kw;
    for i in 0..g.kh {
        for j in 0..g.kw {
            let off = j * g.dil_w;
            offsets[i * g.kw + j] =
                (off % g.stride_w) * phase_len + i * g.dil_h * pw + off / g.stride_w;
        }
    }
    let (offsets, taps) = (&offsets[..n_taps], &taps[..n_taps]);
    // 3x3, by far the most common kernel, with the tap count known to the compiler: the taps'
    // broadcasts stay in registers across the whole plane.
    if let (Ok(o9), Ok(t9)) = (<&[usize; 9]>::try_from(offsets), <[f32; 9]>::try_from(taps)) {
        return rows_with::<T, FMA, 9>(g, padded, o9, t9, bias, finish);
    }
    rows_with::<T, FMA, 0>(g, padded, offsets, taps, bias, finish)
}

/// The rows of one plane, with `N` taps when `N > 0`, else `offsets.len()`.
#[inline(always)]
fn rows_with<T: QuantOut, const FMA: bool, const N: usize>(
    g: &Geometry,
    padded: &[f32],
    offsets: impl AsRef<[usize]>,
    taps: impl AsRef<[f32]>,
    bias: f32,
    mut finish: Finish<'_, T>,
) {
    let (offsets, taps) = (offsets.as_ref(), taps.as_ref());
    let pw = g.phase_width();
    let ow = g.ow;
    let max_off = offsets.iter().copied().max().unwrap_or(0);
    let mut acc = [0f32; LANES];
    for oy in 0..g.oh {
        let row = oy * g.stride_h * pw;
        let mut ox = 0;
        while ox < ow {
            let n = LANES.min(ow - ox);
            let base = row + ox;
            assert!(
                base + max_off + LANES <= padded.len(),
                "padded plane too short"
            );
            // SAFETY: every read is at base + off + l with off <= max_off and l < LANES, in
            // bounds by the assertion above; the ISA was detected by the caller.
            unsafe {
                if N > 0 {
                    chunk::<FMA>(padded, base, &offsets[..N], &taps[..N], bias, &mut acc)
                } else {
                    chunk::<FMA>(padded, base, offsets, taps, bias, &mut acc)
                }
            };
            let at = oy * ow + ox;
            match &mut finish {
                Finish::Float { out, min, max } => {
                    out[at..at + n]
                        .iter_mut()
                        .zip(acc.iter())
                        .for_each(|(o, &a)| *o = clamp(a, *min, *max));
                }
                Finish::Quant {
                    out,
                    multiplier,
                    zero,
                    lo,
                    hi,
                } => {
                    #[cfg(target_arch = "x86_64")]
                    if FMA && n == LANES && std::mem::size_of::<T>() == 1 {
                        let dst = out[at..at + LANES].as_mut_ptr().cast::<u8>();
                        // SAFETY: FMA is only true under plane_avx2 (AVX2 detected); dst
                        // holds LANES one-byte values.
                        unsafe {
                            quant16_avx2(&acc, *multiplier, *zero, *lo, *hi, T::MIN < 0.0, dst)
                        };
                        ox += n;
                        continue;
                    }
                    let z = *zero;
                    out[at..at + n]
                        .iter_mut()
                        .zip(acc.iter())
                        .for_each(|(o, &a)| {
                            let v = clamp(a * *multiplier, *lo, *hi);
                            *o = T::from_i32(round_to_i32(v) + z);
                        });
                }
            }
            ox += n;
        }
    }
}

/// `acc[l] = bias + sum over taps of k * padded[base + off + l]`, l < LANES, in vector
/// registers.
///
/// # Safety
/// `base + off + LANES <= padded.len()` for every offset; with `FMA` on x86-64, the CPU has
/// AVX2 and FMA.
#[inline(always)]
unsafe fn chunk<const FMA: bool>(
    padded: &[f32],
    base: usize,
    offsets: &[usize],
    taps: &[f32],
    bias: f32,
    acc: &mut [f32; LANES],
) {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        use std::arch::x86_64::*;
        // SAFETY: as the function's contract says.
        unsafe {
            let p = padded.as_ptr().add(base);
            let mut a0 = _mm256_set1_ps(bias);
            let mut a1 = a0;
            for (&off, &k) in offsets.iter().zip(taps) {
                let kv = _mm256_set1_ps(k);
                a0 = _mm256_fmadd_ps(kv, _mm256_loadu_ps(p.add(off)), a0);
                a1 = _mm256_fmadd_ps(kv, _mm256_loadu_ps(p.add(off + 8)), a1);
            }
            _mm256_storeu_ps(acc.as_mut_ptr(), a0);
            _mm256_storeu_ps(acc.as_mut_ptr().add(8), a1);
        }
        return;
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::aarch64::*;
        // SAFETY: as the function's contract says; NEON is part of every aarch64 CPU.
        unsafe {
            let p = padded.as_ptr().add(base);
            let mut a = [vdupq_n_f32(bias); 4];
            for (&off, &k) in offsets.iter().zip(taps) {
                for (q, av) in a.iter_mut().enumerate() {
                    *av = vfmaq_n_f32(*av, vld1q_f32(p.add(off + 4 * q)), k);
                }
            }
            for (q, av) in a.iter().enumerate() {
                vst1q_f32(acc.as_mut_ptr().add(4 * q), *av);
            }
        }
        return;
    }
    #[allow(unreachable_code)]
    {
        *acc = [bias; LANES];
    }
    for (&off, &k) in offsets.iter().zip(taps) {
        let src = &padded[base + off..base + off + LANES];
        for l in 0..LANES {
            acc[l] += k * src[l];
        }
    }
}

/// The quantized finish of a whole chunk in AVX2 registers: the portable loop's arithmetic
/// (multiply, clamp, round half to even, which `vcvtps2dq` does under the default rounding
/// mode, add the zero point), narrowed to 16 bytes at `dst`.
///
/// # Safety
/// The CPU has AVX2; `dst` holds LANES bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn quant16_avx2(
    acc: &[f32; LANES],
    multiplier: f32,
    zero: i32,
    lo: f32,
    hi: f32,
    signed: bool,
    dst: *mut u8,
) {
    use std::arch::x86_64::*;
    let (m, z) = (_mm256_set1_ps(multiplier), _mm256_set1_epi32(zero));
    let (vlo, vhi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    let one = |v: __m256| {
        let f = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(v, m), vhi), vlo);
        _mm256_add_epi32(_mm256_cvtps_epi32(f), z)
    };
    // SAFETY: acc holds 16 values; dst as the function's contract says.
    unsafe {
        let a = one(_mm256_loadu_ps(acc.as_ptr()));
        let b = one(_mm256_loadu_ps(acc.as_ptr().add(8)));
        _mm_storeu_si128(dst.cast(), super::qgemm::narrow16_avx2(a, b, signed));
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
/// call to `roundevenf`).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition of the convolution, in f64, for comparison.
    fn reference(g: &Geometry, x: &[f32], taps: &[f32], bias: f32) -> Vec<f64> {
        let mut out = vec![0f64; g.oh * g.ow];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut a = bias as f64;
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let y = (oy * g.stride_h + i * g.dil_h) as isize - g.pad_top as isize;
                        let xx = (ox * g.stride_w + j * g.dil_w) as isize - g.pad_left as isize;
                        if y >= 0 && xx >= 0 && (y as usize) < g.h && (xx as usize) < g.w {
                            a += taps[i * g.kw + j] as f64
                                * x[y as usize * g.w + xx as usize] as f64;
                        }
                    }
                }
                out[oy * g.ow + ox] = a;
            }
        }
        out
    }

    fn geometry(h: usize, w: usize, k: usize, s: usize, d: usize, p: usize) -> Geometry {
        Geometry {
            h,
            w,
            kh: k,
            kw: k,
            stride_h: s,
            stride_w: s,
            dil_h: d,
            dil_w: d,
            pad_top: p,
            pad_left: p,
            oh: Geometry::output_len(h, k, s, d, 2 * p).unwrap(),
            ow: Geometry::output_len(w, k, s, d, 2 * p).unwrap(),
        }
    }

    #[test]
    fn float_kernel_matches_definition_for_strides_dilations_and_pads() {
        for isa in Isa::available() {
            for (h, w, k, s, d, p) in [
                (7, 7, 3, 1, 1, 1),
                (8, 9, 3, 2, 1, 1),
                (13, 11, 5, 2, 1, 2),
                (10, 10, 3, 1, 2, 2),
                (5, 6, 3, 3, 1, 0),
                (1, 1, 3, 1, 1, 1),
                (112, 112, 3, 2, 1, 1),
            ] {
                let g = geometry(h, w, k, s, d, p);
                let x: Vec<f32> = (0..h * w)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                    .collect();
                let taps: Vec<f32> = (0..k * k).map(|i| (i as f32 - 4.0) / 3.0).collect();
                let mut out = vec![0f32; g.oh * g.ow];
                plane::<f32, u8>(
                    isa,
                    &g,
                    &x,
                    0.0,
                    &taps,
                    0.25,
                    Finish::Float {
                        out: &mut out,
                        min: f32::MIN,
                        max: f32::MAX,
                    },
                );
                let want = reference(&g, &x, &taps, 0.25);
                for (o, r) in out.iter().zip(&want) {
                    assert!((*o as f64 - r).abs() < 1e-4, "{isa:?} {g:?}: {o} vs {r}");
                }
            }
        }
    }

    #[test]
    fn quantized_kernel_is_exact_integer_arithmetic_then_requantizes() {
        // Narrow (partial chunks) and wide (whole 16-column chunks: the vector finish), u8 and
        // i8 out.
        for isa in Isa::available() {
            for g in [geometry(9, 10, 3, 2, 1, 1), geometry(5, 37, 3, 1, 1, 1)] {
                let n = g.h * g.w;
                let xq: Vec<u8> = (0..n).map(|i| (i * 53 % 256) as u8).collect();
                let x_zero = 117.0;
                let wq: Vec<i8> = vec![-128, 127, 3, -7, 0, 55, -90, 12, 101];
                let taps: Vec<f32> = wq.iter().map(|&v| v as f32 - 1.0).collect(); // w_zero = 1
                let bias = -3071.0;
                let m = 0.0123;
                let xc: Vec<f32> = xq.iter().map(|&v| v as f32 - x_zero).collect();
                let acc = reference(&g, &xc, &taps, bias);
                let want = |a: f64, zero: f32, qmin: f32, qmax: f32| {
                    assert_eq!(a.fract(), 0.0);
                    ((a as f32 * m).round_ties_even() + zero).clamp(qmin, qmax)
                };
                let mut out = vec![0u8; g.oh * g.ow];
                let finish = Finish::Quant {
                    out: &mut out,
                    multiplier: m,
                    zero: 9,
                    lo: -9.0,
                    hi: 246.0,
                };
                plane(isa, &g, &xq, x_zero, &taps, bias, finish);
                for (o, a) in out.iter().zip(&acc) {
                    assert_eq!(
                        *o as f32,
                        want(*a, 9.0, 0.0, 255.0),
                        "{isa:?} {g:?}: acc {a}"
                    );
                }
                let mut out = vec![0i8; g.oh * g.ow];
                let finish = Finish::Quant {
                    out: &mut out,
                    multiplier: m,
                    zero: -5,
                    lo: -123.0,
                    hi: 132.0,
                };
                plane(isa, &g, &xq, x_zero, &taps, bias, finish);
                for (o, a) in out.iter().zip(&acc) {
                    assert_eq!(
                        *o as f32,
                        want(*a, -5.0, -128.0, 127.0),
                        "{isa:?} {g:?}: acc {a}"
                    );
                }
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
