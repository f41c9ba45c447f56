//! Pillow-exact antialiased bilinear and bicubic resampling of packed RGB, written by hand.
//!
//! Most classifiers are trained and validated on images resized by Pillow
//! (`Image.resize(size, Image.BILINEAR)`, also behind torchvision's `Resize` on PIL images). A
//! resize that is off by one grey level on a sixth of the pixels (what fast_image_resize's
//! convolution gives) moves the logits of a small CNN by up to 0.07, so lookout reproduces
//! Pillow's `ImagingResample` exactly: the same coefficient computation (in f64, normalised,
//! then 22-bit fixed point), the same rounding, the same passes in Pillow 13's order (horizontal
//! first, over only the rows the vertical pass needs, unless the height shrinks much more than
//! the width), the same crop `box` semantics. The fixed-point inner
//! loops are plain Rust that the compiler vectorises.

/// Pillow's `PRECISION_BITS` for 8-bit images.
#[cfg(test)]
mod tests;

const PRECISION_BITS: u32 = 32 - 8 - 2;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use lookout_engine::team::{self, Shared};

/// Per-output-pixel source window and fixed-point weights, as Pillow's `precompute_coeffs`.
#[derive(Debug, Clone, Default)]
pub struct Coeffs {
    /// Taps per output pixel (the stride of `weights`).
    ksize: usize,
    /// For each output pixel: first source index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `ksize` fixed-point weights per output pixel.
    weights: Vec<i32>,
}

/// Pillow's resampling filters that lookout reproduces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BILINEAR`: the triangle, support 1.
    #[default]
    Bilinear,
    /// `Image.BICUBIC`: Keys' cubic convolution with a = -0.5, support 2 (timm's default).
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// The filter's weight at `x`, as Pillow's `bilinear_filter` and `bicubic_filter`.
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear if x < 1.0 => 1.0 - x,
            Filter::Bilinear => 0.0,
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

impl Coeffs {
    /// Coefficients mapping source range `in0..in1` (of `in_size` pixels) onto `out_size`
    /// pixels with Pillow's bilinear filter.
    pub fn new(in_size: usize, in0: f64, in1: f64, out_size: usize) -> Coeffs {
        Coeffs::with_filter(Filter::Bilinear, in_size, in0, in1, out_size)
    }

    /// The same with `filter`.
    pub fn with_filter(
        filter: Filter,
        in_size: usize,
        in0: f64,
        in1: f64,
        out_size: usize,
    ) -> Coeffs {
        let scale = (in1 - in0) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = in0 + (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C casts truncate toward zero; Pillow then clamps.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64)
                .min(in_size as i64)
                .max(xmin as i64) as usize
                - xmin;
            let xmax = xmax.min(ksize);
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for x in 0..xmax {
                let v = if ww != 0.0 { k[x] / ww } else { k[x] };
                let fixed = v * (1u32 << PRECISION_BITS) as f64;
                row[x] = if v < 0.0 {
                    (-0.5 + fixed) as i32
                } else {
                    (0.5 + fixed) as i32
                };
            }
            bounds.push((xmin, xmax));
        }
        Coeffs {
            ksize,
            bounds,
            weights,
        }
    }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// What a resize keeps from one frame to the next: the intermediate rows and the coefficients
/// (recomputed only when the geometry changes).
#[derive(Debug, Default)]
pub struct Scratch {
    filter: Filter,
    rows: Vec<u8>,
    plan: Option<Plan>,
}

impl Scratch {
    /// A scratch whose resizes use `filter` (the default is bilinear).
    pub fn with_filter(filter: Filter) -> Scratch {
        Scratch {
            filter,
            ..Scratch::default()
        }
    }
}

#[derive(Debug)]
struct Plan {
    key: (usize, usize, [u64; 4], usize, usize),
    horiz: Coeffs,
    vert: Coeffs,
    pairs: Pairs,
}

impl Plan {
    /// The source rows the vertical pass reads (the horizontal pass's rows).
    fn rows(&self) -> (usize, usize) {
        let first = self.vert.bounds.first().map_or(0, |b| b.0);
        let last = self.vert.bounds.last().map_or(0, |b| b.0 + b.1);
        (first, last.max(first))
    }
}

impl Plan {
    /// The plan of a resize from `slot`, computed anew when the geometry differs from the last
    /// one's.
    fn cached(
        slot: &mut Option<Plan>,
        filter: Filter,
        sw: usize,
        sh: usize,
        rect: Rect,
        dw: usize,
        dh: usize,
    ) -> &Plan {
        let (x0, y0, x1, y1) = rect;
        let key = (sw, sh, [x0, y0, x1, y1].map(f64::to_bits), dw, dh);
        if slot.as_ref().is_some_and(|p| p.key != key) {
            *slot = None;
        }
        slot.get_or_insert_with(|| {
            let horiz = Coeffs::with_filter(filter, sw, x0, x1, dw);
            let pairs = Pairs::new(&horiz, sw);
            Plan {
                key,
                horiz,
                vert: Coeffs::with_filter(filter, sh, y0, y1, dh),
                pairs,
            }
        })
    }
}

/// A source box: left, top, right, bottom, in source pixels.
type Rect = (f64, f64, f64, f64);

/// The horizontal coefficients laid out for the AVX2 pass, two output pixels at a time: each
/// pixel's taps shifted to start at `starts[x]` (at most `in_size - ksize`, so every tap of
/// every pixel is inside the row; the shifted-in taps weigh 0), and per pair and tap eight
/// weights, four lanes (R, G, B, unused) for each pixel.
#[derive(Debug, Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the AVX2 pass only
struct Pairs {
    starts: Vec<usize>,
    weights: Vec<i32>,
}

impl Pairs {
    fn new(c: &Coeffs, in_size: usize) -> Pairs {
        let k = c.ksize;
        if in_size < k {
            return Pairs::default();
        }
        let n = c.bounds.len();
        let mut starts = Vec::with_capacity(n);
        let mut shifted = vec![0i32; n * k];
        for (x, &(xmin, taps)) in c.bounds.iter().enumerate() {
            let start = xmin.min(in_size - k);
            let shift = xmin - start;
            for j in 0..taps {
                shifted[x * k + shift + j] = c.weights[x * k + j];
            }
            starts.push(start);
        }
        let mut weights = Vec::with_capacity(n / 2 * k * 8);
        for p in 0..n / 2 {
            for j in 0..k {
                weights.extend([shifted[2 * p * k + j]; 4]);
                weights.extend([shifted[(2 * p + 1) * k + j]; 4]);
            }
        }
        Pairs { starts, weights }
    }
}

/// Resizes `src` (`sw` x `sh` RGB) into `dst` (`dw` x `dh` RGB), reading the source box
/// `(left, top, right, bottom)` in source pixels (fractional, as Pillow's `box`).
/// `whole` is the output size of the Pillow `resize` call this reproduces, which decides the
/// order of the passes ([`horizontal_first`]): `(dw, dh)` for a resize with a `box`, the whole
/// frame's scaled size when the box stands for a resize followed by a crop (the same pixels).
/// `scratch` is reused between calls.
#[allow(clippy::too_many_arguments)]
pub fn resize_rgb(
    src: &[u8],
    sw: usize,
    sh: usize,
    rect: Rect,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    whole: (usize, usize),
    scratch: &mut Scratch,
) {
    let (x0, y0, x1, y1) = rect;
    let need_h = dw != sw || x0 != 0.0 || x1 != sw as f64;
    let need_v = dh != sh || y0 != 0.0 || y1 != sh as f64;
    if !need_h && !need_v {
        dst[..dw * dh * 3].copy_from_slice(&src[..dw * dh * 3]);
        return;
    }
    let plan = Plan::cached(&mut scratch.plan, scratch.filter, sw, sh, rect, dw, dh);
    if !need_v {
        horizontal(src, sw, 0, &plan.horiz, &plan.pairs, dst, dw, dh);
        return;
    }
    if !need_h {
        vertical(src, sw, &plan.vert, 0, dst, dh);
        return;
    }
    if !horizontal_first(sw, sh, whole.0, whole.1) {
        // Vertical pass over every source column, then the horizontal one.
        let tmp = &mut scratch.rows;
        tmp.resize(sw * dh * 3, 0);
        vertical(src, sw, &plan.vert, 0, tmp, dh);
        horizontal(tmp, sw, 0, &plan.horiz, &plan.pairs, dst, dw, dh);
        return;
    }
    // Horizontal pass over only the rows the vertical pass reads.
    let (first, last) = plan.rows();
    let rows = last - first;
    let tmp = &mut scratch.rows;
    // Every byte is written by the pass: no clearing when the size stays.
    tmp.resize(dw * rows * 3, 0);
    horizontal(src, sw, first, &plan.horiz, &plan.pairs, tmp, dw, rows);
    vertical(tmp, dw, &plan.vert, first, dst, dh);
}

/// Whether Pillow runs the horizontal pass of an `sw` x `sh` -> `dw` x `dh` resize first: it
/// does unless the height shrinks, and by more than twice as many pixels as the width does
/// (Pillow 13's `ImagingResampleInner`, which compares the whole image's size with the
/// output's, whatever the box; Pillow 12 always ran it first). The order changes the
/// intermediate rounding, so it must be Pillow's to be exact.
fn horizontal_first(sw: usize, sh: usize, dw: usize, dh: usize) -> bool {
    let (dy, dx) = (sh as i64 - dh as i64, sw as i64 - dw as i64);
    !(dy > 0 && dy > dx * 2)
}

/// Source rows the horizontal pass takes at a time from a source still being written.
const CHUNK_ROWS: usize = 16;

/// The rows of an image, written top to bottom by the thread that decodes it while another may
/// read those already written (see [`resize_rgb_filled`]).
pub struct RowWriter<'a> {
    buf: &'a Shared<'a, u8>,
    stride: usize,
    rows: usize,
    /// Rows written and published so far.
    ready: &'a AtomicUsize,
}

impl RowWriter<'_> {
    /// Rows not written yet.
    pub fn left(&self) -> usize {
        self.rows - self.ready.load(Relaxed)
    }

    /// Has `write` fill the next `n` rows (at most [`Self::left`]; `stride` bytes each), then
    /// makes them readable by other threads.
    pub fn write<E>(
        &mut self,
        n: usize,
        write: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.ready.load(Relaxed);
        let end = (start + n).min(self.rows);
        // SAFETY: readers only read rows below `ready`; this thread is the only writer.
        write(unsafe { self.buf.range(start * self.stride, end * self.stride) })?;
        self.ready.store(end, Release);
        Ok(())
    }
}

/// Has `fill` write all `rows` rows of `buf` (`stride` bytes each) on this thread.
pub fn fill_all<E>(
    buf: &mut [u8],
    stride: usize,
    rows: usize,
    fill: impl FnOnce(&mut RowWriter<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let buf = Shared::new(&mut buf[..stride * rows]);
    let ready = AtomicUsize::new(0);
    fill(&mut RowWriter {
        buf: &buf,
        stride,
        rows,
        ready: &ready,
    })
}

/// Sets its flag when dropped (on unwinding too).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Release);
    }
}

/// [`resize_rgb`] of a source that `fill` writes, top to bottom, as it decodes it: with an idle
/// worker helping ([`team::beside`]), the horizontal pass runs on the rows already written
/// while `fill` writes the next ones, hiding most of the resize behind the decode; without one,
/// it runs after `fill`. The same bytes either way. Returns `fill`'s error, after which `dst`
/// holds a resize of whatever `src` held.
#[allow(clippy::too_many_arguments)]
pub fn resize_rgb_filled<E>(
    src: &mut [u8],
    sw: usize,
    sh: usize,
    rect: Rect,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    whole: (usize, usize),
    scratch: &mut Scratch,
    fill: impl FnOnce(&mut RowWriter<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let (x0, y0, x1, y1) = rect;
    // The horizontal pass overlaps the decode only when it comes first.
    let two_passes = (dw != sw || x0 != 0.0 || x1 != sw as f64)
        && (dh != sh || y0 != 0.0 || y1 != sh as f64)
        && horizontal_first(sw, sh, whole.0, whole.1);
    let stride = sw * 3;
    if !two_passes {
        fill_all(src, stride, sh, fill)?;
        resize_rgb(src, sw, sh, rect, dst, dw, dh, whole, scratch);
        return Ok(());
    }
    let Scratch {
        filter,
        rows: tmp,
        plan,
    } = scratch;
    let plan = Plan::cached(plan, *filter, sw, sh, rect, dw, dh);
    let (first, last) = plan.rows();
    // Every byte is written by the pass: no clearing when the size stays.
    tmp.resize(dw * (last - first) * 3, 0);
    let (ready, ended) = (AtomicUsize::new(0), AtomicBool::new(false));
    let src = Shared::new(&mut src[..stride * sh]);
    let out = Shared::new(tmp.as_mut_slice());
    let horizontal_pass = || {
        let mut y = first;
        while y < last {
            let end = (y + CHUNK_ROWS).min(last);
            // Once `fill` has returned (or unwound) no row is written any more: the rows are
            // read as they are.
            while ready.load(Acquire) < end && !ended.load(Acquire) {
                std::hint::spin_loop();
            }
            // SAFETY: rows below `end` are written (or `fill` is done) and never written again;
            // `out`'s rows of this chunk are this thread's alone.
            let (rows, out) = unsafe {
                (
                    std::slice::from_raw_parts(src.as_ptr().cast_const(), end * stride),
                    out.range((y - first) * dw * 3, (end - first) * dw * 3),
                )
            };
            horizontal(rows, sw, y, &plan.horiz, &plan.pairs, out, dw, end - y);
            y = end;
        }
    };
    let decode = || {
        let _ended = SetOnDrop(&ended);
        fill(&mut RowWriter {
            buf: &src,
            stride,
            rows: sh,
            ready: &ready,
        })
    };
    let filled = team::beside(decode, horizontal_pass);
    vertical(tmp, dw, &plan.vert, first, dst, dh);
    filled
}

/// Compiles `$plain` once more with AVX2 enabled (the integer loops vectorise to 8 lanes with
/// `vpmulld`, which SSE2 lacks) and picks that copy at run time when the CPU has AVX2. Same
/// source, same integer arithmetic: the results are identical.
macro_rules! with_avx2 {
    ($name:ident, $plain:ident, $avx2:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2($($arg: $ty),*) {
            $plain($($arg),*)
        }

        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { $avx2($($arg),*) };
            }
            $plain($($arg),*)
        }
    };
}

// After the macro, which it uses.
pub mod nearest;
pub mod opencv;

with_avx2!(vertical, vertical_plain, vertical_avx2, (src: &[u8], w: usize, c: &Coeffs, row0: usize, out: &mut [u8], oh: usize));

/// The horizontal pass over `rows` source rows from `row0`: AVX2 where the CPU has it.
#[allow(clippy::too_many_arguments)]
fn horizontal(
    src: &[u8],
    sw: usize,
    row0: usize,
    c: &Coeffs,
    pairs: &Pairs,
    out: &mut [u8],
    ow: usize,
    rows: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if !pairs.starts.is_empty() && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { horizontal_avx2(src, sw, row0, c, pairs, out, ow, rows) };
        return;
    }
    let _ = pairs;
    horizontal_plain(src, sw, row0, c, out, ow, rows);
}

/// Two output pixels per 256-bit register (R, G, B and an unused lane each), every tap a
/// 32-bit multiply-add as in [`horizontal_plain`]: the same sums, so the same bytes. Pixels
/// whose 4-byte loads or stores would leave the buffers, and an odd last pixel, go through the
/// plain code.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn horizontal_avx2(
    src: &[u8],
    sw: usize,
    row0: usize,
    c: &Coeffs,
    pairs: &Pairs,
    out: &mut [u8],
    ow: usize,
    rows: usize,
) {
    use std::arch::x86_64::*;
    let k = c.ksize;
    let half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    let np = ow / 2;
    assert!(pairs.starts.len() == ow && pairs.weights.len() >= np * k * 8);
    let end = ow * rows * 3;
    assert!(out.len() >= end && src.len() >= (row0 + rows) * sw * 3);
    for y in 0..rows {
        let line = (y + row0) * sw * 3;
        let out_line = y * ow * 3;
        for p in 0..np {
            let (s0, s1) = (pairs.starts[2 * p], pairs.starts[2 * p + 1]);
            let o = out_line + 2 * p * 3;
            let a_end = line + (s0 + k - 1) * 3 + 4;
            let b_end = line + (s1 + k - 1) * 3 + 4;
            if a_end > src.len() || b_end > src.len() || o + 7 > end {
                plain_pixel(&src[line..line + sw * 3], c, 2 * p, &mut out[o..o + 3]);
                plain_pixel(
                    &src[line..line + sw * 3],
                    c,
                    2 * p + 1,
                    &mut out[o + 3..o + 6],
                );
                continue;
            }
            let w = pairs.weights.as_ptr().add(p * k * 8);
            let (pa, pb) = (
                src.as_ptr().add(line + s0 * 3),
                src.as_ptr().add(line + s1 * 3),
            );
            let mut acc = half;
            for j in 0..k {
                // SAFETY: the last tap's 4 bytes end at a_end / b_end, inside `src` (checked).
                let a = _mm_cvtsi32_si128((pa.add(j * 3) as *const i32).read_unaligned());
                let b = _mm_cvtsi32_si128((pb.add(j * 3) as *const i32).read_unaligned());
                let v = _mm256_cvtepu8_epi32(_mm_unpacklo_epi32(a, b));
                let wv = _mm256_loadu_si256(w.add(j * 8) as *const __m256i);
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(v, wv));
            }
            // >> PRECISION_BITS, then saturate to 0..=255 as clip8.
            let v = _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(acc);
            let v16 = _mm256_packus_epi32(v, v);
            let v8 = _mm256_packus_epi16(v16, v16);
            let a = _mm_cvtsi128_si32(_mm256_castsi256_si128(v8));
            let b = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(v8));
            // SAFETY: o + 7 <= end <= out.len() (checked); pixel b's fourth byte is the next pixel's
            // first, written after this one.
            let op = out.as_mut_ptr().add(o);
            (op as *mut i32).write_unaligned(a);
            (op.add(3) as *mut i32).write_unaligned(b);
        }
        if ow % 2 == 1 {
            let o = out_line + (ow - 1) * 3;
            plain_pixel(&src[line..line + sw * 3], c, ow - 1, &mut out[o..o + 3]);
        }
    }
}

/// One output pixel of the horizontal pass, as [`horizontal_plain`] computes it.
#[inline(always)]
fn plain_pixel(line: &[u8], c: &Coeffs, xx: usize, px: &mut [u8]) {
    let half = 1i32 << (PRECISION_BITS - 1);
    let (xmin, n) = c.bounds[xx];
    let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
    let taps = &line[xmin * 3..(xmin + n) * 3];
    let (mut s0, mut s1, mut s2) = (half, half, half);
    for (w, p) in k.iter().zip(taps.chunks_exact(3)) {
        s0 += p[0] as i32 * w;
        s1 += p[1] as i32 * w;
        s2 += p[2] as i32 * w;
    }
    px[0] = clip8(s0);
    px[1] = clip8(s1);
    px[2] = clip8(s2);
}

fn horizontal_plain(
    src: &[u8],
    sw: usize,
    row0: usize,
    c: &Coeffs,
    out: &mut [u8],
    ow: usize,
    rows: usize,
) {
    for y in 0..rows {
        let line = &src[(y + row0) * sw * 3..(y + row0 + 1) * sw * 3];
        let out_line = &mut out[y * ow * 3..(y + 1) * ow * 3];
        for (xx, px) in out_line.chunks_exact_mut(3).enumerate() {
            plain_pixel(line, c, xx, px);
        }
    }
}

#[inline(always)]
fn vertical_plain(src: &[u8], w: usize, c: &Coeffs, row0: usize, out: &mut [u8], oh: usize) {
    let half = 1i32 << (PRECISION_BITS - 1);
    let stride = w * 3;
    let mut acc = vec![0i32; stride];
    for yy in 0..oh {
        let (ymin, n) = c.bounds[yy];
        // `src` holds source rows from `row0` on.
        let ymin = ymin - row0;
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        acc.iter_mut().for_each(|a| *a = half);
        for (j, &wgt) in k.iter().enumerate() {
            let line = &src[(ymin + j) * stride..(ymin + j + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(line) {
                *a += p as i32 * wgt;
            }
        }
        for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}
