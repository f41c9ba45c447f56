//! The integer dot products of a quantized fully connected layer (`lookout.QGemm`,
//! [`crate::ops`]): each output's `sum_k a[k] * (w[n][k] - w_zero[n])`, exact in i32, the
//! weights stored once as `w - w_zero` in i8 where every one fits (else i16).
//!
//! Rows of `a` are usually one (one frame), so this is a matrix-vector product: four weight
//! rows at a time share each load of `a`, with `vpmaddwd` on AVX2, portable code elsewhere.
//! The zero point of `a`, the scales, the bias and the requantization are the operator's.

use crate::isa::Isa;

/// The weights as `w - w_zero`, row n (one output) after row, K values each, and each row's
/// sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights {
    pub n: usize,
    pub k: usize,
    pub rows: Rows,
    pub row_sums: Vec<i32>,
}

/// The centred weights in i8 where every one fits (symmetric weights, zero point 0: the usual
/// case, half the memory read per frame), else in i16.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    I8(Vec<i8>),
    I16(Vec<i16>),
}

impl Weights {
    /// From raw values `w` ([N, K] when `trans_b`, else [K, N]) and zero points per row n.
    pub fn new(w: &[i32], n: usize, k: usize, trans_b: bool, zero: &[i32]) -> Weights {
        assert_eq!(w.len(), n * k);
        let at = |r: usize, c: usize| if trans_b { w[r * k + c] } else { w[c * n + r] };
        let centred: Vec<i32> = (0..n)
            .flat_map(|r| (0..k).map(move |c| at(r, c) - zero[r]))
            .collect();
        let row_sums = if k == 0 {
            vec![0; n]
        } else {
            centred.chunks(k).map(|r| r.iter().sum()).collect()
        };
        let rows = if centred.iter().all(|&v| i8::try_from(v).is_ok()) {
            Rows::I8(centred.iter().map(|&v| v as i8).collect())
        } else {
            Rows::I16(centred.iter().map(|&v| v as i16).collect())
        };
        Weights {
            n,
            k,
            rows,
            row_sums,
        }
    }
}

/// One stored weight type.
pub trait Lane: Copy + Into<i32> {
    /// Sixteen values from `p` as i16 lanes.
    ///
    /// # Safety
    /// The CPU has AVX2 (the caller is compiled with it); 16 values are readable at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m256i;
}

impl Lane for i16 {
    /// # Safety
    /// As [`Lane::load16`]'s.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const i16) -> std::arch::x86_64::__m256i {
        // SAFETY: as the trait's contract says.
        unsafe { std::arch::x86_64::_mm256_loadu_si256(p.cast()) }
    }
}

impl Lane for i8 {
    /// # Safety
    /// As [`Lane::load16`]'s.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const i8) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        // SAFETY: as the trait's contract says: 16 bytes, sign-extended.
        unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast())) }
    }
}

/// `acc[r] = sum_k a[k] * w.rows[r][k]` for every row r, `a` already widened to i16.
pub fn dots(isa: Isa, w: &Weights, a: &[i16], acc: &mut [i32]) {
    assert!(a.len() == w.k && acc.len() == w.n);
    match (isa, &w.rows) {
        (Isa::Scalar | Isa::NeonDot, Rows::I8(rows)) => dots_portable(rows, w.k, a, acc),
        (Isa::Scalar | Isa::NeonDot, Rows::I16(rows)) => dots_portable(rows, w.k, a, acc),
        // SAFETY: both AVX2 variants exist only after run-time detection of AVX2 and FMA;
        // `rows` holds `w.n` = `acc.len()` rows of `w.k` values (`Weights::new`).
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2Fma | Isa::Avx2Vnni, Rows::I8(rows)) => unsafe { dots_avx2(rows, w.k, a, acc) },
        // SAFETY: as for the i8 rows.
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2Fma | Isa::Avx2Vnni, Rows::I16(rows)) => unsafe { dots_avx2(rows, w.k, a, acc) },
    }
}

fn dots_portable<L: Lane>(rows: &[L], k: usize, a: &[i16], acc: &mut [i32]) {
    if k == 0 {
        acc.fill(0);
        return;
    }
    for (row, o) in rows.chunks_exact(k).zip(acc.iter_mut()) {
        // |a| <= 255 and |w - w_zero| <= 255: each product below 2^16, K of them far below
        // 2^31 for any real layer; wrapping keeps overflow checks out of the loop.
        *o = row
            .iter()
            .zip(a)
            .fold(0i32, |s, (&x, &y)| s.wrapping_add(x.into() * y as i32));
    }
}

/// Four weight rows per step share each 16-value load of `a`: `vpmaddwd` into one
/// accumulator per row, summed across lanes at the end; the K tail in scalar code.
///
/// # Safety
/// The CPU has AVX2; `rows` holds `acc.len()` rows of `k` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dots_avx2<L: Lane>(rows: &[L], k: usize, a: &[i16], acc: &mut [i32]) {
    use std::arch::x86_64::*;
    assert!(rows.len() >= acc.len() * k && a.len() >= k);
    let body = k - k % 16;
    let hsum = |v: __m256i| -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    };
    let tail = |r: usize| -> i32 {
        let row = &rows[r * k..(r + 1) * k];
        (body..k).fold(0i32, |s, c| s.wrapping_add(row[c].into() * a[c] as i32))
    };
    let n = acc.len();
    let mut r = 0;
    while r + 4 <= n {
        let mut s = [_mm256_setzero_si256(); 4];
        for c in (0..body).step_by(16) {
            // SAFETY: c + 16 <= body <= k for `a` and each of the four rows r..r + 4 < n
            // (asserted above).
            unsafe {
                let x = _mm256_loadu_si256(a.as_ptr().add(c).cast());
                for (j, sj) in s.iter_mut().enumerate() {
                    let wr = L::load16(rows.as_ptr().add((r + j) * k + c));
                    *sj = _mm256_add_epi32(*sj, _mm256_madd_epi16(x, wr));
                }
            }
        }
        for (j, sj) in s.iter().enumerate() {
            acc[r + j] = hsum(*sj).wrapping_add(tail(r + j));
        }
        r += 4;
    }
    for (rr, out) in acc.iter_mut().enumerate().skip(r) {
        let mut s = _mm256_setzero_si256();
        for c in (0..body).step_by(16) {
            // SAFETY: as above, for row rr < n.
            unsafe {
                let x = _mm256_loadu_si256(a.as_ptr().add(c).cast());
                let wr = L::load16(rows.as_ptr().add(rr * k + c));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(x, wr));
            }
        }
        *out = hsum(s).wrapping_add(tail(rr));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn values(n: usize, seed: u64, lo: i32, hi: i32) -> Vec<i32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                lo + ((s >> 20) % (hi - lo + 1) as u64) as i32
            })
            .collect()
    }

    #[test]
    fn dots_are_exact_on_every_path_and_shape() {
        let mut seen = [false; 2];
        for (n, k) in [
            (1, 1),
            (3, 15),
            (4, 16),
            (5, 17),
            (9, 40),
            (1000, 1280),
            (7, 0),
        ] {
            let w = values(n * k, 5 + n as u64, -128, 127);
            // Nonzero zero points: centred values beyond i8 (the i16 rows); zero: the i8 rows.
            for (zero, trans_b) in [
                (values(n, 9, -10, 10), true),
                (values(n, 9, -10, 10), false),
                (vec![0; n], true),
                (vec![0; n], false),
            ] {
                let wt = Weights::new(&w, n, k, trans_b, &zero);
                let narrow = matches!(wt.rows, Rows::I8(_));
                let fits = (0..n * k).all(|i| {
                    let r = if trans_b { i / k } else { i % n };
                    i8::try_from(w[i] - zero[r]).is_ok()
                });
                assert_eq!(narrow, fits, "n {n} k {k}");
                seen[narrow as usize] = true;
                let a: Vec<i16> = values(k, 3, 0, 255).iter().map(|&v| v as i16).collect();
                let want: Vec<i32> = (0..n)
                    .map(|r| {
                        (0..k)
                            .map(|c| {
                                let raw = if trans_b { w[r * k + c] } else { w[c * n + r] };
                                (raw - zero[r]) * a[c] as i32
                            })
                            .sum()
                    })
                    .collect();
                for isa in Isa::available() {
                    let mut acc = vec![7; n];
                    dots(isa, &wt, &a, &mut acc);
                    assert_eq!(
                        acc,
                        want,
                        "{} n {n} k {k} trans_b {trans_b} i8 rows {narrow}",
                        isa.name()
                    );
                }
            }
        }
        assert_eq!(seen, [true, true], "both weight storages exercised");
    }
}
