//! A perceptual hash for near-duplicate suppression: the difference hash ("dHash"): the image
//! in grey, averaged down to 9x8 cells, one bit per pair of horizontal neighbours (is the left
//! one brighter?). Sensor noise, JPEG re-encoding and small exposure changes move few of its
//! 64 bits; a scene that changes moves many. Written here because it is twenty lines over
//! lookout's own RGB buffer, where the `img_hash` crate would bring a second image stack.

use crate::frame::RgbBuf;

const COLS: usize = 9;
const ROWS: usize = 8;

/// The 64-bit difference hash of `rgb` (0 for an empty image).
pub fn dhash(rgb: &RgbBuf) -> u64 {
    let (w, h) = (rgb.width as usize, rgb.height as usize);
    if w == 0 || h == 0 || rgb.data.len() < w * h * 3 {
        return 0;
    }
    // Box averages of the grey levels: each pixel adds to the cell it falls in.
    let mut sum = [[0u64; COLS]; ROWS];
    let mut count = [[0u64; COLS]; ROWS];
    for y in 0..h {
        let cy = y * ROWS / h;
        let row = &rgb.data[y * w * 3..(y + 1) * w * 3];
        for (x, px) in row.chunks_exact(3).enumerate() {
            let cx = x * COLS / w;
            // ITU-R BT.601 luma in integers.
            let grey = 299 * u64::from(px[0]) + 587 * u64::from(px[1]) + 114 * u64::from(px[2]);
            sum[cy][cx] += grey;
            count[cy][cx] += 1;
        }
    }
    let mean = |r: usize, c: usize| sum[r][c] / count[r][c].max(1);
    let mut hash = 0u64;
    for r in 0..ROWS {
        for c in 0..COLS - 1 {
            hash = (hash << 1) | u64::from(mean(r, c) > mean(r, c + 1));
        }
    }
    hash
}

/// How many bits two hashes differ in.
pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: u32, h: u32, mut f: impl FnMut(u32, u32) -> u8) -> RgbBuf {
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let v = f(x, y);
                data.extend_from_slice(&[v, v, v]);
            }
        }
        RgbBuf {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn a_left_to_right_ramp_sets_no_bit_and_its_mirror_every_bit() {
        // Brightness rising to the right: no left cell is brighter than its neighbour.
        let up = image(90, 80, |x, _| (x * 2) as u8);
        assert_eq!(dhash(&up), 0);
        let down = image(90, 80, |x, _| 255 - (x * 2) as u8);
        assert_eq!(dhash(&down), u64::MAX);
        assert_eq!(distance(dhash(&up), dhash(&down)), 64);
    }

    #[test]
    fn noise_moves_few_bits_and_another_scene_many() {
        let scene =
            |x: u32, y: u32| ((x * 7 + y * 3) % 200) as u8 + ((x / 20 + y / 20) % 2 * 40) as u8;
        let a = image(320, 240, scene);
        // Pseudo-random noise of +-4 grey levels, as a sensor adds.
        let mut seed = 12345u32;
        let b = image(320, 240, |x, y| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (i32::from(scene(x, y)) + ((seed >> 16) % 9) as i32 - 4).clamp(0, 255) as u8
        });
        assert!(
            distance(dhash(&a), dhash(&b)) <= 4,
            "noise moved {}",
            distance(dhash(&a), dhash(&b))
        );
        let other = image(320, 240, |x, y| ((x * x + y * 5) % 256) as u8);
        assert!(distance(dhash(&a), dhash(&other)) > 16);
    }
}
