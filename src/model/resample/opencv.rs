//! OpenCV-exact resizing of packed 8-bit images (1 or 3 channels), written by hand.
//!
//! Most deployment scripts, and Ultralytics' and PaddleOCR's own preprocessing, resize with
//! `cv2.resize`, which is not Pillow's antialiased filter: `INTER_LINEAR` samples two source
//! pixels per output pixel whatever the scale, `INTER_AREA` averages whole cells. A model trained
//! on one and fed the other sees a different image, so lookout reproduces OpenCV 4's CPU code
//! path (`modules/imgproc/src/resize.cpp`: `hal::resize`, `resizeNN`, `resizeGeneric_`,
//! `resizeAreaFast_`, `resizeArea_`) operation for operation: the same float coefficient
//! computation, the same 11-bit fixed-point weights (`INTER_RESIZE_COEF_BITS`), the same
//! integer rounding of the vertical pass (the SSE2 kernel's `(b0*(S0>>4))>>16` form, which the
//! scalar code copies), the same border replication, the same switch from `INTER_LINEAR` to the
//! area average at an exact 2x reduction. No crate reproduces these bytes (fast_image_resize
//! and image implement other filters), hence the hand-written code.
//!
//! `INTER_LINEAR`, `INTER_AREA` and `INTER_NEAREST` match `cv2.resize` bit for bit.
//! `INTER_CUBIC` and `INTER_LANCZOS4` use OpenCV's fixed-point scalar formula; OpenCV's own SSE
//! kernel for the cubic vertical pass (and IPP, where OpenCV was built with it) rounds in float,
//! so those two modes are within one grey level of `cv2.resize`. The loops are plain integer
//! Rust, compiled a second time with AVX2 enabled and picked at run time (as the Pillow
//! resampler's vertical pass).

/// `cv::INTER_*`: which of OpenCV's interpolations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// `INTER_NEAREST`: source pixel `floor(x * src / dst)` (not `INTER_NEAREST_EXACT`).
    Nearest,
    /// `INTER_LINEAR`: bilinear over 2x2 source pixels, no antialiasing.
    Linear,
    /// `INTER_AREA`: the average over each output pixel's cell (bilinear-like when enlarging).
    Area,
    /// `INTER_CUBIC`: bicubic (a = -0.75) over 4x4 source pixels.
    Cubic,
    /// `INTER_LANCZOS4`: Lanczos over 8x8 source pixels.
    Lanczos4,
}

/// `INTER_RESIZE_COEF_BITS`: fixed-point weights are in units of 1/2048.
const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// Buffers reused from one resize to the next.
#[derive(Debug, Default)]
pub struct CvScratch {
    rows: Vec<i32>,
    fbuf: Vec<f32>,
    fsum: Vec<f32>,
}

/// `cvRound` of a float (round half to even, as SSE's `cvtss2si`), saturated to i16
/// (`saturate_cast<short>`).
fn round_short(v: f32) -> i32 {
    (v.round_ties_even() as i32).clamp(i16::MIN as i32, i16::MAX as i32)
}

/// `saturate_cast<uchar>(float)`.
fn sat_u8_f(v: f32) -> u8 {
    (v.round_ties_even() as i32).clamp(0, 255) as u8
}

/// `saturate_cast<uchar>(int)`.
fn sat_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Resizes `src` (`sw` x `sh`, `cn` interleaved channels) into `dst` (`dw` x `dh`), as
/// `cv2.resize(src, (dw, dh), interpolation=interp)`. `cn` is 1 or 3 (any count works; those
/// two are the ones checked against OpenCV).
#[allow(clippy::too_many_arguments)]
pub fn resize(
    src: &[u8],
    sw: usize,
    sh: usize,
    cn: usize,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    interp: Interpolation,
    scratch: &mut CvScratch,
) {
    let out = &mut dst[..dw * dh * cn];
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return;
    }
    if (sw, sh) == (dw, dh) {
        // cv::resize copies when the size stays.
        out.copy_from_slice(&src[..sw * sh * cn]);
        return;
    }
    let inv_scale_x = dw as f64 / sw as f64;
    let inv_scale_y = dh as f64 / sh as f64;
    if interp == Interpolation::Nearest {
        nearest(src, sw, sh, cn, out, dw, inv_scale_x, inv_scale_y);
        return;
    }
    let scale_x = 1.0 / inv_scale_x;
    let scale_y = 1.0 / inv_scale_y;
    // saturate_cast<int>(double) rounds.
    let iscale_x = scale_x.round_ties_even() as i64;
    let iscale_y = scale_y.round_ties_even() as i64;
    let area_fast = (scale_x - iscale_x as f64).abs() < f64::EPSILON
        && (scale_y - iscale_y as f64).abs() < f64::EPSILON;
    let mut interp = interp;
    if interp == Interpolation::Linear && area_fast && iscale_x == 2 && iscale_y == 2 {
        // OpenCV: at exactly half size INTER_AREA (fast) is used for INTER_LINEAR.
        interp = Interpolation::Area;
    }
    if interp == Interpolation::Area && scale_x >= 1.0 && scale_y >= 1.0 {
        if area_fast {
            area_fast_resize(
                src,
                sw,
                cn,
                out,
                dw,
                dh,
                iscale_x as usize,
                iscale_y as usize,
            );
        } else {
            area_resize(src, sw, sh, cn, out, dw, dh, scale_x, scale_y, scratch);
        }
        return;
    }
    generic(
        src, sw, sh, cn, out, dw, dh, interp, scale_x, scale_y, scratch,
    );
}

#[allow(clippy::too_many_arguments)]
fn nearest(
    src: &[u8],
    sw: usize,
    sh: usize,
    cn: usize,
    dst: &mut [u8],
    dw: usize,
    fx: f64,
    fy: f64,
) {
    let (ifx, ify) = (1.0 / fx, 1.0 / fy);
    let xofs: Vec<usize> = (0..dw)
        .map(|x| ((x as f64 * ifx).floor() as usize).min(sw - 1) * cn)
        .collect();
    for (y, drow) in dst.chunks_exact_mut(dw * cn).enumerate() {
        let sy = ((y as f64 * ify).floor() as usize).min(sh - 1);
        let srow = &src[sy * sw * cn..(sy + 1) * sw * cn];
        for (d, &o) in drow.chunks_exact_mut(cn).zip(&xofs) {
            d.copy_from_slice(&srow[o..o + cn]);
        }
    }
}

/// `resizeAreaFast_`: integer reduction factors, every output pixel the mean of its cell.
#[allow(clippy::too_many_arguments)]
fn area_fast_resize(
    src: &[u8],
    sw: usize,
    cn: usize,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    kx: usize,
    ky: usize,
) {
    let stride = sw * cn;
    let scale = 1.0f32 / (kx * ky) as f32;
    let halve = kx == 2 && ky == 2 && (cn == 1 || cn == 3 || cn == 4);
    for dy in 0..dh {
        let s0 = dy * ky * stride;
        let drow = &mut dst[dy * dw * cn..(dy + 1) * dw * cn];
        for dx in 0..dw {
            for c in 0..cn {
                let x0 = dx * kx * cn + c;
                let v = if halve {
                    let (a, b) = (&src[s0..], &src[s0 + stride..]);
                    ((a[x0] as u32 + a[x0 + cn] as u32 + b[x0] as u32 + b[x0 + cn] as u32 + 2) >> 2)
                        as u8
                } else {
                    let mut sum = 0i32;
                    for j in 0..ky {
                        let row = &src[s0 + j * stride..];
                        for i in 0..kx {
                            sum += row[x0 + i * cn] as i32;
                        }
                    }
                    sat_u8_f(sum as f32 * scale)
                };
                drow[dx * cn + c] = v;
            }
        }
    }
}

/// One entry of `computeResizeAreaTab`: source index, destination index, weight.
struct Decimate {
    si: usize,
    di: usize,
    alpha: f32,
}

fn area_tab(ssize: usize, dsize: usize, scale: f64) -> Vec<Decimate> {
    let mut tab = Vec::with_capacity(ssize * 2);
    for dx in 0..dsize {
        let fsx1 = dx as f64 * scale;
        let fsx2 = fsx1 + scale;
        let cell = scale.min(ssize as f64 - fsx1);
        let mut sx1 = fsx1.ceil() as i64;
        let mut sx2 = fsx2.floor() as i64;
        sx2 = sx2.min(ssize as i64 - 1);
        sx1 = sx1.min(sx2);
        if sx1 as f64 - fsx1 > 1e-3 {
            tab.push(Decimate {
                si: (sx1 - 1) as usize,
                di: dx,
                alpha: ((sx1 as f64 - fsx1) / cell) as f32,
            });
        }
        for sx in sx1..sx2 {
            tab.push(Decimate {
                si: sx as usize,
                di: dx,
                alpha: (1.0 / cell) as f32,
            });
        }
        if fsx2 - sx2 as f64 > 1e-3 {
            tab.push(Decimate {
                si: sx2 as usize,
                di: dx,
                alpha: ((fsx2 - sx2 as f64).min(1.0).min(cell) / cell) as f32,
            });
        }
    }
    tab
}

/// `resizeArea_`: fractional reduction, weights in float, summed in OpenCV's order.
#[allow(clippy::too_many_arguments)]
fn area_resize(
    src: &[u8],
    sw: usize,
    sh: usize,
    cn: usize,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    scale_x: f64,
    scale_y: f64,
    scratch: &mut CvScratch,
) {
    let xtab = area_tab(sw, dw, scale_x);
    let ytab = area_tab(sh, dh, scale_y);
    let width = dw * cn;
    let CvScratch { fbuf, fsum, .. } = scratch;
    fbuf.clear();
    fbuf.resize(width, 0.0);
    fsum.clear();
    fsum.resize(width, 0.0);
    let mut prev_dy = ytab.first().map_or(0, |t| t.di);
    for t in &ytab {
        let row = &src[t.si * sw * cn..(t.si + 1) * sw * cn];
        fbuf.iter_mut().for_each(|b| *b = 0.0);
        for x in &xtab {
            let (d, s) = (x.di * cn, x.si * cn);
            for c in 0..cn {
                fbuf[d + c] += row[s + c] as f32 * x.alpha;
            }
        }
        let beta = t.alpha;
        if t.di != prev_dy {
            let drow = &mut dst[prev_dy * width..(prev_dy + 1) * width];
            for ((d, s), b) in drow.iter_mut().zip(fsum.iter_mut()).zip(fbuf.iter()) {
                *d = sat_u8_f(*s);
                *s = beta * b;
            }
            prev_dy = t.di;
        } else {
            for (s, b) in fsum.iter_mut().zip(fbuf.iter()) {
                *s += beta * b;
            }
        }
    }
    let drow = &mut dst[prev_dy * width..(prev_dy + 1) * width];
    for (d, s) in drow.iter_mut().zip(fsum.iter()) {
        *d = sat_u8_f(*s);
    }
}

/// `interpolateCubic`, in float as OpenCV.
fn cubic_coeffs(x: f32, c: &mut [f32]) {
    const A: f32 = -0.75;
    c[0] = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    c[1] = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    c[2] = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    c[3] = 1.0 - c[0] - c[1] - c[2];
}

/// `interpolateLanczos4`: sines in double, normalised in float.
fn lanczos4_coeffs(x: f32, c: &mut [f32]) {
    const S45: f64 = std::f64::consts::FRAC_1_SQRT_2;
    const CS: [[f64; 2]; 8] = [
        [1.0, 0.0],
        [-S45, -S45],
        [0.0, 1.0],
        [S45, -S45],
        [-1.0, 0.0],
        [S45, S45],
        [0.0, -1.0],
        [-S45, S45],
    ];
    if x < f32::EPSILON {
        c[..8].iter_mut().for_each(|v| *v = 0.0);
        c[3] = 1.0;
        return;
    }
    let x = x as f64;
    let y0 = -(x + 3.0) * std::f64::consts::PI * 0.25;
    let (s0, c0) = (y0.sin(), y0.cos());
    let mut sum = 0f32;
    for i in 0..8 {
        let y = -(x + 3.0 - i as f64) * std::f64::consts::PI * 0.25;
        c[i] = ((CS[i][0] * s0 + CS[i][1] * c0) / (y * y)) as f32;
        sum += c[i];
    }
    let inv = 1.0 / sum;
    c[..8].iter_mut().for_each(|v| *v *= inv);
}

/// Per output pixel along one axis: first source pixel (before the kernel's left taps) and
/// the fixed-point weights, as `hal::resize` computes `xofs`/`ialpha` and `yofs`/`ibeta`.
struct Axis {
    ofs: Vec<i64>,
    weights: Vec<i32>,
    /// Output pixels from `xmax` on take the clamped path (linear: the edge pixel alone).
    xmax: usize,
}

fn axis(
    ssize: usize,
    dsize: usize,
    scale: f64,
    inv_scale: f64,
    interp: Interpolation,
    clamp_linear: bool,
) -> Axis {
    let ksize = taps(interp);
    let ksize2 = (ksize / 2) as i64;
    let area_mode = interp == Interpolation::Area;
    let kernel_clamps = !matches!(interp, Interpolation::Cubic | Interpolation::Lanczos4);
    let mut ofs = Vec::with_capacity(dsize);
    let mut weights = Vec::with_capacity(dsize * ksize);
    let mut xmax = dsize;
    let mut cbuf = [0f32; 8];
    for d in 0..dsize {
        let (mut s, mut f);
        if !area_mode {
            f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            s = f.floor() as i64;
            f -= s as f32;
        } else {
            s = (d as f64 * scale).floor() as i64;
            f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
            f = if f <= 0.0 { 0.0 } else { f - f.floor() };
        }
        if clamp_linear {
            if s < ksize2 - 1 && s < 0 && kernel_clamps {
                f = 0.0;
                s = 0;
            }
            if s + ksize2 >= ssize as i64 {
                xmax = xmax.min(d);
                if s >= ssize as i64 - 1 && kernel_clamps {
                    f = 0.0;
                    s = ssize as i64 - 1;
                }
            }
        }
        ofs.push(s);
        match interp {
            Interpolation::Cubic => cubic_coeffs(f, &mut cbuf),
            Interpolation::Lanczos4 => lanczos4_coeffs(f, &mut cbuf),
            _ => {
                cbuf[0] = 1.0 - f;
                cbuf[1] = f;
            }
        }
        weights.extend(cbuf[..ksize].iter().map(|&c| round_short(c * COEF_SCALE)));
    }
    Axis { ofs, weights, xmax }
}

fn taps(interp: Interpolation) -> usize {
    match interp {
        Interpolation::Cubic => 4,
        Interpolation::Lanczos4 => 8,
        _ => 2,
    }
}

/// `resizeGeneric_`: the separable fixed-point path of INTER_LINEAR (and INTER_AREA when
/// enlarging), INTER_CUBIC and INTER_LANCZOS4.
#[allow(clippy::too_many_arguments)]
fn generic(
    src: &[u8],
    sw: usize,
    sh: usize,
    cn: usize,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    interp: Interpolation,
    scale_x: f64,
    scale_y: f64,
    scratch: &mut CvScratch,
) {
    let k = taps(interp);
    let half = (k / 2) as i64;
    let xs = axis(sw, dw, scale_x, 1.0 / scale_x, interp, true);
    let ys = axis(sh, dh, scale_y, 1.0 / scale_y, interp, false);
    let width = dw * cn;
    // Source row of tap `t` of output row `dy`, clamped as OpenCV's `clip`.
    let row_of =
        |dy: usize, t: usize| (ys.ofs[dy] - half + 1 + t as i64).clamp(0, sh as i64 - 1) as usize;
    let first = (0..dh).map(|dy| row_of(dy, 0)).min().unwrap_or(0);
    let last = (0..dh).map(|dy| row_of(dy, k - 1)).max().unwrap_or(0);
    let rows = &mut scratch.rows;
    // Every element is written by the horizontal pass: no clearing needed.
    rows.resize((last - first + 1) * width, 0);
    for sy in first..=last {
        let srow = &src[sy * sw * cn..(sy + 1) * sw * cn];
        let out = &mut rows[(sy - first) * width..(sy - first + 1) * width];
        if k == 2 {
            horizontal_linear(srow, cn, &xs, out);
        } else {
            horizontal_kernel(srow, sw, cn, &xs, k, out);
        }
    }
    for dy in 0..dh {
        let drow = &mut dst[dy * width..(dy + 1) * width];
        let beta = &ys.weights[dy * k..(dy + 1) * k];
        if k == 2 {
            let r0 = &rows[(row_of(dy, 0) - first) * width..][..width];
            let r1 = &rows[(row_of(dy, 1) - first) * width..][..width];
            vertical_linear(r0, r1, beta[0], beta[1], drow);
        } else {
            let taps: Vec<&[i32]> = (0..k)
                .map(|t| &rows[(row_of(dy, t) - first) * width..][..width])
                .collect();
            vertical_kernel(&taps, beta, drow);
        }
    }
}

/// `HResizeLinear` in fixed point: two taps, or the edge pixel times 2048 from `xmax` on.
fn horizontal_linear(srow: &[u8], cn: usize, xs: &Axis, out: &mut [i32]) {
    for (dx, px) in out.chunks_exact_mut(cn).enumerate() {
        let sx = xs.ofs[dx] as usize * cn;
        if dx < xs.xmax {
            let (a0, a1) = (xs.weights[dx * 2], xs.weights[dx * 2 + 1]);
            for (c, o) in px.iter_mut().enumerate() {
                *o = srow[sx + c] as i32 * a0 + srow[sx + cn + c] as i32 * a1;
            }
        } else {
            for (c, o) in px.iter_mut().enumerate() {
                *o = srow[sx + c] as i32 * (1 << COEF_BITS);
            }
        }
    }
}

/// `HResizeCubic` / `HResizeLanczos4`: `k` taps centred on the source pixel, indices outside
/// the row replaced by the edge pixel.
fn horizontal_kernel(srow: &[u8], sw: usize, cn: usize, xs: &Axis, k: usize, out: &mut [i32]) {
    let left = (k / 2 - 1) as i64;
    for (dx, px) in out.chunks_exact_mut(cn).enumerate() {
        let s0 = xs.ofs[dx] - left;
        let w = &xs.weights[dx * k..(dx + 1) * k];
        for (c, o) in px.iter_mut().enumerate() {
            let mut v = 0i32;
            for (j, &wj) in w.iter().enumerate() {
                let sx = (s0 + j as i64).clamp(0, sw as i64 - 1) as usize;
                v += srow[sx * cn + c] as i32 * wj;
            }
            *o = v;
        }
    }
}

// `with_avx2!` is the Pillow resampler's (declared before this module in `resample`).
with_avx2!(vertical_linear, vertical_linear_plain, vertical_linear_avx2, (r0: &[i32], r1: &[i32], b0: i32, b1: i32, out: &mut [u8]));
with_avx2!(vertical_kernel, vertical_kernel_plain, vertical_kernel_avx2, (taps: &[&[i32]], beta: &[i32], out: &mut [u8]));

/// `VResizeLinear<uchar, int, short, ...>`: OpenCV's SSE2 formula, which its scalar code
/// copies so that both give the same bytes.
#[inline(always)]
fn vertical_linear_plain(r0: &[i32], r1: &[i32], b0: i32, b1: i32, out: &mut [u8]) {
    for ((o, &s0), &s1) in out.iter_mut().zip(r0).zip(r1) {
        let v = (((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2;
        *o = sat_u8(v);
    }
}

/// `VResizeCubic` / `VResizeLanczos4` with `FixedPtCast<int, uchar, 22>`.
#[inline(always)]
fn vertical_kernel_plain(taps: &[&[i32]], beta: &[i32], out: &mut [u8]) {
    const SHIFT: u32 = COEF_BITS * 2;
    for (x, o) in out.iter_mut().enumerate() {
        let mut sum = 0i32;
        for (t, &b) in taps.iter().zip(beta) {
            sum = sum.wrapping_add(t[x].wrapping_mul(b));
        }
        *o = sat_u8((sum + (1 << (SHIFT - 1))) >> SHIFT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        src: &[u8],
        sw: usize,
        sh: usize,
        cn: usize,
        dw: usize,
        dh: usize,
        i: Interpolation,
    ) -> Vec<u8> {
        let mut out = vec![0u8; dw * dh * cn];
        resize(
            src,
            sw,
            sh,
            cn,
            &mut out,
            dw,
            dh,
            i,
            &mut CvScratch::default(),
        );
        out
    }

    #[test]
    fn opencv_reference_values() {
        // cv2 4.13: cv2.resize(np.array([[0, 60, 120, 180, 240]], np.uint8), (2, 1), interpolation=...)
        // and (8, 1) for the upscale; reference values printed by opencv-python-headless 4.13.0.92.
        let row = [0u8, 60, 120, 180, 240];
        assert_eq!(run(&row, 5, 1, 1, 2, 1, Interpolation::Linear), [45, 195]);
        assert_eq!(run(&row, 5, 1, 1, 2, 1, Interpolation::Area), [48, 192]);
        assert_eq!(run(&row, 5, 1, 1, 2, 1, Interpolation::Nearest), [0, 120]);
        assert_eq!(
            run(&row, 5, 1, 1, 8, 1, Interpolation::Linear),
            [0, 26, 64, 101, 139, 176, 214, 240]
        );
    }

    #[test]
    fn exact_half_is_the_rounded_mean_of_each_cell() {
        // 2x2 cells summing to 2 (mean 0.5): OpenCV's 2x path gives (2 + 2) >> 2 = 1 for both
        // INTER_LINEAR and INTER_AREA, where a float mean rounded to even would give 0.
        let src = [1u8, 1, 0, 0, 0, 0, 3, 3];
        for i in [Interpolation::Linear, Interpolation::Area] {
            assert_eq!(run(&src, 4, 2, 1, 2, 1, i), [1, 2]);
        }
    }
}
