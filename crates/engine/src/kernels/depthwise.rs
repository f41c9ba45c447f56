//! Depthwise 2-D convolution kernels (one filter per channel, NCHW), for float32 and for
//! quantized (uint8/int8 activations, int8/uint8 weights) convolutions.
//!
//! tract 0.23 sends a quantized depthwise convolution through its generic im2col path, where
//! MobileNetV2's 17 depthwise layers took most of the model's time (see `docs/engine.md`).
//! This kernel is used instead for both formats:
//!
//! - each channel's plane is copied once into a zero-padded scratch buffer, split into
//!   `stride_h * stride_w` phases (rows and columns by their remainder modulo the strides), so
//!   that every tap reads contiguous memory at one fixed offset from its output (`Layout`);
//! - the whole plane, every row one after the other, is then one run of `kernel_h * kernel_w`
//!   multiply-adds per 16 outputs, in vector registers, whatever the plane's width (a 7x7
//!   plane is 4 such chunks, not 7 part-filled ones): AVX2 + FMA on x86-64 when the CPU has
//!   them (detected at run time), NEON on aarch64, scalar code elsewhere ([`Isa`]);
//! - the quantized path computes `sum((x - x_zero) * (w - w_zero)) + bias` on integers held in
//!   float32, which is exact while the sum stays below 2^24 (255 * 255 * 258 taps: every real
//!   depthwise kernel), then requantizes as onnxruntime does: `clamp(round_half_even(acc *
//!   x_scale * w_scale / y_scale) + y_zero)`.
//!
//! The kernel works on one plane; [`crate::kernels::depthwise8`] takes eight channels at
//! once where the CPU has AVX2. Which channels go to which, the tensors and the team are the
//! operator's (`ops::depthwise`). The element types are `crate::quant`'s.

use std::cell::RefCell;

use crate::isa::Isa;
#[cfg(target_arch = "x86_64")]
use crate::quant::narrow16_avx2;
use crate::quant::{clamp, round_to_i32};
/// The element types [`plane`] (and `depthwise8::block8`) read and write.
pub use crate::quant::{PlaneIn, QuantOut};

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
    /// Where the padded plane sits in the scratch buffer.
    fn layout(&self) -> Layout {
        let width = self.ow + (self.kw - 1) * self.dil_w / self.stride_w;
        let rows = self.oh + (self.kh - 1) * self.dil_h / self.stride_h;
        let phase_len = rows * width;
        Layout {
            width,
            rows,
            phase_len,
            count: (self.oh - 1) * width + self.ow,
            // The last chunk computes up to LANES - 1 outputs past `count` (dropped), reading
            // that far past the last phase.
            len: self.stride_h * self.stride_w * phase_len + LANES,
        }
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

/// The padded plane in the scratch buffer: `stride_h * stride_w` phases, phase (py, px) holding
/// the padded rows `py, py + stride_h, ...` and columns `px, px + stride_w, ...`, each phase
/// `rows` x `width`. Tap (i, j) of output (oy, ox) then reads phase `((i * dil_h) % stride_h,
/// (j * dil_w) % stride_w)` at row `oy + (i * dil_h) / stride_h` and column `ox + (j * dil_w) /
/// stride_w`. Numbering the outputs `t = oy * width + ox` (the `width - ow` columns past each
/// row's end are computed and dropped), every tap is one fixed offset from `t`.
#[derive(Debug, Clone, Copy)]
struct Layout {
    width: usize,
    rows: usize,
    phase_len: usize,
    /// Outputs numbered `t`, the last one `(oh - 1) * width + ow - 1`.
    count: usize,
    /// Length of the scratch buffer.
    len: usize,
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

thread_local! {
    /// Per-thread scratch: the padded plane, and the geometry it was last filled for (its
    /// padding, zero, is then still in place). Reused across calls, so the steady state
    /// allocates nothing.
    static SCRATCH: RefCell<(Vec<f32>, Option<Geometry>)> = const { RefCell::new((Vec::new(), None)) };
}

/// Convolves one channel plane `x` (h * w values, centred on `x_zero`) with `taps` (kh * kw
/// values), starting every output from `bias`, and finishes each output as `finish` says.
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
    let l = g.layout();
    SCRATCH.with(|s| {
        let (padded, last) = &mut *s.borrow_mut();
        match isa {
            Isa::Scalar | Isa::NeonDot => {
                fill_padded(g, &l, x, x_zero, padded, last);
                outputs::<T, false>(g, &l, padded, taps, bias, finish)
            }
            // SAFETY: both AVX2 variants are only constructed after run-time detection of both
            // features (`Isa::detect`, `Isa::available`).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma | Isa::Avx2Vnni => unsafe {
                plane_avx2(g, &l, x, x_zero, padded, last, taps, bias, finish)
            },
        }
    })
}

/// Copies `x` into `padded` laid out as `l` says, zero outside the plane (the centred value
/// of the zero point).
///
/// Which cells hold the plane and which the padding depends on the geometry only: filled for
/// the same geometry as last time (`last`), the padding is still zero and only the plane's
/// cells are written.
#[inline(always)]
fn fill_padded<I: PlaneIn>(
    g: &Geometry,
    l: &Layout,
    x: &[I],
    x_zero: f32,
    padded: &mut Vec<f32>,
    last: &mut Option<Geometry>,
) {
    if *last != Some(*g) || padded.len() != l.len {
        padded.clear();
        padded.resize(l.len, 0.0);
        *last = Some(*g);
    }
    let (sh, sw, pl) = (g.stride_h, g.stride_w, g.pad_left);
    // Phase column c of column phase px holds padded column px + c * sw, i.e. plane column
    // px + c * sw - pad_left: the phase columns c0.. (n of them) that hold plane columns
    // from `first` on.
    let columns = |px: usize| {
        let c0 = pl.saturating_sub(px).div_ceil(sw);
        let first = px + c0 * sw - pl;
        (first < g.w).then(|| {
            (
                c0,
                first,
                ((g.w - 1 - first) / sw + 1).min(l.width.saturating_sub(c0)),
            )
        })
    };
    // Stride 2 across: plane column sc lands in phase (sc + pl) % 2 at (sc + pl) / 2, so one
    // pass over each row fills both phases (when every column lands inside the phases).
    let pairs = sw == 2 && (g.w + pl - 1) / 2 < l.width;
    for py in 0..sh {
        // The phase rows r that hold plane rows: padded row py + r * sh, plane row
        // py + r * sh - pad_top.
        let plane_row = |r: usize| (py + r * sh).checked_sub(g.pad_top).filter(|&y| y < g.h);
        if pairs {
            let (a, b) = (
                (py * 2 + pl % 2) * l.phase_len + pl / 2,
                (py * 2 + (pl + 1) % 2) * l.phase_len + pl.div_ceil(2),
            );
            for r in 0..l.rows {
                let Some(y) = plane_row(r) else { continue };
                let src = &x[y * g.w..(y + 1) * g.w];
                fill_pairs(src, x_zero, padded, a + r * l.width, b + r * l.width);
            }
            continue;
        }
        for px in 0..sw {
            let Some((c0, first, n)) = columns(px) else {
                continue;
            };
            let phase = (py * sw + px) * l.phase_len + c0;
            for r in 0..l.rows {
                let Some(y) = plane_row(r) else { continue };
                let src = &x[y * g.w + first..(y + 1) * g.w];
                let dst = &mut padded[phase + r * l.width..phase + r * l.width + n];
                if sw == 1 {
                    // Eight at a time with fixed sizes (converts as vectors), then the rest.
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
                        .zip(src.iter().step_by(sw))
                        .for_each(|(d, v)| *d = v.centred(x_zero));
                }
            }
        }
    }
}

/// One plane row `src` into two phase rows: `src[2k]` to `padded[a + k]`, `src[2k + 1]` to
/// `padded[b + k]` (disjoint ranges: different phases).
#[inline(always)]
fn fill_pairs<I: PlaneIn>(src: &[I], x_zero: f32, padded: &mut [f32], a: usize, b: usize) {
    let pairs = src.len() / 2;
    let (lo_at, hi_at) = (a.min(b), a.max(b));
    let (head, tail) = padded.split_at_mut(hi_at);
    let (first, second) = (&mut head[lo_at..lo_at + pairs], &mut tail[..pairs]);
    let (da, db) = if a < b {
        (first, second)
    } else {
        (second, first)
    };
    // Sixteen source values (eight pairs) at a time, split as vectors, then the rest.
    let mut s16 = src.chunks_exact(16);
    let (mut ea, mut eb) = (da.chunks_exact_mut(8), db.chunks_exact_mut(8));
    for ((v, oa), ob) in (&mut s16).zip(&mut ea).zip(&mut eb) {
        let v: &[I; 16] = v.try_into().expect("16 values");
        let oa: &mut [f32; 8] = oa.try_into().expect("8 values");
        let ob: &mut [f32; 8] = ob.try_into().expect("8 values");
        I::split16(v, x_zero, oa, ob);
    }
    let done = src.len() / 16 * 8;
    for k in done..pairs {
        da[k] = src[2 * k].centred(x_zero);
        db[k] = src[2 * k + 1].centred(x_zero);
    }
    if src.len() % 2 == 1 {
        padded[a + pairs] = src[src.len() - 1].centred(x_zero);
    }
}

/// [`plane`]'s work (filling the padded plane, then the outputs) compiled for AVX2 and FMA:
/// the generic code inlined here, down to [`chunk`], becomes vector code.
///
/// # Safety
/// The CPU has AVX2 and FMA: `isa` is an AVX2 variant, which [`Isa::detect`] returns only
/// after checking both.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn plane_avx2<I: PlaneIn, T: QuantOut>(
    g: &Geometry,
    l: &Layout,
    x: &[I],
    x_zero: f32,
    padded: &mut Vec<f32>,
    last: &mut Option<Geometry>,
    taps: &[f32],
    bias: f32,
    finish: Finish<'_, T>,
) {
    fill_padded(g, l, x, x_zero, padded, last);
    outputs::<T, true>(g, l, padded, taps, bias, finish)
}

/// Outputs computed together, in registers, across all taps.
const LANES: usize = 16;
/// Largest kernel (taps) the kernels take: 7x7 and 8x8 fit; [`supports`] says so before use.
pub const MAX_TAPS: usize = 64;

/// Whether the kernels handle a `kh` x `kw` filter.
pub fn supports(kh: usize, kw: usize) -> bool {
    kh >= 1 && kw >= 1 && kh * kw <= MAX_TAPS
}

#[inline(always)]
fn outputs<T: QuantOut, const FMA: bool>(
    g: &Geometry,
    l: &Layout,
    padded: &[f32],
    taps: &[f32],
    bias: f32,
    finish: Finish<'_, T>,
) {
    // Each tap's offset from its output's number (see [`Layout`]).
    let mut offsets = [0usize; MAX_TAPS];
    let n_taps = g.kh * g.kw;
    for i in 0..g.kh {
        let (a, sh) = (i * g.dil_h, g.stride_h);
        for j in 0..g.kw {
            let (b, sw) = (j * g.dil_w, g.stride_w);
            offsets[i * g.kw + j] =
                ((a % sh) * sw + b % sw) * l.phase_len + (a / sh) * l.width + b / sw;
        }
    }
    let (offsets, taps) = (&offsets[..n_taps], &taps[..n_taps]);
    // 3x3, by far the most common kernel, with the tap count known to the compiler: the taps'
    // broadcasts stay in registers across the whole plane.
    if let (Ok(o9), Ok(t9)) = (<&[usize; 9]>::try_from(offsets), <[f32; 9]>::try_from(taps)) {
        return outputs_with::<T, FMA, 9>(g, l, padded, o9, t9, bias, finish);
    }
    outputs_with::<T, FMA, 0>(g, l, padded, offsets, taps, bias, finish)
}

/// The outputs of one plane, with `N` taps when `N > 0`, else `offsets.len()`.
#[inline(always)]
fn outputs_with<T: QuantOut, const FMA: bool, const N: usize>(
    g: &Geometry,
    l: &Layout,
    padded: &[f32],
    offsets: impl AsRef<[usize]>,
    taps: impl AsRef<[f32]>,
    bias: f32,
    mut finish: Finish<'_, T>,
) {
    let (offsets, taps) = (offsets.as_ref(), taps.as_ref());
    let max_off = offsets.iter().copied().max().unwrap_or(0);
    let last_chunk = (l.count - 1) / LANES * LANES;
    assert!(
        last_chunk + max_off + LANES <= padded.len(),
        "padded plane too short"
    );
    let sums = Sums::<FMA, N> {
        padded,
        offsets,
        taps,
        bias,
    };
    match &mut finish {
        Finish::Float { out, min, max } => chunks(
            l,
            g.ow,
            out,
            FloatOut {
                sums,
                min: *min,
                max: *max,
            },
        ),
        Finish::Quant {
            out,
            multiplier,
            zero,
            lo,
            hi,
        } => chunks(
            l,
            g.ow,
            out,
            QuantOut8 {
                sums,
                multiplier: *multiplier,
                zero: *zero,
                lo: *lo,
                hi: *hi,
            },
        ),
    }
}

/// The sums of one chunk of outputs (`N` taps when `N > 0`, else `offsets.len()`), with the
/// bounds [`outputs_with`] checked.
struct Sums<'a, const FMA: bool, const N: usize> {
    padded: &'a [f32],
    offsets: &'a [usize],
    taps: &'a [f32],
    bias: f32,
}

impl<const FMA: bool, const N: usize> Sums<'_, FMA, N> {
    #[inline(always)]
    fn at(&self, t: usize, lanes: &mut [f32; LANES]) {
        let (padded, bias) = (self.padded, self.bias);
        // SAFETY: every read is at t + off + l with t <= the last chunk, off <= the largest
        // offset and l < LANES, in bounds by the assertion in `outputs_with`; the ISA was
        // detected by the caller.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if FMA && N == 9 {
                return chunk3x3_avx2(padded, t, self.offsets, self.taps, bias, lanes);
            }
            if N > 0 {
                chunk::<FMA>(padded, t, &self.offsets[..N], &self.taps[..N], bias, lanes)
            } else {
                chunk::<FMA>(padded, t, self.offsets, self.taps, bias, lanes)
            }
        }
    }
}

/// One chunk's finished outputs, from `t` on, into the first LANES values of a buffer. (A
/// trait rather than closures: a closure is not always inlined into the `target_feature`
/// function that runs it, and outside it the vector code is not built for AVX2.)
trait ChunkOut<V> {
    fn finish(&self, t: usize, buf: &mut [V; 2 * LANES]);
}

struct FloatOut<'a, const FMA: bool, const N: usize> {
    sums: Sums<'a, FMA, N>,
    min: f32,
    max: f32,
}

impl<const FMA: bool, const N: usize> ChunkOut<f32> for FloatOut<'_, FMA, N> {
    #[inline(always)]
    fn finish(&self, t: usize, buf: &mut [f32; 2 * LANES]) {
        let lanes: &mut [f32; LANES] = (&mut buf[..LANES]).try_into().expect("LANES values");
        self.sums.at(t, lanes);
        lanes
            .iter_mut()
            .for_each(|a| *a = clamp(*a, self.min, self.max));
    }
}

struct QuantOut8<'a, const FMA: bool, const N: usize> {
    sums: Sums<'a, FMA, N>,
    multiplier: f32,
    zero: i32,
    lo: f32,
    hi: f32,
}

impl<T: QuantOut, const FMA: bool, const N: usize> ChunkOut<T> for QuantOut8<'_, FMA, N> {
    #[inline(always)]
    fn finish(&self, t: usize, buf: &mut [T; 2 * LANES]) {
        let mut lanes = [0f32; LANES];
        self.sums.at(t, &mut lanes);
        let (m, z, lo, hi) = (self.multiplier, self.zero, self.lo, self.hi);
        #[cfg(target_arch = "x86_64")]
        if FMA && std::mem::size_of::<T>() == 1 {
            let dst = buf.as_mut_ptr().cast::<u8>();
            // SAFETY: FMA is only true under plane_avx2 (AVX2 detected); `buf` holds
            // 2 * LANES one-byte values.
            unsafe { quant16_avx2(&lanes, m, z, lo, hi, T::MIN < 0.0, dst) };
            return;
        }
        buf.iter_mut().zip(lanes.iter()).for_each(|(o, &a)| {
            let v = clamp(a * m, lo, hi);
            *o = T::from_i32(round_to_i32(v) + z);
        });
    }
}

/// Every chunk of `l`'s outputs, finished by `f`, stored into `out` one chunk behind: a
/// chunk's results are read back from memory only after the next chunk is computed, by when
/// the stores that wrote them are done (read straight away at an offset, the load waits for
/// them).
#[inline(always)]
fn chunks<V: Copy + Default>(l: &Layout, ow: usize, out: &mut [V], f: impl ChunkOut<V>) {
    let mut bufs = [[V::default(); 2 * LANES]; 2];
    let mut rows = Rows::default();
    let mut pending: Option<(usize, usize)> = None;
    for (i, t) in (0..l.count).step_by(LANES).enumerate() {
        f.finish(t, &mut bufs[i % 2]);
        if let Some((p, _)) = pending {
            rows.scatter(&bufs[(i + 1) % 2], p, p + LANES, l.width, ow, out);
        }
        pending = Some((t, i));
    }
    if let Some((p, i)) = pending {
        rows.scatter(&bufs[i % 2], p, l.count, l.width, ow, out);
    }
}

/// Where the next computed output lands: its output row, and the number of that row's first
/// output.
#[derive(Default)]
struct Rows {
    oy: usize,
    start: usize,
}

impl Rows {
    /// Outputs `t..end` (computed in `lanes[..LANES]`, the first at `t`, rows `width` apart)
    /// into `out` (rows `ow` apart), dropping the columns past `ow`.
    ///
    /// Each run of a row is stored as a whole chunk (a fixed-size copy: vector moves, not a
    /// call to `memcpy`) wherever `out` has room: what lands past the run belongs to later
    /// outputs, which are stored after it.
    #[inline(always)]
    fn scatter<V: Copy>(
        &mut self,
        lanes: &[V; 2 * LANES],
        t: usize,
        end: usize,
        width: usize,
        ow: usize,
        out: &mut [V],
    ) {
        let t0 = t;
        let mut t = t;
        while t < end {
            let col = t - self.start;
            if col < ow {
                let n = (ow - col).min(end - t);
                let (at, k) = (self.oy * ow + col, t - t0);
                if at + LANES <= out.len() {
                    let run: &[V; LANES] = lanes[k..k + LANES].try_into().expect("LANES values");
                    let dst: &mut [V; LANES] =
                        (&mut out[at..at + LANES]).try_into().expect("LANES values");
                    *dst = *run;
                } else {
                    out[at..at + n].copy_from_slice(&lanes[k..k + n]);
                }
                t += n;
            } else {
                t = (self.start + width).min(end);
            }
            if t == self.start + width {
                self.oy += 1;
                self.start += width;
            }
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

/// [`chunk`] for a 3x3 kernel in AVX2 registers. Its offsets are a row part plus a column part
/// (`offsets[3i + j] = offsets[3i] + offsets[j]`, [`Layout`]), so the nine loads address from
/// three row pointers and three column offsets held in registers, and the nine taps'
/// broadcasts stay in registers across the plane.
///
/// # Safety
/// As [`chunk`]'s, with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn chunk3x3_avx2(
    padded: &[f32],
    base: usize,
    offsets: &[usize],
    taps: &[f32],
    bias: f32,
    acc: &mut [f32; LANES],
) {
    use std::arch::x86_64::*;
    debug_assert!(offsets.len() == 9 && taps.len() == 9 && offsets[0] == 0);
    // SAFETY: as the function's contract says: every address is base + offsets[3i + j] + l.
    unsafe {
        let p = padded.as_ptr().add(base);
        let rows = [p, p.add(offsets[3]), p.add(offsets[6])];
        let cols = [0, offsets[1], offsets[2]];
        let mut a0 = _mm256_set1_ps(bias);
        let mut a1 = a0;
        for (i, r) in rows.iter().enumerate() {
            for (j, &c) in cols.iter().enumerate() {
                let k = _mm256_set1_ps(*taps.get_unchecked(3 * i + j));
                a0 = _mm256_fmadd_ps(k, _mm256_loadu_ps(r.add(c)), a0);
                a1 = _mm256_fmadd_ps(k, _mm256_loadu_ps(r.add(c + 8)), a1);
            }
        }
        _mm256_storeu_ps(acc.as_mut_ptr(), a0);
        _mm256_storeu_ps(acc.as_mut_ptr().add(8), a1);
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
        _mm_storeu_si128(dst.cast(), narrow16_avx2(a, b, signed));
    }
}

#[cfg(test)]
pub(super) mod tests;
