//! Scores after the model: softmax for logits models and top-k selection.

/// Numerically stable softmax. Non-finite inputs give a uniform distribution's worth of NaNs
/// nowhere: they are treated as very negative.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![1.0 / logits.len().max(1) as f32; logits.len()];
    }
    let exps: Vec<f32> = logits
        .iter()
        .map(|&v| if v.is_finite() { (v - max).exp() } else { 0.0 })
        .collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` highest scores as (index, score), highest first; ties keep the lower index first.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_table() {
        let cases: &[(&[f32], &[f32])] = &[
            (&[0.0, 0.0], &[0.5, 0.5]),
            (
                &[1.0, 2.0, 3.0],
                &[0.090_030_57, 0.244_728_48, 0.665_240_94],
            ),
            (&[1000.0, 1000.0], &[0.5, 0.5]),
            (&[-1000.0, 0.0], &[0.0, 1.0]),
            (&[f32::NAN, 0.0], &[0.0, 1.0]),
            (&[f32::NAN, f32::NAN], &[0.5, 0.5]),
        ];
        for (input, want) in cases {
            let got = softmax(input);
            for (g, w) in got.iter().zip(*want) {
                assert!(
                    (g - w).abs() < 1e-6,
                    "softmax({input:?}) = {got:?}, want {want:?}"
                );
            }
        }
    }

    #[test]
    fn top_k_orders_and_truncates() {
        assert_eq!(top_k(&[0.1, 0.7, 0.2], 2), vec![(1, 0.7), (2, 0.2)]);
        assert_eq!(top_k(&[0.5, 0.5], 5), vec![(0, 0.5), (1, 0.5)]);
        assert_eq!(top_k(&[], 3), vec![]);
    }
}
