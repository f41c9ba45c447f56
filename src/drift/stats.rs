//! The statistics of drift: the population stability index between two label distributions,
//! and the rolling window of recent top-1 labels and scores. Pure; table-tested here against
//! hand-computed values.

use std::collections::VecDeque;

/// The share an empty bin is given before the logarithm, so that a label absent from one side
/// adds a large but finite term instead of an infinite one (the usual choice in credit scoring
/// and in model-monitoring tools; documented in docs/drift.md).
pub const EPSILON: f64 = 1e-4;

/// Population stability index of `current` against `reference`, both counts per label (the same
/// label order, the same length):
///
/// `PSI = sum_i (c_i - r_i) * ln(c_i / r_i)`, where `r_i` and `c_i` are the label's share of
/// each side, each floored at [`EPSILON`]. 0 means the same distribution; under 0.1 is usually
/// read as no shift, 0.1 to 0.25 as a moderate one, over 0.25 as a large one.
///
/// `None` when either side has no counts.
pub fn psi(reference: &[f64], current: &[f64]) -> Option<f64> {
    let r_total: f64 = reference.iter().sum();
    let c_total: f64 = current.iter().sum();
    if r_total <= 0.0 || c_total <= 0.0 {
        return None;
    }
    let n = reference.len().max(current.len());
    let share =
        |v: &[f64], i: usize, total: f64| (v.get(i).copied().unwrap_or(0.0) / total).max(EPSILON);
    Some(
        (0..n)
            .map(|i| {
                let r = share(reference, i, r_total);
                let c = share(current, i, c_total);
                (c - r) * (c / r).ln()
            })
            .sum(),
    )
}

/// The last `cap` classifications' top-1 labels and scores, with their label counts and score
/// sum kept up to date as frames come and go.
#[derive(Debug, Clone)]
pub struct Window {
    cap: usize,
    frames: VecDeque<(usize, f32)>,
    counts: Vec<f64>,
    score_sum: f64,
}

impl Window {
    /// A window of `cap` frames (at least 1) over `labels` labels.
    pub fn new(cap: usize, labels: usize) -> Window {
        Window {
            cap: cap.max(1),
            frames: VecDeque::with_capacity(cap.max(1)),
            counts: vec![0.0; labels],
            score_sum: 0.0,
        }
    }

    /// Adds one classification (its top-1 label and score), dropping the oldest when full.
    pub fn push(&mut self, label: usize, score: f32) {
        if self.frames.len() == self.cap {
            if let Some((old, s)) = self.frames.pop_front() {
                if let Some(c) = self.counts.get_mut(old) {
                    *c -= 1.0;
                }
                self.score_sum -= f64::from(s);
            }
        }
        if label >= self.counts.len() {
            self.counts.resize(label + 1, 0.0);
        }
        self.counts[label] += 1.0;
        self.score_sum += f64::from(score);
        self.frames.push_back((label, score));
    }

    /// Frames per label in the window.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.frames.len() == self.cap
    }

    /// Mean top-1 score of the frames in the window; `None` when empty.
    pub fn mean_score(&self) -> Option<f64> {
        // Summed from the frames rather than the running sum, which drifts by rounding over
        // a long run; the window is small.
        (!self.frames.is_empty()).then(|| {
            self.frames.iter().map(|&(_, s)| f64::from(s)).sum::<f64>() / self.frames.len() as f64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_matches_hand_computed_values() {
        // (reference counts, current counts, PSI computed by hand: sum (c-r) ln(c/r))
        let cases: &[(&[f64], &[f64], f64)] = &[
            // identical distributions (counts differ, shares do not)
            (&[25.0, 25.0, 50.0], &[50.0, 50.0, 100.0], 0.0),
            // (0.9-0.5) ln(1.8) + (0.1-0.5) ln(0.2)
            (&[50.0, 50.0], &[90.0, 10.0], 0.878_889_830_934_487_8),
            // (0.3-0.4) ln(0.75) + 0 + (0.4-0.3) ln(4/3): a moderate shift
            (
                &[40.0, 30.0, 30.0],
                &[30.0, 30.0, 40.0],
                0.057_536_414_490_356_23,
            ),
            // an empty reference bin is floored at EPSILON:
            // (0.5-1) ln(0.5) + (0.5-1e-4) ln(0.5/1e-4)
            (&[100.0, 0.0], &[50.0, 50.0], 4.604_318_466_668_95),
            // all mass moved to a label the reference never saw
            (&[10.0, 0.0, 0.0], &[0.0, 0.0, 10.0], 18.418_838_675_877_97),
        ];
        for (r, c, want) in cases {
            let got = psi(r, c).expect("both sides have counts");
            assert!(
                (got - want).abs() < 1e-9,
                "psi({r:?}, {c:?}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn psi_is_none_without_counts_and_pads_short_sides() {
        assert_eq!(psi(&[], &[1.0]), None);
        assert_eq!(psi(&[1.0, 2.0], &[0.0, 0.0]), None);
        // A missing trailing label counts as 0.
        let padded = psi(&[50.0, 50.0], &[90.0, 10.0, 0.0]).expect("counts");
        assert!((padded - 0.878_889_830_934_487_8).abs() < 1e-9, "{padded}");
    }

    #[test]
    fn window_rolls_its_counts_and_mean() {
        let mut w = Window::new(3, 2);
        assert_eq!(w.mean_score(), None);
        // (label, score, counts after, mean after, full after)
        let steps: &[(usize, f32, [f64; 3], f64, bool)] = &[
            (0, 0.5, [1.0, 0.0, 0.0], 0.5, false),
            (1, 1.0, [1.0, 1.0, 0.0], 0.75, false),
            (1, 0.75, [1.0, 2.0, 0.0], 0.75, true),
            (2, 0.25, [0.0, 2.0, 1.0], 0.666_666_666_666_666_6, true),
            (2, 0.25, [0.0, 1.0, 2.0], 0.416_666_666_666_666_7, true),
        ];
        for (i, &(label, score, counts, mean, full)) in steps.iter().enumerate() {
            w.push(label, score);
            let mut have = w.counts().to_vec();
            have.resize(3, 0.0);
            assert_eq!(have, counts, "step {i}");
            let m = w.mean_score().expect("not empty");
            assert!((m - mean).abs() < 1e-9, "step {i}: mean {m}, want {mean}");
            assert_eq!(w.is_full(), full, "step {i}");
        }
        assert_eq!(w.len(), 3);
    }
}
