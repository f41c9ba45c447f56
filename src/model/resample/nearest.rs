//! Pillow's nearest-neighbour resize (`Image.resize(size, NEAREST)`, Keras' `load_img`
//! default), exactly: Pillow maps it to an affine scale (`ImagingScaleAffine` in Geometry.c)
//! whose source position starts at half a step and is advanced by adding the step in `f64`,
//! each position truncated. The additions are repeated here, not multiplied out, because their
//! rounding decides which pixel a position just under an integer lands on.

/// Source indices of the `out` positions kept, `skip` positions in, of a resize of `in_size`
/// pixels to `whole` pixels.
fn positions(in_size: usize, whole: usize, skip: usize, out: usize) -> Vec<usize> {
    let step = in_size as f64 / whole as f64;
    let mut at = step * 0.5;
    let mut v = Vec::with_capacity(out);
    for i in 0..skip + out {
        if i >= skip {
            // Pillow's COORD: negative is outside (never, here), else truncated; the last
            // index at most (a position can reach `in_size` only through rounding).
            v.push((at as usize).min(in_size - 1));
        }
        at += step;
    }
    v
}

/// Resizes `src` (`sw` x `sh` RGB) as Pillow resizes it to `whole` with NEAREST, writing the
/// `dw` x `dh` part that starts at `crop` (left, top; `(0, 0)` and `whole == (dw, dh)` for the
/// whole image) into `dst`.
#[allow(clippy::too_many_arguments)] // the shape of the other resamplers' entry points
pub fn resize_rgb(
    src: &[u8],
    sw: usize,
    sh: usize,
    whole: (usize, usize),
    crop: (usize, usize),
    dst: &mut [u8],
    dw: usize,
    dh: usize,
) {
    let xs = positions(sw, whole.0, crop.0, dw);
    let ys = positions(sh, whole.1, crop.1, dh);
    for (y, &sy) in ys.iter().enumerate() {
        let line = &src[sy * sw * 3..(sy + 1) * sw * 3];
        let out = &mut dst[y * dw * 3..(y + 1) * dw * 3];
        for (o, &sx) in out.chunks_exact_mut(3).zip(&xs) {
            o.copy_from_slice(&line[sx * 3..sx * 3 + 3]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_pillows() {
        // PIL 13: Image.frombytes("L", (5, 1), bytes(range(5))).resize((3, 1), NEAREST)
        // -> [0, 2, 4]; .resize((7, 1), NEAREST) -> [0, 1, 1, 2, 3, 3, 4].
        assert_eq!(positions(5, 3, 0, 3), [0, 2, 4]);
        assert_eq!(positions(5, 7, 0, 7), [0, 1, 1, 2, 3, 3, 4]);
        // A crop of the whole resize takes the same positions.
        assert_eq!(positions(5, 7, 2, 3), [1, 2, 3]);
    }
}
