//! The activation matrix of a convolution read out of its input planes (im2col): row `k` =
//! (input channel, kernel row, kernel column), column `p` = output pixel, the value under that
//! tap, or the zero point in the padding. The 8-bit matrix products ([`super::qgemm`],
//! [`super::qdot`]) gather it a row at a time into their own panels ([`gather_row`]); the
//! float one ([`super::fgemm`]) lays out whole rows with the same column bounds
//! ([`tap_columns`]) and copies ([`strided_copy`]). How the rows are packed is theirs.

/// How to read the activation matrix `x[k][p]` out of a [C, H, W] plane stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Im2col {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub dil: [usize; 2],
    pub pad_top: usize,
    pub pad_left: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Im2col {
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    pub fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    pub(crate) fn is_identity(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.pad_top == 0
            && self.pad_left == 0
            && self.oh == self.h
            && self.ow == self.w
    }
}

/// Row `kk` of the im2col matrix (input channel, kernel row, kernel column) for every output
/// pixel; `x_zero` where the tap falls outside the image.
#[inline(always)]
pub(crate) fn gather_row<I: Copy + Into<i16>>(
    g: &Im2col,
    x: &[I],
    x_zero: i16,
    kk: usize,
    row: &mut [i16],
) {
    let (c, r) = (kk / (g.kh * g.kw), kk % (g.kh * g.kw));
    let (i, j) = (r / g.kw, r % g.kw);
    let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
    let reach = j * g.dil[1];
    let (lo, hi) = tap_columns(g.w, g.ow, g.pad_left, reach, g.stride[1]);
    for oy in 0..g.oh {
        let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
        let Some(y) = (oy * g.stride[0] + i * g.dil[0])
            .checked_sub(g.pad_top)
            .filter(|&y| y < g.h)
        else {
            dst.fill(x_zero);
            continue;
        };
        dst[..lo].fill(x_zero);
        dst[hi..].fill(x_zero);
        if lo == hi {
            continue;
        }
        let src = &plane[y * g.w..(y + 1) * g.w];
        // In range by the choice of lo..hi: 0 <= ox * stride + reach - pad_left < w.
        let first = lo * g.stride[1] + reach - g.pad_left;
        strided_copy(&src[first..], g.stride[1], &mut dst[lo..hi], |v| v.into());
    }
}

/// The output columns `lo..hi` (within `0..ow`) whose tap `reach` columns right of the window's
/// start (kernel column x dilation) falls inside a `w`-wide input row padded by `pad_left`, at
/// horizontal `stride`: `0 <= ox * stride + reach - pad_left < w` exactly for them.
pub fn tap_columns(
    w: usize,
    ow: usize,
    pad_left: usize,
    reach: usize,
    stride: usize,
) -> (usize, usize) {
    let lo = pad_left.saturating_sub(reach).div_ceil(stride).min(ow);
    let hi = if w + pad_left > reach {
        ((w + pad_left - reach - 1) / stride + 1).min(ow)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// `dst[i] = f(src[i * stride])` for every i, as a loop the compiler vectorises (fixed-size
/// chunks, no bounds checks inside: a deinterleave for stride 2).
#[inline(always)]
pub fn strided_copy<S: Copy, D>(src: &[S], stride: usize, dst: &mut [D], f: impl Fn(S) -> D) {
    let Some(last) = dst.len().checked_sub(1) else {
        return;
    };
    if stride == 1 {
        let n = dst.len();
        for (d, &v) in dst.iter_mut().zip(&src[..n]) {
            *d = f(v);
        }
        return;
    }
    // The last value alone: the source may end right after it, short of a whole chunk.
    for (d, c) in dst[..last]
        .iter_mut()
        .zip(src[..last * stride].chunks_exact(stride))
    {
        *d = f(c[0]);
    }
    dst[last] = f(src[last * stride]);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The convolution `g` by its definition, in i64: `bias + sum (x - x_zero) * (w - w_zero)`
    /// per output channel (`w` [m][k] raw values, `w_zero` per channel), `x_zero` outside the
    /// image. [m][oh][ow].
    pub(crate) fn reference<T: Copy + Into<i16>>(
        g: &Im2col,
        x: &[T],
        x_zero: i16,
        w: &[i32],
        w_zero: &[i32],
        bias: i64,
    ) -> Vec<i64> {
        let (m, (kh, kw)) = (w_zero.len(), (g.kh, g.kw));
        let mut out = Vec::with_capacity(m * g.oh * g.ow);
        for r in 0..m {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = bias;
                    for ch in 0..g.c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let y = (oy * g.stride[0] + i * g.dil[0]).checked_sub(g.pad_top);
                                let xx = (ox * g.stride[1] + j * g.dil[1]).checked_sub(g.pad_left);
                                let v = match (y, xx) {
                                    (Some(y), Some(xx)) if y < g.h && xx < g.w => {
                                        x[(ch * g.h + y) * g.w + xx].into()
                                    }
                                    _ => x_zero,
                                } as i64;
                                let wv = w[r * g.k() + (ch * kh + i) * kw + j] - w_zero[r];
                                acc += (v - x_zero as i64) * wv as i64;
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
        out
    }
}
