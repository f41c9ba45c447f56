//! The matrix product of float convolutions with one group (`lookout.Conv`), lookout's own.
//!
//! tract 0.23 computes a float convolution as a matrix product on packed panels of both
//! operands: every run packs the activations again (`OptMatMulPack`), and its lazy im2col for
//! a first 3x3 layer over three channels is slow (MobileNetV2's first convolution: 2.7 ms,
//! 4 GMAC/s). Here the weights are packed once, at load, in panels of [`MR`] output channels.
//! For a 1x1 convolution with stride 1 and no padding the input planes are the matrix's rows
//! (NCHW); any other kernel first lays its patches out as rows (im2col) in a per-thread
//! buffer. Those rows are copied block by block into contiguous strips of [`NR`] columns
//! ([`matmul`]), so the tile reads one sequential stream. The tile is
//! [`MR`] x [`NR`] (6 channels x 16 pixels: 12 AVX2 accumulators, or 24 NEON ones), with the
//! bias and a fused Relu/Clip applied as it is stored. With AVX-512F a 512-bit register holds
//! a strip row, and the tile takes two strips at once (6 x 32, 12 accumulators).
//!
//! Packing the weights ([`Packed`]), laying out the patches ([`im2col`]) and the product
//! ([`matmul`]) are here; the operator (`ops::fconv`) reads the model's constants, keeps the
//! per-thread im2col buffer and loops over the batch.

use std::cell::RefCell;

use super::depthwise::Geometry;
use super::im2col::{strided_copy, tap_columns};
use crate::isa::Isa;
use crate::quant::clamp;
use crate::team::{self, bounds, Shared};

/// Output channels per tile.
pub const MR: usize = 6;
/// Pixels per tile.
pub const NR: usize = 16;
/// Input bytes per block of column strips (a share of a 512 KB L2 cache).
const BLOCK_BYTES: usize = 128 * 1024;

/// Weights [M][K] in panels of [`MR`] rows: panel `p`, step `k` holds rows `p * MR ..` at `k`
/// (zero past M).
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl Packed {
    pub fn new(w: &[f32], m: usize, k: usize) -> Packed {
        assert_eq!(w.len(), m * k);
        let mut data = vec![0.0; m.div_ceil(MR) * k * MR];
        for (r, row) in w.chunks_exact(k.max(1)).enumerate().take(m) {
            let (p, i) = (r / MR, r % MR);
            for (kk, &v) in row.iter().enumerate() {
                data[(p * k + kk) * MR + i] = v;
            }
        }
        Packed { m, k, data }
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * MR..(p + 1) * self.k * MR]
    }
}

/// What is applied to each result as it is stored: `clamp(acc + bias[row], lo, hi)`.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    pub bias: &'a [f32],
    pub lo: f32,
    pub hi: f32,
}

/// What an im2col buffer was laid out for: the geometry and the channel count.
pub type Shape = (Geometry, usize);

thread_local! {
    /// Per-thread scratch: a block of packed column strips. Reused across calls, so the steady
    /// state allocates nothing.
    static STRIPS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[M][n] = epilogue(W · x)`, `x` being [K][n] with rows `ldx` apart, `out` [M][n].
///
/// The columns go in blocks whose input stays in the cache. Each block is first copied into
/// contiguous strips of [`NR`] columns ([k][NR] each, the last one zero-padded), so the tile
/// reads one sequential stream whatever `ldx` is; then, panel by panel, each panel's rows are
/// written as MR sequential streams and its weights read once per block.
pub fn matmul(
    isa: Isa,
    w: &Packed,
    x: &[f32],
    ldx: usize,
    n: usize,
    epi: Epilogue<'_>,
    out: &mut [f32],
) {
    let (m, k) = (w.m, w.k);
    assert!(epi.bias.len() >= m && out.len() >= m * n && ldx >= n);
    assert!(k == 0 || x.len() >= (k - 1) * ldx + n);
    if m == 0 || n == 0 {
        return;
    }
    let panels = m.div_ceil(MR);
    let strips = n.div_ceil(NR);
    let block = (BLOCK_BYTES / (k.max(1) * NR * 4)).clamp(1, strips);
    let blocks = strips.div_ceil(block);
    // Parts: column blocks, each cut into groups of panels when an idle worker helps (`team`);
    // each part packs its own block's strips, so on one thread a block is packed once.
    let groups = if team::helping() {
        PARTS.div_ceil(blocks).clamp(1, panels)
    } else {
        1
    };
    let out = Shared::new(out);
    team::for_each(blocks * groups, |i| {
        let j0 = i / groups * block;
        let j1 = (j0 + block).min(strips);
        let (p0, p1) = bounds(panels, groups, i % groups);
        STRIPS.with(|s| {
            let mut buf = s.borrow_mut();
            buf.resize(block * k * NR, 0.0);
            for j in j0..j1 {
                let (c0, cols) = (j * NR, NR.min(n - j * NR));
                let strip = &mut buf[(j - j0) * k * NR..(j - j0 + 1) * k * NR];
                for (kk, dst) in strip.chunks_exact_mut(NR).enumerate() {
                    let src = &x[kk * ldx + c0..kk * ldx + c0 + cols];
                    if let (Ok(d), Ok(s)) = (
                        <&mut [f32; NR]>::try_from(&mut *dst),
                        <&[f32; NR]>::try_from(src),
                    ) {
                        *d = *s;
                    } else {
                        dst[..cols].copy_from_slice(src);
                        dst[cols..].fill(0.0);
                    }
                }
            }
            for p in p0..p1 {
                let rows = MR.min(m - p * MR);
                let mut bias = [0.0f32; MR];
                bias[..rows].copy_from_slice(&epi.bias[p * MR..p * MR + rows]);
                let t = Tile {
                    k,
                    rows,
                    bias: &bias,
                    lo: epi.lo,
                    hi: epi.hi,
                };
                // Two strips at a time where 512-bit registers hold a strip row each.
                let step = if isa.avx512() { 2 } else { 1 };
                for j in (j0..j1).step_by(step) {
                    let span = step.min(j1 - j);
                    let strips = &buf[(j - j0) * k * NR..(j - j0 + span) * k * NR];
                    // SAFETY: rows p * MR.. of columns j * NR.. are this part's alone.
                    unsafe {
                        t.run(
                            isa,
                            w.panel(p),
                            strips,
                            &out,
                            p * MR * n + j * NR,
                            n,
                            (span * NR).min(n - j * NR),
                        )
                    };
                }
            }
        });
    });
}

/// Parts of the work to aim for when an idle worker helps.
const PARTS: usize = 8;

/// One panel's tiles: `rows` (<= MR) output channels over `k` steps, finished with the bias
/// and the clip.
struct Tile<'a> {
    k: usize,
    rows: usize,
    bias: &'a [f32; MR],
    lo: f32,
    hi: f32,
}

impl Tile<'_> {
    /// `rows` x `cols` results at `out` (rows `ldo` apart) from one packed weight panel and one
    /// packed strip ([k][NR]), or two consecutive ones (`cols` > NR; AVX-512 only). A strip of
    /// at most 8 columns computes only those 8.
    ///
    /// # Safety
    /// No other thread reads or writes those results of `out` (from `at` on) meanwhile.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        &self,
        isa: Isa,
        w: &[f32],
        strip: &[f32],
        out: &Shared<'_, f32>,
        at: usize,
        ldo: usize,
        cols: usize,
    ) {
        let (k, rows) = (self.k, self.rows);
        let span = cols.div_ceil(NR);
        assert!(w.len() >= k * MR && strip.len() >= span * k * NR);
        assert!((1..=MR).contains(&rows) && cols >= 1);
        assert!(span == 1 || (span == 2 && isa.avx512()));
        assert!(at + (rows - 1) * ldo + cols <= out.len());
        // SAFETY: in bounds (asserted).
        let op = unsafe { out.as_ptr().add(at) };
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this variant is only chosen where the CPU has AVX-512F (and AVX2 and FMA);
            // the asserts above bound every load and store.
            Isa::Avx2Vnni => unsafe {
                if span == 2 {
                    tile_avx512::<2>(self, w, strip, op, ldo, cols)
                } else {
                    tile_avx512::<1>(self, w, strip, op, ldo, cols)
                }
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the AVX2 variant is only chosen where the CPU has both; the asserts above
            // bound every load and store.
            Isa::Avx2Fma => unsafe {
                if cols <= 8 {
                    tile_avx2::<1>(self, w, strip, op, ldo, cols)
                } else {
                    tile_avx2::<2>(self, w, strip, op, ldo, cols)
                }
            },
            Isa::Scalar | Isa::NeonDot => {
                let mut acc = [[0.0f32; NR]; MR];
                tile_portable(k, w, strip, &mut acc);
                for (r, row) in acc.iter().enumerate().take(rows) {
                    for (c, &a) in row.iter().enumerate().take(cols) {
                        // SAFETY: in bounds (asserted), this part's own (the contract).
                        unsafe { *op.add(r * ldo + c) = clamp(a + self.bias[r], self.lo, self.hi) };
                    }
                }
            }
        }
    }
}

/// The tile with AVX2 and FMA, `V` vectors of 8 columns per row: per k, V loads, one broadcast
/// weight per row and 6 V fused multiply-adds; the epilogue in vector registers, stored straight
/// to `out` when the tile is whole.
///
/// # Safety
/// The CPU has AVX2 and FMA; `w` holds k * MR values, `strip` k * NR, `op` points at
/// (rows - 1) * ldo + cols writable values no one else touches meanwhile, and cols <= 8 V.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const V: usize>(
    t: &Tile<'_>,
    w: &[f32],
    strip: &[f32],
    op: *mut f32,
    ldo: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut a = [[_mm256_setzero_ps(); V]; MR];
    let (wp, xp) = (w.as_ptr(), strip.as_ptr());
    for kk in 0..t.k {
        // SAFETY: kk < k, within what the caller guarantees.
        unsafe {
            let mut xv = [_mm256_setzero_ps(); V];
            for (v, xr) in xv.iter_mut().enumerate() {
                *xr = _mm256_loadu_ps(xp.add(kk * NR + 8 * v));
            }
            for (r, ar) in a.iter_mut().enumerate() {
                let wr = _mm256_broadcast_ss(&*wp.add(kk * MR + r));
                for (acc, &xr) in ar.iter_mut().zip(&xv) {
                    *acc = _mm256_fmadd_ps(wr, xr, *acc);
                }
            }
        }
    }
    let (vlo, vhi) = (_mm256_set1_ps(t.lo), _mm256_set1_ps(t.hi));
    for (r, ar) in a.iter().enumerate().take(t.rows) {
        let b = _mm256_set1_ps(t.bias[r]);
        let mut row = [0.0f32; NR];
        for (v, &acc) in ar.iter().enumerate() {
            let y = _mm256_max_ps(_mm256_min_ps(_mm256_add_ps(acc, b), vhi), vlo);
            // SAFETY: as the function's contract says.
            unsafe {
                if cols == 8 * V {
                    _mm256_storeu_ps(op.add(r * ldo + 8 * v), y);
                } else {
                    _mm256_storeu_ps(row.as_mut_ptr().add(8 * v), y);
                }
            }
        }
        if cols < 8 * V {
            // SAFETY: as the function's contract says.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), op.add(r * ldo), cols) };
        }
    }
}

/// The tile with AVX-512F on `V` consecutive strips, one 512-bit register per strip row: per
/// k, V loads and 6 V fused multiply-adds on a broadcast weight (embedded in the instruction),
/// 6 V accumulators; the epilogue in registers and a masked store for a partial strip.
///
/// # Safety
/// The CPU has AVX-512F; `w` holds k * MR values, `strips` V * k * NR, `op` points at
/// (rows - 1) * ldo + cols writable values no one else touches meanwhile, and
/// NR (V - 1) < cols <= NR V.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const V: usize>(
    t: &Tile<'_>,
    w: &[f32],
    strips: &[f32],
    op: *mut f32,
    ldo: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut a = [[_mm512_setzero_ps(); V]; MR];
    let (wp, xp) = (w.as_ptr(), strips.as_ptr());
    let stride = t.k * NR;
    for kk in 0..t.k {
        // SAFETY: kk < k and v < V, within what the caller guarantees.
        unsafe {
            let mut xv = [_mm512_setzero_ps(); V];
            for (v, xr) in xv.iter_mut().enumerate() {
                *xr = _mm512_loadu_ps(xp.add(v * stride + kk * NR));
            }
            for (r, ar) in a.iter_mut().enumerate() {
                let wr = _mm512_set1_ps(*wp.add(kk * MR + r));
                for (acc, &xr) in ar.iter_mut().zip(&xv) {
                    *acc = _mm512_fmadd_ps(wr, xr, *acc);
                }
            }
        }
    }
    let (vlo, vhi) = (_mm512_set1_ps(t.lo), _mm512_set1_ps(t.hi));
    for (r, ar) in a.iter().enumerate().take(t.rows) {
        let b = _mm512_set1_ps(t.bias[r]);
        for (v, &acc) in ar.iter().enumerate() {
            let y = _mm512_max_ps(_mm512_min_ps(_mm512_add_ps(acc, b), vhi), vlo);
            let left = cols - NR * v;
            // SAFETY: as the function's contract says; the mask stops the store at `cols`.
            unsafe {
                let dst = op.add(r * ldo + NR * v);
                if left >= NR {
                    _mm512_storeu_ps(dst, y);
                } else {
                    _mm512_mask_storeu_ps(dst, ((1u32 << left) - 1) as __mmask16, y);
                }
            }
        }
    }
}

/// The portable tile on one packed strip: NEON `fmla` on aarch64, plain multiply-adds
/// elsewhere.
#[inline]
fn tile_portable(k: usize, w: &[f32], strip: &[f32], acc: &mut [[f32; NR]; MR]) {
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::aarch64::*;
        assert!(w.len() >= k * MR && strip.len() >= k * NR);
        // SAFETY: NEON is part of every aarch64 CPU; the assert bounds every load.
        unsafe {
            let mut a = [[vdupq_n_f32(0.0); 4]; MR];
            let (wp, xp) = (w.as_ptr(), strip.as_ptr());
            for kk in 0..k {
                let row = xp.add(kk * NR);
                let xv = [
                    vld1q_f32(row),
                    vld1q_f32(row.add(4)),
                    vld1q_f32(row.add(8)),
                    vld1q_f32(row.add(12)),
                ];
                for (r, ar) in a.iter_mut().enumerate() {
                    let wr = *wp.add(kk * MR + r);
                    for q in 0..4 {
                        ar[q] = vfmaq_n_f32(ar[q], xv[q], wr);
                    }
                }
            }
            for (ar, dst) in a.iter().zip(acc.iter_mut()) {
                for (q, v) in ar.iter().enumerate() {
                    vst1q_f32(dst.as_mut_ptr().add(4 * q), *v);
                }
            }
        }
        return;
    }
    #[allow(unreachable_code)]
    for (xr, wr) in strip.chunks_exact(NR).zip(w.chunks_exact(MR)).take(k) {
        for (r, ar) in acc.iter_mut().enumerate() {
            for (a, &xv) in ar.iter_mut().zip(xr) {
                *a += wr[r] * xv;
            }
        }
    }
}

/// The patches of `x` (`c` planes of g.h x g.w) as rows: row (ci, ky, kx) holds, for each
/// output pixel, the input value under that tap (zero in the padding). [C*KH*KW][OH*OW].
///
/// Which cells are padding depends on the shape only: laid out for the same shape as last time
/// (`last`), the padding is still zero and only the input's cells are written.
pub fn im2col(x: &[f32], c: usize, g: &Geometry, out: &mut Vec<f32>, last: &mut Option<Shape>) {
    let n = g.oh * g.ow;
    if *last != Some((*g, c)) || out.len() != c * g.kh * g.kw * n {
        out.clear();
        out.resize(c * g.kh * g.kw * n, 0.0);
        *last = Some((*g, c));
    }
    let mut rows = out.chunks_exact_mut(n.max(1));
    for ci in 0..c {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let Some(row) = rows.next() else { return };
                let reach = kx * g.dil_w;
                let (lo, hi) = tap_columns(g.w, g.ow, g.pad_left, reach, g.stride_w);
                for oy in 0..g.oh {
                    let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    // In range by the choice of lo..hi: 0 <= ox * stride + reach - pad_left < w.
                    let first = lo * g.stride_w + reach - g.pad_left;
                    strided_copy(&src[first..], g.stride_w, &mut dst[lo..hi], |v| v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, in f64.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        x: &[f32],
        c: usize,
        w: &[f32],
        m: usize,
        g: &Geometry,
        bias: &[f32],
        lo: f32,
        hi: f32,
    ) -> Vec<f64> {
        let mut out = vec![0.0; m * g.oh * g.ow];
        for o in 0..m {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = bias[o] as f64;
                    for ci in 0..c {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy =
                                    (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                                let ix =
                                    (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x[(ci * g.h + iy as usize) * g.w + ix as usize];
                                let wv = w[((o * c + ci) * g.kh + ky) * g.kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[(o * g.oh + oy) * g.ow + ox] = acc.clamp(lo as f64, hi as f64);
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_path_matches_the_definition() {
        // (c, m, h, w, k, stride, pad, dilation): direct 1x1 with partial strips and panels,
        // a first layer (3 channels, stride 2), dilation, asymmetric coverage, odd sizes.
        let cases = [
            (5, 7, 3, 7, 1, 1, 0, 1),
            (16, 13, 7, 7, 1, 1, 0, 1),
            (3, 8, 11, 9, 3, 2, 1, 1),
            (4, 6, 9, 10, 3, 1, 2, 2),
            (2, 3, 5, 6, 5, 3, 2, 1),
            (6, 12, 8, 8, 1, 2, 0, 1),
            (1, 1, 1, 33, 1, 1, 0, 1),
            // Blocks of three strips (a pair, then a partial one alone) and of one.
            (600, 7, 5, 9, 1, 1, 0, 1),
            (1500, 7, 3, 11, 1, 1, 0, 1),
        ];
        for isa in Isa::available() {
            for (i, &(c, m, h, w, k, stride, pad, dil)) in cases.iter().enumerate() {
                let (oh, ow) = (
                    Geometry::output_len(h, k, stride, dil, 2 * pad).unwrap(),
                    Geometry::output_len(w, k, stride, dil, 2 * pad).unwrap(),
                );
                let g = Geometry {
                    h,
                    w,
                    kh: k,
                    kw: k,
                    stride_h: stride,
                    stride_w: stride,
                    dil_h: dil,
                    dil_w: dil,
                    pad_top: pad,
                    pad_left: pad,
                    oh,
                    ow,
                };
                let x = values(c * h * w, i as u32);
                let wt = values(m * c * k * k, 100 + i as u32);
                let bias = values(m, 200 + i as u32);
                for (lo, hi) in [(f32::NEG_INFINITY, f32::INFINITY), (0.0, 0.5)] {
                    let want = direct(&x, c, &wt, m, &g, &bias, lo, hi);
                    let packed = Packed::new(&wt, m, c * k * k);
                    let epi = Epilogue {
                        bias: &bias,
                        lo,
                        hi,
                    };
                    let mut out = vec![f32::NAN; m * oh * ow];
                    if k == 1 && stride == 1 && pad == 0 {
                        matmul(isa, &packed, &x, h * w, oh * ow, epi, &mut out);
                    } else {
                        // Into a buffer last laid out for other values of the same shape (as
                        // on every run after the first): only the input's cells are written.
                        let (mut cols, mut last) = (Vec::new(), None);
                        let other: Vec<f32> = x.iter().map(|v| v + 1.0).collect();
                        im2col(&other, c, &g, &mut cols, &mut last);
                        im2col(&x, c, &g, &mut cols, &mut last);
                        matmul(isa, &packed, &cols, oh * ow, oh * ow, epi, &mut out);
                    }
                    for (j, (o, r)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (*o as f64 - r).abs() < 1e-4,
                            "{isa:?} case {i} at {j}: {o} vs {r}"
                        );
                    }
                }
            }
        }
    }
}
