//! The quantized convolution's matrix product ([`super::qgemm`]) on the 8-bit dot-product
//! instructions: aarch64's `sdot` (four 8-bit multiply-adds into each 32-bit lane, 64 per
//! instruction) and x86-64's `vpdpbusd` (AVX512-VNNI, on 512-bit registers: 64 per
//! instruction, unsigned x signed).
//!
//! DotProd is optional in Armv8.2 and later: Cortex-A55/A76/A78 have it (Raspberry Pi 5,
//! Jetson Orin), Cortex-A53/A57/A72 do not (Raspberry Pi 3 and 4, Jetson Nano), and lookout
//! detects it at run time ([`Isa::NeonDot`]). Without it the i16 NEON tile of
//! [`super::qgemm`] runs.
//!
//! - Weights: `w - w_zero` as i8, packed once, in panels of [`MR`] output channels with each
//!   group of four consecutive `k` together. A model whose centred weights do not all fit i8
//!   (uint8 weights with a zero point) keeps the i16 path.
//! - Activations: `x - OFFSET` as i8 (uint8 values shifted by 128; int8 as they are), packed
//!   per run into panels of [`NR`] pixels x four `k`. The shift and `x_zero` are folded into
//!   each output channel's bias: `sum (x - x_zero) w = sum (x - OFFSET) w + (OFFSET - x_zero)
//!   sum w`, exactly.
//! - The [`MR`] x [`NR`] tile: per group of four `k`, four loads of activations, one of
//!   weights, 16 `sdot` by element into 16 accumulators. Without the instruction (other
//!   architectures; the tests) the same tile runs as portable code.
//! - x86-64 with AVX512-VNNI ([`Isa::Avx2Vnni`]): the same panels, the tile on `vpdpbusd`,
//!   which multiplies unsigned by signed bytes: each activation byte
//!   gets its top bit flipped (`x - OFFSET + 128` as u8), and the extra `128 * sum w` comes
//!   off with the shift (`row_sums`). The 16 pixels of a panel group are two registers, each
//!   output channel's four weights one broadcast: 8 `vpdpbusd` per four k, into 8
//!   accumulators. The exact sums, with no 16-bit saturation (unlike `vpmaddubsw`). Pairs
//!   of panels run on 512-bit registers (one register per panel and group of four k: twice
//!   the products per instruction); a last odd panel on 256-bit ones.
//! - Requantization is [`super::requant`]'s, and [`super::qgemm::conv`] decides when this
//!   tile runs ([`tile_for`]) and shares its [`parts`] with the team.

use super::im2col::{gather_row, Im2col};
use super::requant::{requant_row, Act, Requant, NR};
use crate::isa::{dotprod_available, vnni_available, Isa};
use crate::quant::QuantOut;
use crate::team::{bounds, Shared};

/// Output channels per weight panel.
pub const MR: usize = 4;
/// Packed activation bytes per block of pixel panels (a share of the L2 cache).
const BLOCK_BYTES: usize = 128 * 1024;

/// Weights for the dot tile: `[M / MR][K / 4][MR][4]` i8, zero-padded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotWeights {
    m: usize,
    k: usize,
    /// k rounded up to a multiple of 4, / 4
    k4: usize,
    data: Vec<i8>,
}

impl DotWeights {
    /// `w` ([m][k] row-major, raw 8-bit values as i32) minus its per-row zero point, or None
    /// when some centred value is outside i8.
    pub fn new(w: &[i32], m: usize, k: usize, zero: &[i32]) -> Option<DotWeights> {
        assert_eq!(w.len(), m * k);
        let k4 = k.div_ceil(4);
        let mut data = vec![0i8; m.div_ceil(MR) * k4 * MR * 4];
        for row in 0..m {
            let (panel, r) = (row / MR, row % MR);
            for kk in 0..k {
                let v = i8::try_from(w[row * k + kk] - zero[row]).ok()?;
                data[((panel * k4 + kk / 4) * MR + r) * 4 + kk % 4] = v;
            }
        }
        Some(DotWeights { m, k, k4, data })
    }

    fn panel(&self, p: usize) -> &[i8] {
        &self.data[p * self.k4 * MR * 4..(p + 1) * self.k4 * MR * 4]
    }
}

/// Per-run scratch for the packed activations.
#[derive(Debug, Default)]
pub struct Scratch {
    x: Vec<i8>,
    /// Four im2col rows (a group of k), gathered before they are interleaved into the panels.
    rows: Vec<i16>,
}

impl Scratch {
    /// The activations [`pack`] packed.
    pub fn packed(&self) -> &[i8] {
        &self.x
    }
}

/// `v - OFFSET` as i8: in range for the activation type's values (and its zero point).
#[inline(always)]
fn shifted<T: Copy + Into<i16>>(v: T, offset: i16) -> i8 {
    (v.into() - offset) as i8
}

/// One panel's group of four k rows for its `np` pixels: `dst[4 p + j] = rows[j][p]` shifted,
/// zero for a missing row (past k: it meets zero weights) and for the pixels past `np`.
#[inline(always)]
fn interleave4<T: Copy + Into<i16>>(
    rows: [Option<&[T]>; 4],
    np: usize,
    offset: i16,
    dst: &mut [i8],
) {
    let dst: &mut [i8; NR * 4] = dst.try_into().expect("a panel group");
    if np == NR {
        if let [Some(a), Some(b), Some(c), Some(d)] = rows {
            let (a, b, c, d): (&[T; NR], &[T; NR], &[T; NR], &[T; NR]) = (
                a.try_into().expect("NR values"),
                b.try_into().expect("NR values"),
                c.try_into().expect("NR values"),
                d.try_into().expect("NR values"),
            );
            for p in 0..NR {
                dst[4 * p] = shifted(a[p], offset);
                dst[4 * p + 1] = shifted(b[p], offset);
                dst[4 * p + 2] = shifted(c[p], offset);
                dst[4 * p + 3] = shifted(d[p], offset);
            }
            return;
        }
    }
    dst.fill(0);
    for (j, row) in rows.iter().enumerate() {
        if let Some(row) = row {
            for (p, &v) in row.iter().enumerate().take(np) {
                dst[4 * p + j] = shifted(v, offset);
            }
        }
    }
}

/// Packs `x` (one image: [C][H][W] 8-bit values) into `[P / NR][K / 4][NR][4]` i8 panels of
/// the im2col matrix, shifted by `I::OFFSET`; outside the image, the value is `x_zero`.
#[inline(always)]
fn pack_x<I: Act>(g: &Im2col, x: &[I], x_zero: i16, k4: usize, s: &mut Scratch) {
    let p_total = g.pixels();
    let panels = p_total.div_ceil(NR);
    s.x.resize(panels * k4 * NR * 4, 0);
    let k_total = g.k();
    if g.is_identity() {
        let plane = g.h * g.w;
        for (pp, panel) in s.x.chunks_exact_mut(k4 * NR * 4).enumerate() {
            let p0 = pp * NR;
            let np = NR.min(p_total - p0);
            for (kg, dst) in panel.chunks_exact_mut(NR * 4).enumerate() {
                let row = |j: usize| {
                    let k = 4 * kg + j;
                    (k < k_total).then(|| &x[k * plane + p0..k * plane + p0 + np])
                };
                interleave4([row(0), row(1), row(2), row(3)], np, I::OFFSET, dst);
            }
        }
        return;
    }
    s.rows.resize(4 * p_total, 0);
    for kg in 0..k4 {
        for (j, row) in s.rows.chunks_exact_mut(p_total).enumerate() {
            if 4 * kg + j < k_total {
                gather_row(g, x, x_zero, 4 * kg + j, row);
            }
        }
        let rows = &s.rows;
        for pp in 0..panels {
            let (p0, np) = (pp * NR, NR.min(p_total - pp * NR));
            let row = |j: usize| {
                (4 * kg + j < k_total).then(|| &rows[j * p_total + p0..j * p_total + p0 + np])
            };
            let dst = &mut s.x[(pp * k4 + kg) * NR * 4..(pp * k4 + kg + 1) * NR * 4];
            interleave4([row(0), row(1), row(2), row(3)], np, I::OFFSET, dst);
        }
    }
}

/// Which tile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    /// Portable code (other CPUs; the tests).
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "constructed by the tests, which check the others against it"
        )
    )]
    Portable,
    /// aarch64 `sdot`: only where [`dotprod_available`].
    Sdot,
    /// x86-64 `vpdpbusd`: only where [`vnni_available`].
    Vnni,
}

impl Tile {
    /// Whether this CPU can run the tile.
    pub fn supported(self) -> bool {
        match self {
            Tile::Portable => true,
            Tile::Sdot => dotprod_available(),
            Tile::Vnni => vnni_available(),
        }
    }

    /// The tiles this CPU can run (for tests).
    #[cfg(test)]
    pub fn available() -> Vec<Tile> {
        [Tile::Portable, Tile::Sdot, Tile::Vnni]
            .into_iter()
            .filter(|t| t.supported())
            .collect()
    }
}

/// The dot-product tile the quantized convolutions run on under `isa`, if any: `sdot` under
/// [`Isa::NeonDot`], `vpdpbusd` under [`Isa::Avx2Vnni`].
pub fn tile_for(isa: Isa) -> Option<Tile> {
    match isa {
        Isa::NeonDot => Some(Tile::Sdot),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Vnni => Some(Tile::Vnni),
        _ => None,
    }
}

/// One image: `out[m][p] = requant(sum_k w[m][k] * (x[k][p] - x_zero))`, as
/// [`super::qgemm::conv`] computes it. `row_sums[m]` is `sum_k (w - w_zero)`; `requant[m]`'s
/// bias already holds `-x_zero * row_sums[m]`. `tile`: one the CPU has. [`pack`], then each of
/// the [`parts`] in turn (for the tests: [`super::qgemm::conv`] calls those itself, sharing
/// the parts with the team).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn conv<I: Act, O: QuantOut>(
    tile: Tile,
    w: &DotWeights,
    row_sums: &[i32],
    g: &Im2col,
    x: &[I],
    x_zero: i16,
    requant: &[Requant],
    scratch: &mut Scratch,
    out: &mut [O],
) {
    pack(tile, w, g, x, x_zero, scratch);
    let out = Shared::new(out);
    for i in 0..parts(w, g) {
        // SAFETY: the parts write disjoint ranges of `out`.
        unsafe { part::<I, O>(tile, w, row_sums, g, &scratch.x, requant, &out, i) };
    }
}

/// Packs the activations for [`part`]: `scratch.x` is what the parts read.
#[inline(always)]
pub fn pack<I: Act>(
    tile: Tile,
    w: &DotWeights,
    g: &Im2col,
    x: &[I],
    x_zero: i16,
    scratch: &mut Scratch,
) {
    assert_eq!(w.k, g.k());
    assert!(
        tile.supported(),
        "{tile:?} tile requested on a CPU without it"
    );
    pack_x(g, x, x_zero, w.k4, scratch);
}

/// Parts of the work to aim for: enough for two or three threads to share evenly.
const PARTS: usize = 8;

/// How the tiles are split: blocks of pixel panels (the packed activations of one block stay in
/// the cache), each cut into groups of weight panels. Returns (panels, block, groups).
#[inline(always)]
fn split(w: &DotWeights, g: &Im2col) -> (usize, usize, usize) {
    let panels = g.pixels().div_ceil(NR);
    let block = (BLOCK_BYTES / (w.k4.max(1) * NR * 4)).clamp(1, panels.max(1));
    let groups = PARTS
        .div_ceil(panels.div_ceil(block).max(1))
        .clamp(1, w.m.div_ceil(MR).max(1));
    (panels, block, groups)
}

/// How many independent parts the tiles make ([`part`]); each writes its own output values.
pub fn parts(w: &DotWeights, g: &Im2col) -> usize {
    let (panels, block, groups) = split(w, g);
    panels.div_ceil(block) * groups
}

/// Part `i` of the tiles: one block of pixel panels times one group of weight panels, read from
/// the packed activations `px` ([`pack`]), requantized into `out` ([M][pixels]).
///
/// # Safety
/// No other part with the same `i` runs at the same time (parts write disjoint values).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn part<I: Act, O: QuantOut>(
    tile: Tile,
    w: &DotWeights,
    row_sums: &[i32],
    g: &Im2col,
    px: &[i8],
    requant: &[Requant],
    out: &Shared<'_, O>,
    i: usize,
) {
    let p_total = g.pixels();
    assert!(out.len() >= w.m * p_total && requant.len() >= w.m && row_sums.len() >= w.m);
    assert!(
        tile.supported(),
        "{tile:?} tile requested on a CPU without it"
    );
    let (panels, block, groups) = split(w, g);
    let panel_len = w.k4 * NR * 4;
    assert!(px.len() >= panels * panel_len);
    // What the tile adds to each sum beyond `sum (x - OFFSET) w`: `vpdpbusd` reads the
    // activations as `x - OFFSET + 128`.
    let tile_offset = if tile == Tile::Vnni { 128 } else { 0 };
    let mut acc = [[[0i32; NR]; MR]; 2];
    // Two pixel panels per tile where `vpdpbusd` runs on 512-bit registers.
    let step = if tile == Tile::Vnni { 2 } else { 1 };
    let pb = i / groups * block;
    let pe = (pb + block).min(panels);
    let (m0, m1) = bounds(w.m.div_ceil(MR), groups, i % groups);
    for mp in m0..m1 {
        let wpanel = w.panel(mp);
        for pp in (pb..pe).step_by(step) {
            let span = step.min(pe - pp);
            let xpanels = &px[pp * panel_len..(pp + span) * panel_len];
            match (tile, span) {
                // SAFETY: the CPU has the dot-product instructions (`tile.supported()`,
                // asserted above).
                #[cfg(target_arch = "aarch64")]
                (Tile::Sdot, _) => unsafe { tile_sdot(w.k4, wpanel, xpanels, &mut acc[0]) },
                // SAFETY: the CPU has AVX-512F and AVX512-VNNI (`tile.supported()`, asserted
                // above); `xpanels` holds the two panels.
                #[cfg(target_arch = "x86_64")]
                (Tile::Vnni, 2) => unsafe { tile_vnni512(w.k4, wpanel, xpanels, &mut acc) },
                // SAFETY: the CPU has AVX2, AVX512-VL and AVX512-VNNI (`tile.supported()`,
                // asserted above).
                #[cfg(target_arch = "x86_64")]
                (Tile::Vnni, _) => unsafe { tile_vnni(w.k4, wpanel, xpanels, &mut acc[0]) },
                _ => tile_portable(w.k4, wpanel, xpanels, &mut acc[0]),
            }
            for (h, panel_acc) in acc.iter().enumerate().take(span) {
                let (p0, np) = ((pp + h) * NR, NR.min(p_total - (pp + h) * NR));
                for (r, row) in panel_acc.iter().enumerate() {
                    let m = mp * MR + r;
                    if m >= w.m {
                        break;
                    }
                    // The shift by OFFSET, put back, and the tile's own taken off:
                    // |(OFFSET - 128) * row_sum| <= 256 * 128 * k.
                    let extra = (I::OFFSET as i32 - tile_offset).wrapping_mul(row_sums[m]);
                    // SAFETY: this part's own values (the caller's contract).
                    let dst = unsafe { out.range(m * p_total + p0, m * p_total + p0 + np) };
                    requant_row(row, &requant[m], extra, dst);
                }
            }
        }
    }
}

/// The tile in portable code: `acc[r][p] = sum over k groups of sum_j w[r][j] * x[p][j]`.
fn tile_portable(k4: usize, w: &[i8], x: &[i8], acc: &mut [[i32; NR]; MR]) {
    *acc = [[0; NR]; MR];
    for g in 0..k4 {
        let xs: &[i8; NR * 4] = x[g * NR * 4..(g + 1) * NR * 4]
            .try_into()
            .expect("panel size");
        let ws: &[i8; MR * 4] = w[g * MR * 4..(g + 1) * MR * 4]
            .try_into()
            .expect("panel size");
        for (r, row) in acc.iter_mut().enumerate() {
            for (p, a) in row.iter_mut().enumerate() {
                let dot: i32 = (0..4)
                    .map(|j| ws[4 * r + j] as i32 * xs[4 * p + j] as i32)
                    .sum();
                *a = a.wrapping_add(dot);
            }
        }
    }
}

/// `acc += dot(x's four bytes per lane, w's four bytes of group L)` per 32-bit lane: one
/// `sdot` by element. (Inline assembly: the dot-product intrinsics are not stable in Rust
/// 1.95.)
#[cfg(target_arch = "aarch64")]
macro_rules! sdot {
    ($acc:expr, $x:expr, $w:expr, $lane:literal) => {
        std::arch::asm!(
            concat!("sdot {a:v}.4s, {x:v}.16b, {w:v}.4b[", $lane, "]"),
            a = inout(vreg) $acc,
            x = in(vreg) $x,
            w = in(vreg) $w,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
}

/// The tile with `sdot`: per group of four k, the panel's 16 pixels in four registers, its
/// four rows' weights in one, and 16 `sdot` by element into 16 accumulators (row r: pixels
/// 4q..4q + 4 in accumulator q).
///
/// # Safety
/// The CPU has the dot-product instructions.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile_sdot(k4: usize, w: &[i8], x: &[i8], acc: &mut [[i32; NR]; MR]) {
    use std::arch::aarch64::*;
    assert!(w.len() >= k4 * MR * 4 && x.len() >= k4 * NR * 4);
    // SAFETY: g < k4 and the panels hold k4 * NR * 4 (x) and k4 * MR * 4 (w) values; the
    // instruction is there as the function's contract says.
    unsafe {
        let mut a = [[vdupq_n_s32(0); 4]; MR];
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        for g in 0..k4 {
            let xg = xp.add(g * NR * 4);
            let xv = [
                vld1q_s8(xg),
                vld1q_s8(xg.add(16)),
                vld1q_s8(xg.add(32)),
                vld1q_s8(xg.add(48)),
            ];
            let wv = vld1q_s8(wp.add(g * MR * 4));
            for q in 0..4 {
                sdot!(a[0][q], xv[q], wv, "0");
                sdot!(a[1][q], xv[q], wv, "1");
                sdot!(a[2][q], xv[q], wv, "2");
                sdot!(a[3][q], xv[q], wv, "3");
            }
        }
        for (ar, dst) in a.iter().zip(acc.iter_mut()) {
            for (q, v) in ar.iter().enumerate() {
                vst1q_s32(dst.as_mut_ptr().add(4 * q), *v);
            }
        }
    }
}

/// The tile with 256-bit `vpdpbusd`: per group of four k, the panel's 16 pixels in two
/// registers (top bits flipped: unsigned), each row's four weights broadcast, 8 `vpdpbusd`
/// into 8 accumulators (row r: pixels 8h..8h + 8 in accumulator h). The sums come out
/// `128 * sum w` above the signed ones.
///
/// # Safety
/// The CPU has AVX2, AVX512-VL and AVX512-VNNI ([`vnni_available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
unsafe fn tile_vnni(k4: usize, w: &[i8], x: &[i8], acc: &mut [[i32; NR]; MR]) {
    use std::arch::x86_64::*;
    const { assert!(NR == 16 && MR == 4) };
    assert!(w.len() >= k4 * MR * 4 && x.len() >= k4 * NR * 4);
    let flip = _mm256_set1_epi8(i8::MIN);
    let mut a = [[_mm256_setzero_si256(); 2]; MR];
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    // SAFETY: g < k4 and the panels hold k4 * NR * 4 (x) and k4 * MR * 4 (w) values; the
    // instructions are there as the function's contract says.
    unsafe {
        for g in 0..k4 {
            let xg = xp.add(g * NR * 4);
            let x0 = _mm256_xor_si256(_mm256_loadu_si256(xg.cast()), flip);
            let x1 = _mm256_xor_si256(_mm256_loadu_si256(xg.add(32).cast()), flip);
            let wg = wp.add(g * MR * 4);
            for (r, ar) in a.iter_mut().enumerate() {
                let wv = _mm256_set1_epi32(wg.add(4 * r).cast::<i32>().read_unaligned());
                ar[0] = _mm256_dpbusd_epi32(ar[0], x0, wv);
                ar[1] = _mm256_dpbusd_epi32(ar[1], x1, wv);
            }
        }
        for (ar, dst) in a.iter().zip(acc.iter_mut()) {
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), ar[0]);
            _mm256_storeu_si256(dst.as_mut_ptr().add(8).cast(), ar[1]);
        }
    }
}

/// [`tile_vnni`] on two consecutive pixel panels, one 512-bit register per panel and group of
/// four k: per group, two loads, four broadcasts and 8 `vpdpbusd` on 512-bit registers into 8
/// accumulators (row r of panel h in accumulator [r][h]), twice the products per instruction.
///
/// # Safety
/// The CPU has AVX-512F and AVX512-VNNI ([`vnni_available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tile_vnni512(k4: usize, w: &[i8], x: &[i8], acc: &mut [[[i32; NR]; MR]; 2]) {
    use std::arch::x86_64::*;
    const { assert!(NR == 16 && MR == 4) };
    let panel = k4 * NR * 4;
    assert!(w.len() >= k4 * MR * 4 && x.len() >= 2 * panel);
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut a = [[_mm512_setzero_si512(); 2]; MR];
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    // SAFETY: g < k4 and the two panels hold 2 * k4 * NR * 4 (x) and k4 * MR * 4 (w) values;
    // the instructions are there as the function's contract says.
    unsafe {
        for g in 0..k4 {
            let xg = xp.add(g * NR * 4);
            let x0 = _mm512_xor_si512(_mm512_loadu_si512(xg.cast()), flip);
            let x1 = _mm512_xor_si512(_mm512_loadu_si512(xg.add(panel).cast()), flip);
            let wg = wp.add(g * MR * 4);
            for (r, ar) in a.iter_mut().enumerate() {
                let wv = _mm512_set1_epi32(wg.add(4 * r).cast::<i32>().read_unaligned());
                ar[0] = _mm512_dpbusd_epi32(ar[0], x0, wv);
                ar[1] = _mm512_dpbusd_epi32(ar[1], x1, wv);
            }
        }
        for (r, ar) in a.iter().enumerate() {
            for (h, &v) in ar.iter().enumerate() {
                _mm512_storeu_si512(acc[h][r].as_mut_ptr().cast(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::im2col::tests::reference;

    /// Raw accumulators as the "quantized" output, so sums can be checked exactly.
    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    struct Raw(f32);
    impl QuantOut for Raw {
        const MIN: f32 = f32::MIN;
        const MAX: f32 = f32::MAX;
        fn from_i32(v: i32) -> Raw {
            Raw(v as f32)
        }
    }

    fn check<I: Act>(tile: Tile, x: &[I], x_zero: i16, c: usize, h: usize, w: usize) {
        for (k, s, p, m) in [(1, 1, 0, 7), (1, 1, 0, 13), (3, 2, 1, 9), (3, 1, 1, 4)] {
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
            // Centred weights over the whole of i8, both ends included.
            let wz: Vec<i32> = (0..m).map(|r| (r as i32 % 3) - 1).collect();
            let wq: Vec<i32> = (0..m * g.k())
                .map(|i| (i as i32 * 37) % 256 - 128 + wz[i / g.k()])
                .collect();
            let dw = DotWeights::new(&wq, m, g.k(), &wz).expect("centred weights fit i8");
            let sums: Vec<i32> = (0..m)
                .map(|r| (0..g.k()).map(|kk| wq[r * g.k() + kk] - wz[r]).sum())
                .collect();
            let rq: Vec<Requant> = (0..m)
                .map(|r| Requant {
                    bias: 7 - x_zero as i32 * sums[r],
                    multiplier: 1.0,
                    zero: 0,
                    lo: -1e9,
                    hi: 1e9,
                })
                .collect();
            let mut out = vec![Raw::default(); m * oh * ow];
            let mut scratch = Scratch::default();
            conv(tile, &dw, &sums, &g, x, x_zero, &rq, &mut scratch, &mut out);
            let want = reference(&g, x, x_zero, &wq, &wz, 7);
            for (i, (got, acc)) in out.iter().zip(&want).enumerate() {
                let (r, oy, ox) = (i / (oh * ow), i / ow % oh, i % ow);
                assert_eq!(
                    got.0 as i64, *acc,
                    "{tile:?} c{c} k{k} s{s} m{m}: row {r} ({oy},{ox})"
                );
            }
        }
    }

    #[test]
    fn dot_products_are_exact_for_uint8_and_int8_activations() {
        let tiles = Tile::available();
        if tiles == [Tile::Portable] {
            eprintln!("no dot-product instructions on this CPU: the portable dot tile only");
        }
        for tile in tiles {
            // Channel counts that leave partial groups of four k, pixel counts that leave
            // partial panels, pairs of panels and an odd one left in a block (c 700: blocks of
            // 11 panels, or 1 with a 3x3 kernel); activations over the whole 8-bit range.
            for (c, h, w) in [(5, 4, 5), (16, 7, 7), (3, 9, 11), (33, 3, 3), (700, 14, 14)] {
                let xu: Vec<u8> = (0..c * h * w).map(|i| (i * 89 % 256) as u8).collect();
                check(tile, &xu, 100, c, h, w);
                check(tile, &xu, 0, c, h, w);
                let xs: Vec<i8> = xu.iter().map(|&v| v as i8).collect();
                check(tile, &xs, -3, c, h, w);
                check(tile, &xs, 127, c, h, w);
            }
        }
    }

    #[test]
    fn weights_outside_int8_once_centred_keep_the_wide_path() {
        // uint8 weights 0 and 255 around a zero point of 128: -128 fits, 127 fits, but 255
        // - 100 = 155 does not.
        assert!(DotWeights::new(&[0, 255], 1, 2, &[128]).is_some());
        assert!(DotWeights::new(&[0, 255], 1, 2, &[100]).is_none());
        assert!(DotWeights::new(&[-128, 127], 2, 1, &[0, 0]).is_some());
        assert!(DotWeights::new(&[-128, 127], 2, 1, &[1, 0]).is_none());
    }
}
