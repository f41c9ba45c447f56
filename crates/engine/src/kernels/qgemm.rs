//! Integer matrix product for quantized convolutions: `acc[m][p] = sum_k w[m][k] * x[k][p]`,
//! with 8-bit operands widened to i16 and exact i32 accumulation, then requantized to 8 bits.
//!
//! tract 0.23's integer matrix products (its `avx2_mmm_i32_8x8` kernel behind a per-row loop
//! and a generic requantization chain) ran MobileNetV2's pointwise convolutions at under
//! 1 GMAC/s here, 20x slower than its own float path. This module is lookout's replacement:
//!
//! - weights are packed once, when the model is loaded: `w - w_zero` as i16, in panels of
//!   [`MR`] output channels, pairs of consecutive `k` interleaved;
//! - activations are packed per run into panels of [`NR`] pixels, the same `k` pairs
//!   interleaved, straight from the NCHW tensor (with an im2col gather for kernels larger than
//!   1x1). `x_zero` is not subtracted per element: `x_zero * sum_k(w)` is folded into each
//!   output channel's bias;
//! - the [`MR`] x [`NR`] tile is computed by `vpmaddwd` (16 multiply-adds of i16 pairs into
//!   i32 per instruction) on x86-64 with AVX2 (detected at run time), and by portable code
//!   elsewhere, which the compiler turns into NEON widening multiply-adds on aarch64;
//! - requantization is onnxruntime's: `clamp(round_half_even(f32(acc) * x_scale * w_scale /
//!   y_scale) + y_zero)`.
//!
//! Products of two values in [-255, 255] summed in pairs stay far inside i32, and so do sums
//! over any realistic `k` (below 2^31 / 255^2 = 33,000 terms).
//!
//! [`conv`] is the entry for one image: it runs the dot-product tile ([`super::qdot`]) where
//! the weights were packed for it, this module's i16 tile otherwise. The im2col view of the
//! input is [`super::im2col`]'s, the per-channel requantization [`super::requant`]'s; the
//! operator (`ops::qconv`) reads the model's constants and loops over the batch.

use super::im2col::{gather_row, Im2col};
use super::qdot::{self, DotWeights};
use super::requant::{requant_row, Act, Requant, NR};
use crate::isa::Isa;
#[cfg(target_arch = "x86_64")]
use crate::quant::narrow16_avx2;
use crate::quant::QuantOut;
use crate::team::{self, Shared};

/// Output channels per tile.
pub const MR: usize = 6;
/// Packed activation bytes per block of pixel panels (a share of a 512 KB L2 cache).
const BLOCK_BYTES: usize = 128 * 1024;

/// Weights packed for [`conv`]: `[M / MR][K / 2][MR][2]` i16, zero-padded to whole panels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedWeights {
    pub m: usize,
    pub k: usize,
    /// k rounded up to even, / 2
    kp: usize,
    data: Vec<i16>,
    /// Per output channel: `sum_k (w - w_zero)`, for folding `x_zero` into the bias.
    pub row_sums: Vec<i32>,
    /// The weights for the aarch64 dot-product tile instead (`data` is then empty).
    dot: Option<DotWeights>,
}

impl PackedWeights {
    /// Packs `w` ([m][k] row-major, raw 8-bit values as i32) minus its per-row zero point, for
    /// [`conv`] under `isa`: in i8 for the dot-product tile under [`Isa::NeonDot`] and
    /// [`Isa::Avx2Vnni`] when every centred value fits, else in i16 (only one of the two is
    /// kept).
    pub fn new(w: &[i32], m: usize, k: usize, zero: &[i32], isa: Isa) -> PackedWeights {
        assert_eq!(w.len(), m * k);
        let kp = k.div_ceil(2);
        let dot = if qdot::tile_for(isa).is_some() {
            DotWeights::new(w, m, k, zero)
        } else {
            None
        };
        let panels = if dot.is_some() { 0 } else { m.div_ceil(MR) };
        let mut data = vec![0i16; panels * kp * MR * 2];
        let mut row_sums = vec![0i32; m];
        for row in 0..m {
            let (panel, r) = (row / MR, row % MR);
            for kk in 0..k {
                let v = w[row * k + kk] - zero[row];
                row_sums[row] += v;
                if dot.is_none() {
                    data[((panel * kp + kk / 2) * MR + r) * 2 + kk % 2] = v as i16;
                }
            }
        }
        PackedWeights {
            m,
            k,
            kp,
            data,
            row_sums,
            dot,
        }
    }

    /// The kernels `conv` runs these weights on under `isa`.
    pub fn kernels(&self, isa: Isa) -> &'static str {
        match isa {
            Isa::NeonDot if self.dot.is_none() => "neon (weights wider than int8: no sdot)",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Vnni if self.dot.is_none() => "avx2+fma (weights wider than int8: no vnni)",
            _ => isa.name(),
        }
    }

    fn panel(&self, p: usize) -> &[i16] {
        &self.data[p * self.kp * MR * 2..(p + 1) * self.kp * MR * 2]
    }
}

/// Per-run scratch for the packed activations.
#[derive(Debug, Default)]
pub struct Scratch {
    x: Vec<i16>,
    /// Two im2col rows (a pair of k), gathered before they are interleaved into the panels.
    rows: Vec<i16>,
    /// The dot-product path's.
    dot: qdot::Scratch,
}

/// Packs `x` (one image: [C][H][W] 8-bit values) into `[P / NR][K / 2][NR][2]` i16 panels of
/// the im2col matrix; outside the image, the value is `x_zero` (zero once centred).
#[inline(always)]
fn pack_x<I: Copy + Into<i16>>(
    g: &Im2col,
    x: &[I],
    x_zero: i16,
    kp: usize,
    out: &mut Vec<i16>,
    rows: &mut Vec<i16>,
) {
    let p_total = g.pixels();
    let panels = p_total.div_ceil(NR);
    // Not cleared: every cell of a real (k, pixel) is written below; the others (the odd k's
    // pair, the last panel's pixels past the image) meet zero weights or are never stored.
    out.resize(panels * kp * NR * 2, 0);
    let k_total = g.k();
    if g.is_identity() {
        // 1x1: row k of the matrix is plane k. Each panel interleaves two planes' NR pixels.
        let plane = g.h * g.w;
        for (pp, panel) in out.chunks_exact_mut(kp * NR * 2).enumerate() {
            let p0 = pp * NR;
            let np = NR.min(p_total - p0);
            for (kpair, dst) in panel.chunks_exact_mut(NR * 2).enumerate() {
                let row = |k: usize| &x[k * plane + p0..k * plane + p0 + np];
                let k0 = 2 * kpair;
                interleave(row(k0), (k0 + 1 < k_total).then(|| row(k0 + 1)), dst);
            }
        }
        return;
    }
    // Any other kernel: per pair of k, both im2col rows gathered contiguously, then
    // interleaved into the panels as in the 1x1 case.
    rows.resize(2 * p_total, 0);
    let (ra, rb) = rows.split_at_mut(p_total);
    for kpair in 0..kp {
        let k0 = 2 * kpair;
        gather_row(g, x, x_zero, k0, ra);
        let second = k0 + 1 < k_total;
        if second {
            gather_row(g, x, x_zero, k0 + 1, rb);
        }
        for pp in 0..panels {
            let (p0, np) = (pp * NR, NR.min(p_total - pp * NR));
            let dst = &mut out[(pp * kp + kpair) * NR * 2..(pp * kp + kpair + 1) * NR * 2];
            interleave(&ra[p0..p0 + np], second.then(|| &rb[p0..p0 + np]), dst);
        }
    }
}

/// One panel's pair of k rows for its `a.len()` pixels: `dst[2 i] = a[i]`, `dst[2 i + 1] =
/// b[i]` (left as it is without `b`: the odd k meets zero weights). A whole panel goes with
/// fixed sizes, so the interleave compiles to vector shuffles.
#[inline(always)]
fn interleave<T: Copy + Into<i16>>(a: &[T], b: Option<&[T]>, dst: &mut [i16]) {
    match b {
        Some(b) if a.len() == NR => {
            let (a, b): (&[T; NR], &[T; NR]) = (
                a.try_into().expect("NR values"),
                b.try_into().expect("NR values"),
            );
            let dst: &mut [i16; NR * 2] = dst.try_into().expect("2 NR values");
            for i in 0..NR {
                dst[2 * i] = a[i].into();
                dst[2 * i + 1] = b[i].into();
            }
        }
        Some(b) => {
            for ((d, &va), &vb) in dst.chunks_exact_mut(2).zip(a).zip(b) {
                d[0] = va.into();
                d[1] = vb.into();
            }
        }
        None => {
            for (d, &va) in dst.chunks_exact_mut(2).zip(a) {
                d[0] = va.into();
            }
        }
    }
}

/// One image: `out[m][p] = requant(sum_k w[m][k] * x[k][p])` for the convolution `g`, `x`
/// being [C][H][W] and `out` [M][OH][OW].
#[allow(clippy::too_many_arguments)]
pub fn conv<I: Act, O: QuantOut>(
    isa: Isa,
    w: &PackedWeights,
    g: &Im2col,
    x: &[I],
    x_zero: i16,
    requant: &[Requant],
    scratch: &mut Scratch,
    out: &mut [O],
) {
    assert_eq!(w.k, g.k());
    assert!(
        w.dot.is_none() || qdot::tile_for(isa).is_some(),
        "weights packed for the dot-product tile run under {isa:?}"
    );
    if let (Some(d), Some(tile)) = (&w.dot, qdot::tile_for(isa)) {
        let (s, rs) = (&mut scratch.dot, &w.row_sums);
        #[cfg(target_arch = "x86_64")]
        if isa.avx2() {
            // SAFETY: both AVX2 variants exist only after run-time detection of AVX2 and FMA.
            unsafe { dot_pack_avx2(tile, d, g, x, x_zero, s) };
        } else {
            qdot::pack(tile, d, g, x, x_zero, s);
        }
        #[cfg(not(target_arch = "x86_64"))]
        qdot::pack(tile, d, g, x, x_zero, s);
        let (px, out) = (s.packed(), Shared::new(out));
        // On this thread, or shared with an idle worker (`team`).
        team::for_each(qdot::parts(d, g), |i| {
            #[cfg(target_arch = "x86_64")]
            if isa.avx2() {
                // SAFETY: AVX2 as above; each part writes its own values.
                return unsafe { dot_part_avx2::<I, O>(tile, d, rs, g, px, requant, &out, i) };
            }
            // SAFETY: each part writes its own values.
            unsafe { qdot::part::<I, O>(tile, d, rs, g, px, requant, &out, i) }
        });
        return;
    }
    match isa {
        Isa::Scalar | Isa::NeonDot => {
            conv_with::<I, O, false>(w, g, x, x_zero, requant, scratch, out)
        }
        // SAFETY: both AVX2 variants exist only after run-time detection of AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx2Vnni => unsafe {
            conv_avx2(w, g, x, x_zero, requant, scratch, out)
        },
    }
}

/// The dot-product convolution's packing compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2 and FMA: `conv` calls it only under an AVX2 [`Isa`] variant, which
/// [`Isa::detect`] returns only after checking both.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_pack_avx2<I: Act>(
    tile: qdot::Tile,
    w: &DotWeights,
    g: &Im2col,
    x: &[I],
    x_zero: i16,
    scratch: &mut qdot::Scratch,
) {
    qdot::pack(tile, w, g, x, x_zero, scratch)
}

/// One part of the dot-product convolution's tiles, with its requantization compiled for AVX2
/// (the tile itself is compiled for VNNI).
///
/// # Safety
/// The CPU has AVX2 and FMA; [`qdot::part`]'s contract.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_part_avx2<I: Act, O: QuantOut>(
    tile: qdot::Tile,
    w: &DotWeights,
    row_sums: &[i32],
    g: &Im2col,
    px: &[i8],
    requant: &[Requant],
    out: &Shared<'_, O>,
    i: usize,
) {
    // SAFETY: the caller's contract.
    unsafe { qdot::part::<I, O>(tile, w, row_sums, g, px, requant, out, i) }
}

/// The whole convolution (packing, tiles, requantization) compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2 and FMA: `conv` calls it only under an AVX2 [`Isa`] variant, which
/// [`Isa::detect`] returns only after checking both.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn conv_avx2<I: Copy + Into<i16>, O: QuantOut>(
    w: &PackedWeights,
    g: &Im2col,
    x: &[I],
    x_zero: i16,
    requant: &[Requant],
    scratch: &mut Scratch,
    out: &mut [O],
) {
    conv_with::<I, O, true>(w, g, x, x_zero, requant, scratch, out)
}

#[inline(always)]
fn conv_with<I: Copy + Into<i16>, O: QuantOut, const AVX2: bool>(
    w: &PackedWeights,
    g: &Im2col,
    x: &[I],
    x_zero: i16,
    requant: &[Requant],
    scratch: &mut Scratch,
    out: &mut [O],
) {
    pack_x(g, x, x_zero, w.kp, &mut scratch.x, &mut scratch.rows);
    let p_total = g.pixels();
    // The AVX2 path stores through raw pointers: every row of the output must be there.
    assert!(out.len() >= w.m * p_total && requant.len() >= w.m);
    let mut acc = [[0i32; NR]; MR];
    // Blocks of pixel panels that stay in the cache; within a block, weight panel by panel
    // (each channel's outputs written as one sequential stream).
    let panels = p_total.div_ceil(NR);
    let block = (BLOCK_BYTES / (w.kp.max(1) * NR * 2 * 2)).clamp(1, panels.max(1));
    for pb in (0..panels).step_by(block) {
        for mp in 0..w.m.div_ceil(MR) {
            let wpanel = w.panel(mp);
            for pp in pb..(pb + block).min(panels) {
                let xpanel = &scratch.x[pp * w.kp * NR * 2..(pp + 1) * w.kp * NR * 2];
                let p0 = pp * NR;
                let np = NR.min(p_total - p0);
                #[cfg(target_arch = "x86_64")]
                if AVX2 && std::mem::size_of::<O>() == 1 {
                    let rows = MR.min(w.m - mp * MR);
                    let dst = out[mp * MR * p_total + p0..].as_mut_ptr().cast::<u8>();
                    // SAFETY: AVX2 is only true when called from `conv_avx2`, after
                    // detection; row r < rows of the tile writes np bytes at
                    // (mp * MR + r) * p_total + p0, inside `out` ([M][P] one-byte values).
                    unsafe {
                        tile_requant_avx2(
                            w.kp,
                            wpanel,
                            xpanel,
                            &requant[mp * MR..mp * MR + rows],
                            O::MIN < 0.0,
                            dst,
                            p_total,
                            np,
                        )
                    };
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                if AVX2 {
                    // SAFETY: AVX2 is only true when called from `conv_avx2`, after detection.
                    unsafe { tile_avx2(w.kp, wpanel, xpanel, &mut acc) }
                } else {
                    tile_portable(w.kp, wpanel, xpanel, &mut acc)
                }
                #[cfg(not(target_arch = "x86_64"))]
                tile_portable(w.kp, wpanel, xpanel, &mut acc);
                for (r, row) in acc.iter().enumerate() {
                    let m = mp * MR + r;
                    if m >= w.m {
                        break;
                    }
                    let q = requant[m];
                    let dst = &mut out[m * p_total + p0..m * p_total + p0 + np];
                    requant_row(row, &q, 0, dst);
                }
            }
        }
    }
}

/// Requantizes one row of NR accumulators (`a` then `b`) to 16 8-bit values, in AVX2
/// registers: the same arithmetic as the portable loop (`as f32`, multiply, clamp, round half
/// to even, which is `vcvtps2dq` under the default rounding mode, add the zero point), then
/// packed with saturation that never triggers (the clamp keeps every value in range).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn requant16_avx2(
    a: std::arch::x86_64::__m256i,
    b: std::arch::x86_64::__m256i,
    q: &Requant,
    signed: bool,
) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    let bias = _mm256_set1_epi32(q.bias);
    let mult = _mm256_set1_ps(q.multiplier);
    let (lo, hi) = (_mm256_set1_ps(q.lo), _mm256_set1_ps(q.hi));
    let zero = _mm256_set1_epi32(q.zero);
    let one = |v: __m256i| {
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(v, bias)), mult);
        let f = _mm256_max_ps(_mm256_min_ps(f, hi), lo);
        _mm256_add_epi32(_mm256_cvtps_epi32(f), zero)
    };
    narrow16_avx2(one(a), one(b), signed)
}

/// The first `np` <= 16 of `bytes` at `dst`.
///
/// # Safety
/// The CPU has AVX2; `dst` holds `np` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_bytes(bytes: std::arch::x86_64::__m128i, dst: *mut u8, np: usize) {
    use std::arch::x86_64::*;
    // SAFETY: as the function's contract says.
    unsafe {
        if np == NR {
            _mm_storeu_si128(dst.cast(), bytes);
        } else {
            let mut t = [0u8; NR];
            _mm_storeu_si128(t.as_mut_ptr().cast(), bytes);
            std::ptr::copy_nonoverlapping(t.as_ptr(), dst, np);
        }
    }
}

/// The tile in portable code: `acc[m][p] = sum over k pairs of w0 * x0 + w1 * x1`.
#[inline(always)]
fn tile_portable(kp: usize, w: &[i16], x: &[i16], acc: &mut [[i32; NR]; MR]) {
    *acc = [[0; NR]; MR];
    for k in 0..kp {
        let xs: &[i16; NR * 2] = x[k * NR * 2..(k + 1) * NR * 2]
            .try_into()
            .expect("panel size");
        let ws: &[i16; MR * 2] = w[k * MR * 2..(k + 1) * MR * 2]
            .try_into()
            .expect("panel size");
        for (m, row) in acc.iter_mut().enumerate() {
            let (w0, w1) = (ws[2 * m] as i32, ws[2 * m + 1] as i32);
            for (p, a) in row.iter_mut().enumerate() {
                // |w|, |x| <= 255: products and their sums stay inside i32 (module notes);
                // wrapping arithmetic keeps overflow checks out of the vectorised loop.
                let pair = w0
                    .wrapping_mul(xs[2 * p] as i32)
                    .wrapping_add(w1.wrapping_mul(xs[2 * p + 1] as i32));
                *a = a.wrapping_add(pair);
            }
        }
    }
}

/// The tile's sums with AVX2: per k pair, two loads of 8 pixels x 2 k, one broadcast weight
/// pair per row, and `vpmaddwd` into 12 accumulators (row m: pixels 0..8, 8..16).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn sums_avx2(kp: usize, w: &[i16], x: &[i16]) -> [[std::arch::x86_64::__m256i; 2]; MR] {
    use std::arch::x86_64::*;
    assert!(w.len() >= kp * MR * 2 && x.len() >= kp * NR * 2);
    let mut a = [[_mm256_setzero_si256(); 2]; MR];
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    for k in 0..kp {
        // SAFETY: k < kp and the panels hold kp * NR * 2 (x) and kp * MR * 2 (w) values.
        unsafe {
            let x0 = _mm256_loadu_si256(xp.add(k * NR * 2) as *const __m256i);
            let x1 = _mm256_loadu_si256(xp.add(k * NR * 2 + 16) as *const __m256i);
            let wk = wp.add(k * MR * 2) as *const i32;
            for (m, am) in a.iter_mut().enumerate() {
                let wb = _mm256_set1_epi32(wk.add(m).read_unaligned());
                am[0] = _mm256_add_epi32(am[0], _mm256_madd_epi16(x0, wb));
                am[1] = _mm256_add_epi32(am[1], _mm256_madd_epi16(x1, wb));
            }
        }
    }
    a
}

/// The tile with AVX2, its accumulators stored in `acc`.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile_avx2(kp: usize, w: &[i16], x: &[i16], acc: &mut [[i32; NR]; MR]) {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 as the function's contract says.
    let a = unsafe { sums_avx2(kp, w, x) };
    for (m, am) in a.iter().enumerate() {
        // SAFETY: each row of `acc` holds NR = 16 i32, two 256-bit stores.
        unsafe {
            _mm256_storeu_si256(acc[m].as_mut_ptr() as *mut __m256i, am[0]);
            _mm256_storeu_si256(acc[m].as_mut_ptr().add(8) as *mut __m256i, am[1]);
        }
    }
}

/// The tile with AVX2, requantized in registers (no round trip of the accumulators through
/// memory): row `m < q.len()` to `np` 8-bit values at `out + m * stride`.
///
/// # Safety
/// The CPU has AVX2; `q.len() <= MR`; for every such row, `out + m * stride` holds `np` <= NR
/// bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_requant_avx2(
    kp: usize,
    w: &[i16],
    x: &[i16],
    q: &[Requant],
    signed: bool,
    out: *mut u8,
    stride: usize,
    np: usize,
) {
    // SAFETY: as the function's contract says.
    unsafe {
        let a = sums_avx2(kp, w, x);
        for (m, (am, q)) in a.iter().zip(q).enumerate() {
            store_bytes(
                requant16_avx2(am[0], am[1], q, signed),
                out.add(m * stride),
                np,
            );
        }
    }
}

#[cfg(test)]
mod tests;
