//! Depthwise convolution of eight channels at once (x86-64, AVX2 + FMA).
//!
//! The plane-by-plane kernel ([`super::depthwise`]) spends under 1 ns per output on a 112x112
//! plane but 4-6 ns on 7x7 and 14x14 ones, where its per-plane and per-row work, not its
//! multiply-adds, is the time (`docs/engine.md`). Here eight channels go together, as
//! onnxruntime's NCHWc kernels do, but only for the length of one operator:
//!
//! 1. the eight planes are transposed, eight pixels at a time, into a zero-padded buffer that
//!    holds each pixel's eight channel values (centred on the zero point, in f32) in one
//!    vector;
//! 2. every output pixel is then `kh * kw` multiply-adds of one vector, four pixels at a time,
//!    with no per-row work and no lane wasted whatever the plane's width;
//! 3. the outputs are transposed back, eight at a time, and finished per channel as the plane
//!    kernel finishes them (clamp; or requantize: `clamp(round_half_even(acc * multiplier) +
//!    zero)`), so both kernels give the same values bit for bit.
//!
//! Quantized inputs are exact integers in f32, as in the plane kernel.
//!
//! It is used for every plane size the plane kernel takes (kernels of up to
//! [`super::depthwise::MAX_TAPS`] taps, checked when the operator is wired): measured on
//! MobileNetV2's 17 layer shapes, interleaved with the plane kernel (`examples/depthwise.rs`),
//! 0.26-0.45 of its time on 7x7 and 14x14 planes and 0.6-0.9 on 28x28 to 112x112 ones, float
//! and uint8. The operator (`ops::depthwise`) gives it every whole block of eight channels and
//! the plane kernel the rest.

use super::depthwise::{Geometry, MAX_TAPS};
use crate::quant::{narrow16_avx2, PlaneIn, QuantOut};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Channels per block.
pub const BLOCK: usize = 8;

/// How eight channels' outputs are finished.
pub enum Finish8<'a, T> {
    /// Float outputs (eight planes one after the other), clamped to [min, max].
    Float {
        out: &'a mut [f32],
        min: f32,
        max: f32,
    },
    /// Quantized outputs (eight planes): `clamp(round_half_even(acc * multipliers[c]) +
    /// zero)`, with the clamp applied before rounding as `[lo, hi]` (the output type's range
    /// minus the zero point).
    Quant {
        out: &'a mut [T],
        multipliers: &'a [f32],
        zero: i32,
        lo: f32,
        hi: f32,
    },
}

/// The padded buffer's shape, and where each plane pixel goes in it.
#[derive(Default)]
struct Plan {
    geometry: Option<Geometry>,
    /// Padded columns (only those some output reads).
    wp: usize,
    /// For each plane pixel, its cell's first value in the padded buffer (the cell past the
    /// last padded one for pixels no output reads).
    cells: Vec<u32>,
    /// Padded buffer: `(rows * wp + 1)` cells of BLOCK values, zero outside the plane.
    padded: Vec<f32>,
    /// Accumulators, one cell per output, rounded up to a multiple of BLOCK outputs.
    acc: Vec<f32>,
}

thread_local! {
    /// Per-thread scratch, laid out for the last geometry (its padding is then still zero).
    /// A model's layers take turns, so a new geometry reuses the buffers: nothing is
    /// allocated in the steady state.
    static SCRATCH: RefCell<Plan> = RefCell::new(Plan::default());
}

impl Plan {
    /// Lays the buffers out for `g` (when they are not already).
    fn fit(&mut self, g: &Geometry) {
        if self.geometry == Some(*g) {
            return;
        }
        let rows = (g.oh - 1) * g.stride_h + (g.kh - 1) * g.dil_h + 1;
        let wp = (g.ow - 1) * g.stride_w + (g.kw - 1) * g.dil_w + 1;
        let dump = rows * wp;
        self.cells.clear();
        for y in g.pad_top..g.pad_top + g.h {
            for x in g.pad_left..g.pad_left + g.w {
                let cell = if y < rows && x < wp { y * wp + x } else { dump };
                self.cells.push((cell * BLOCK) as u32);
            }
        }
        // The padding: every cell no plane pixel lands in, zero. (Cheaper than zeroing the
        // whole buffer: the plane's cells are all written on every call.)
        self.padded.resize((dump + 1) * BLOCK, 0.0);
        let zero = |cells: std::ops::Range<usize>, padded: &mut Vec<f32>| {
            padded[cells.start * BLOCK..cells.end * BLOCK].fill(0.0);
        };
        let (top, bottom) = (g.pad_top.min(rows), (g.pad_top + g.h).min(rows));
        zero(0..top * wp, &mut self.padded);
        zero(bottom * wp..rows * wp, &mut self.padded);
        let (left, right) = (g.pad_left.min(wp), (g.pad_left + g.w).min(wp));
        for y in top..bottom {
            zero(y * wp..y * wp + left, &mut self.padded);
            zero(y * wp + right..(y + 1) * wp, &mut self.padded);
        }
        // Accumulators are all written before they are read (those past the last output,
        // read and dropped, hold earlier values).
        let outputs = (g.oh * g.ow).div_ceil(BLOCK) * BLOCK;
        if self.acc.len() < outputs * BLOCK {
            self.acc.resize(outputs * BLOCK, 0.0);
        }
        self.wp = wp;
        self.geometry = Some(*g);
    }
}

/// Convolves eight channels: `x` holds their planes (h * w values each, centred on
/// `x_zero`), `taps` their filters (kh * kw each), `bias` their biases; finishes as `finish`
/// says.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn block8<I: PlaneIn, T: QuantOut>(
    g: &Geometry,
    x: &[I],
    x_zero: f32,
    taps: &[f32],
    bias: &[f32],
    finish: Finish8<'_, T>,
) {
    let (hw, n_taps) = (g.h * g.w, g.kh * g.kw);
    assert_eq!(x.len(), BLOCK * hw);
    assert_eq!(taps.len(), BLOCK * n_taps);
    assert_eq!(bias.len(), BLOCK);
    SCRATCH.with(|s| {
        let mut plan = s.borrow_mut();
        plan.fit(g);
        let plan = &mut *plan;
        // SAFETY: AVX2 and FMA as this function's contract says; the helpers check their
        // bounds against the plan's buffers.
        unsafe {
            fill(plan, x, x_zero, hw);
            accumulate(plan, g, taps, bias);
            finish_all(plan, g, finish);
        }
    })
}

/// Step 1: the eight planes into the padded buffer, one vector per pixel.
///
/// # Safety
/// The CPU has AVX2 and FMA ([`block8`]'s contract). Every access is bounds-checked.
#[target_feature(enable = "avx2,fma")]
unsafe fn fill<I: PlaneIn>(plan: &mut Plan, x: &[I], x_zero: f32, hw: usize) {
    let (cells, padded) = (&plan.cells, &mut plan.padded);
    let full = hw / BLOCK * BLOCK;
    let kind = Kind::of::<I>();
    let z = _mm256_set1_ps(x_zero);
    for p in (0..full).step_by(BLOCK) {
        let rows: [__m256; BLOCK] = std::array::from_fn(|c| {
            let v: &[I; BLOCK] = x[c * hw + p..c * hw + p + BLOCK]
                .try_into()
                .expect("BLOCK values");
            // SAFETY: `v` holds 8 values of the type `kind` names; AVX2 as the caller's
            // contract says.
            unsafe { load_centred(v.as_ptr().cast(), kind, z) }
        });
        // SAFETY: AVX as the caller's contract says.
        let t = unsafe { transpose8(rows) };
        for (k, v) in t.iter().enumerate() {
            let at = cells[p + k] as usize;
            let dst: &mut [f32; BLOCK] = (&mut padded[at..at + BLOCK])
                .try_into()
                .expect("BLOCK values");
            // SAFETY: `dst` holds 8 floats.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), *v) };
        }
    }
    for p in full..hw {
        let at = cells[p] as usize;
        for c in 0..BLOCK {
            padded[at + c] = x[c * hw + p].centred(x_zero);
        }
    }
}

/// Step 2: every output pixel's sums, four pixels at a time.
///
/// # Safety
/// The CPU has AVX2 and FMA ([`block8`]'s contract). The bounds [`sums`] relies on are
/// asserted here.
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate(plan: &mut Plan, g: &Geometry, taps: &[f32], bias: &[f32]) {
    let n_taps = g.kh * g.kw;
    let wp = plan.wp;
    // Tap t's offset from its output's first cell, and its eight channels' weights.
    let mut offsets = [0usize; MAX_TAPS];
    let mut weights = [[0f32; BLOCK]; MAX_TAPS];
    for i in 0..g.kh {
        for j in 0..g.kw {
            let t = i * g.kw + j;
            offsets[t] = (i * g.dil_h * wp + j * g.dil_w) * BLOCK;
            for (c, w) in weights[t].iter_mut().enumerate() {
                *w = taps[c * n_taps + t];
            }
        }
    }
    let bias: &[f32; BLOCK] = bias.try_into().expect("BLOCK biases");
    // Output (oy, ox)'s first cell: padded row oy * stride_h, column ox * stride_w.
    let walk = Walk {
        ow: g.ow,
        row_step: g.stride_h * wp * BLOCK,
        col_step: g.stride_w * BLOCK,
    };
    let last = ((g.oh - 1) * g.stride_h * wp + (g.ow - 1) * g.stride_w) * BLOCK;
    let max_off = offsets[..n_taps].iter().copied().max().unwrap_or(0);
    assert!(
        last + max_off + BLOCK <= plan.padded.len(),
        "padded buffer too short"
    );
    let count = g.oh * g.ow;
    assert!(plan.acc.len() >= count * BLOCK, "accumulators too short");
    let (padded, acc) = (plan.padded.as_ptr(), plan.acc.as_mut_ptr());
    if n_taps == 9 {
        // SAFETY: bounds asserted above; AVX2 and FMA as the caller's contract says.
        unsafe { sums::<9>(padded, acc, count, walk, &offsets[..9], &weights[..9], bias) };
    } else {
        // SAFETY: as above.
        unsafe {
            sums::<0>(
                padded,
                acc,
                count,
                walk,
                &offsets[..n_taps],
                &weights[..n_taps],
                bias,
            )
        };
    }
}

/// The outputs' first cells in order, without a division per output.
#[derive(Clone, Copy)]
struct Walk {
    ow: usize,
    row_step: usize,
    col_step: usize,
}

/// Where the walk is: the current output's column, its row's first cell and its own.
#[derive(Clone, Copy, Default)]
struct At {
    ox: usize,
    row: usize,
    cell: usize,
}

impl Walk {
    #[inline(always)]
    fn next(&self, at: &mut At) -> usize {
        let cell = at.cell;
        at.ox += 1;
        if at.ox == self.ow {
            at.ox = 0;
            at.row += self.row_step;
            at.cell = at.row;
        } else {
            at.cell += self.col_step;
        }
        cell
    }
}

/// `acc[q] = bias + sum over taps of weights[t] * padded[cell(q) + offsets[t]]`, one vector
/// per output `q < count` (cells as `walk` gives them), four outputs at a time; `N` taps when
/// `N > 0` (the weights' vectors then stay in registers), else `offsets.len()`.
///
/// # Safety
/// Every read `cell(q) + offsets[t] + 8 <=` the padded buffer's length, `acc` holds `count`
/// vectors; AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn sums<const N: usize>(
    padded: *const f32,
    acc: *mut f32,
    count: usize,
    walk: Walk,
    offsets: &[usize],
    weights: &[[f32; BLOCK]],
    bias: &[f32; BLOCK],
) {
    let n = if N > 0 { N } else { offsets.len() };
    let mut w = [_mm256_setzero_ps(); MAX_TAPS];
    for t in 0..n {
        // SAFETY: `weights[t]` holds BLOCK = 8 floats.
        w[t] = unsafe { _mm256_loadu_ps(weights[t].as_ptr()) };
    }
    // SAFETY: `bias` holds 8 floats.
    let b = unsafe { _mm256_loadu_ps(bias.as_ptr()) };
    let (mut q, mut at) = (0, At::default());
    while q + 4 <= count {
        let p: [usize; 4] = std::array::from_fn(|_| walk.next(&mut at));
        let mut a = [b; 4];
        for t in 0..n {
            let off = offsets[t];
            for (k, ak) in a.iter_mut().enumerate() {
                // SAFETY: output q + k's cell + `off` + 8 is within the padded buffer (the
                // function's contract).
                let v = unsafe { _mm256_loadu_ps(padded.add(p[k] + off)) };
                *ak = _mm256_fmadd_ps(w[t], v, *ak);
            }
        }
        for (k, ak) in a.iter().enumerate() {
            // SAFETY: q + k < count, and `acc` holds `count` vectors (the function's contract).
            unsafe { _mm256_storeu_ps(acc.add((q + k) * BLOCK), *ak) };
        }
        q += 4;
    }
    while q < count {
        let p = walk.next(&mut at);
        let mut a = b;
        for t in 0..n {
            // SAFETY: output q's cell + `offsets[t]` + 8 is within the padded buffer (the
            // function's contract).
            let v = unsafe { _mm256_loadu_ps(padded.add(p + offsets[t])) };
            a = _mm256_fmadd_ps(w[t], v, a);
        }
        // SAFETY: q < count, and `acc` holds `count` vectors (the function's contract).
        unsafe { _mm256_storeu_ps(acc.add(q * BLOCK), a) };
        q += 1;
    }
}

/// Step 3: the outputs back to one plane per channel, eight outputs at a time, finished.
///
/// # Safety
/// The CPU has AVX2 and FMA ([`block8`]'s contract). Every store is to a bounds-checked
/// slice.
#[target_feature(enable = "avx2,fma")]
unsafe fn finish_all<T: QuantOut>(plan: &Plan, g: &Geometry, mut finish: Finish8<'_, T>) {
    let count = g.oh * g.ow;
    for q in (0..count).step_by(BLOCK) {
        // Outputs past `count` (the last group's) are left-over values, never stored.
        let cells: &[f32; BLOCK * BLOCK] = plan.acc[q * BLOCK..(q + BLOCK) * BLOCK]
            .try_into()
            .expect("accumulators rounded up to BLOCK outputs");
        // SAFETY: AVX as the caller's contract says.
        let per_channel = unsafe { transpose8(load8(cells)) };
        let n = (count - q).min(BLOCK);
        match &mut finish {
            Finish8::Float { out, min, max } => {
                let (lo, hi) = (_mm256_set1_ps(*min), _mm256_set1_ps(*max));
                for (c, v) in per_channel.iter().enumerate() {
                    let v = _mm256_max_ps(_mm256_min_ps(*v, hi), lo);
                    let dst = &mut out[c * count + q..c * count + q + n];
                    if let Ok(dst) = <&mut [f32; BLOCK]>::try_from(&mut *dst) {
                        // SAFETY: `dst` holds 8 floats.
                        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
                        continue;
                    }
                    let mut vals = [0f32; BLOCK];
                    // SAFETY: `vals` holds 8 floats.
                    unsafe { _mm256_storeu_ps(vals.as_mut_ptr(), v) };
                    dst.copy_from_slice(&vals[..n]);
                }
            }
            Finish8::Quant {
                out,
                multipliers,
                zero,
                lo,
                hi,
            } => {
                let (vlo, vhi, z) = (
                    _mm256_set1_ps(*lo),
                    _mm256_set1_ps(*hi),
                    _mm256_set1_epi32(*zero),
                );
                for (c, v) in per_channel.iter().enumerate() {
                    let m = _mm256_set1_ps(multipliers[c]);
                    let f = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(*v, m), vhi), vlo);
                    // `vcvtps2dq` rounds half to even under the default rounding mode.
                    let i = _mm256_add_epi32(_mm256_cvtps_epi32(f), z);
                    // SAFETY: AVX2 as the caller's contract says.
                    let bytes = unsafe { narrow16_avx2(i, i, T::MIN < 0.0) };
                    let dst = &mut out[c * count + q..c * count + q + n];
                    if std::mem::size_of::<T>() == 1 {
                        if let Ok(dst) = <&mut [T; BLOCK]>::try_from(&mut *dst) {
                            // SAFETY: `dst` holds 8 one-byte values (u8 or i8: the bytes
                            // narrowed as signed or unsigned to match).
                            unsafe { _mm_storel_epi64(dst.as_mut_ptr().cast(), bytes) };
                            continue;
                        }
                    }
                    let mut vals = [0u8; 2 * BLOCK];
                    // SAFETY: `vals` holds 16 bytes.
                    unsafe { _mm_storeu_si128(vals.as_mut_ptr().cast(), bytes) };
                    for (d, &b) in dst.iter_mut().zip(&vals[..n]) {
                        *d = T::from_i32(if T::MIN < 0.0 {
                            b as i8 as i32
                        } else {
                            b as i32
                        });
                    }
                }
            }
        }
    }
}

/// The plane value types, told apart once per call (the loads below are AVX2 code, which a
/// generic trait method could not be compiled as).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    F32,
    U8,
    I8,
}

impl Kind {
    fn of<I: PlaneIn>() -> Kind {
        match (std::mem::size_of::<I>(), I::SIGNED) {
            (4, _) => Kind::F32,
            (_, false) => Kind::U8,
            (_, true) => Kind::I8,
        }
    }
}

/// Eight plane values at `p` (of type `kind`) as floats, minus `zero`.
///
/// # Safety
/// `p` points to 8 values of that type; the CPU has AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_centred(p: *const u8, kind: Kind, zero: __m256) -> __m256 {
    // SAFETY: as the function's contract says.
    unsafe {
        match kind {
            Kind::F32 => _mm256_loadu_ps(p.cast()),
            Kind::U8 => _mm256_sub_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()))),
                zero,
            ),
            Kind::I8 => _mm256_sub_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))),
                zero,
            ),
        }
    }
}

/// Eight rows of eight floats as vectors.
///
/// # Safety
/// The CPU has AVX.
#[target_feature(enable = "avx")]
#[inline]
unsafe fn load8(rows: &[f32; BLOCK * BLOCK]) -> [__m256; BLOCK] {
    // SAFETY: row r is rows[8r..8r + 8].
    std::array::from_fn(|r| unsafe { _mm256_loadu_ps(rows.as_ptr().add(r * BLOCK)) })
}

/// The 8x8 transpose: `out[j][i] = v[i][j]`.
///
/// # Safety
/// The CPU has AVX.
#[target_feature(enable = "avx")]
#[inline]
unsafe fn transpose8(v: [__m256; BLOCK]) -> [__m256; BLOCK] {
    let t0 = _mm256_unpacklo_ps(v[0], v[1]);
    let t1 = _mm256_unpackhi_ps(v[0], v[1]);
    let t2 = _mm256_unpacklo_ps(v[2], v[3]);
    let t3 = _mm256_unpackhi_ps(v[2], v[3]);
    let t4 = _mm256_unpacklo_ps(v[4], v[5]);
    let t5 = _mm256_unpackhi_ps(v[4], v[5]);
    let t6 = _mm256_unpacklo_ps(v[6], v[7]);
    let t7 = _mm256_unpackhi_ps(v[6], v[7]);
    let s0 = _mm256_shuffle_ps(t0, t2, 0x44);
    let s1 = _mm256_shuffle_ps(t0, t2, 0xee);
    let s2 = _mm256_shuffle_ps(t1, t3, 0x44);
    let s3 = _mm256_shuffle_ps(t1, t3, 0xee);
    let s4 = _mm256_shuffle_ps(t4, t6, 0x44);
    let s5 = _mm256_shuffle_ps(t4, t6, 0xee);
    let s6 = _mm256_shuffle_ps(t5, t7, 0x44);
    let s7 = _mm256_shuffle_ps(t5, t7, 0xee);
    [
        _mm256_permute2f128_ps(s0, s4, 0x20),
        _mm256_permute2f128_ps(s1, s5, 0x20),
        _mm256_permute2f128_ps(s2, s6, 0x20),
        _mm256_permute2f128_ps(s3, s7, 0x20),
        _mm256_permute2f128_ps(s0, s4, 0x31),
        _mm256_permute2f128_ps(s1, s5, 0x31),
        _mm256_permute2f128_ps(s2, s6, 0x31),
        _mm256_permute2f128_ps(s3, s7, 0x31),
    ]
}

#[cfg(test)]
mod tests;
