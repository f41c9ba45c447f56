//! The classifier head: multinomial logistic regression with an L2 penalty and per-sample
//! weights, fitted exactly (L-BFGS to a small gradient), on standardised features.
//!
//! The objective is scikit-learn's `LogisticRegression` (lbfgs, multinomial, intercept not
//! penalised): `C * sum_i w_i * log_loss_i + |W|^2 / 2`, scaled by `1 / (C * sum_i w_i)`
//! so that the stopping tolerance does not depend on the data's size. The tests compare the
//! fitted coefficients with numbers scikit-learn printed for the same tiny data set. Choosing
//! `C`, splitting and the graph are the caller's.

use std::num::NonZeroUsize;

/// Samples as rows: `rows x cols` f32 values, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn new(cols: usize) -> Matrix {
        Matrix {
            rows: 0,
            cols,
            data: Vec::new(),
        }
    }

    pub fn push(&mut self, row: &[f32]) {
        debug_assert_eq!(row.len(), self.cols);
        self.data.extend_from_slice(row);
        self.rows += 1;
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// Per-feature mean and standard deviation of the training rows; a constant feature keeps a
/// standard deviation of 1 (it is centred, not blown up).
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standardizer {
    pub fn fit(x: &Matrix) -> Standardizer {
        let n = x.rows.max(1) as f64;
        let mut mean = vec![0.0; x.cols];
        for i in 0..x.rows {
            for (m, &v) in mean.iter_mut().zip(x.row(i)) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; x.cols];
        for i in 0..x.rows {
            for ((s, &v), m) in var.iter_mut().zip(x.row(i)).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let std = var
            .iter()
            .map(|s| {
                let sd = (s / n).sqrt();
                if sd > 1e-12 {
                    sd
                } else {
                    1.0
                }
            })
            .collect();
        Standardizer { mean, std }
    }

    /// The rows standardised.
    pub fn apply(&self, x: &Matrix) -> Matrix {
        let mut out = x.clone();
        for row in out.data.chunks_mut(x.cols.max(1)) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = ((*v as f64 - m) / s) as f32;
            }
        }
        out
    }
}

/// A fitted linear head: `logits = weights * x + bias`, `weights` `classes x dim` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub classes: usize,
    pub dim: usize,
    pub weights: Vec<f64>,
    pub bias: Vec<f64>,
}

impl Head {
    pub fn zeros(classes: usize, dim: usize) -> Head {
        Head {
            classes,
            dim,
            weights: vec![0.0; classes * dim],
            bias: vec![0.0; classes],
        }
    }

    pub fn logits(&self, x: &[f32]) -> Vec<f64> {
        logits(&self.weights, &self.bias, self.dim, x)
    }

    /// The class with the highest logit (the first of equals).
    pub fn predict(&self, x: &[f32]) -> usize {
        argmax(&self.logits(x))
    }

    /// Softmax probabilities.
    pub fn proba(&self, x: &[f32]) -> Vec<f64> {
        let z = self.logits(x);
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    }

    /// The same head on raw features, with `standardizer` folded in:
    /// `W (x - mean) / std + b = (W / std) x + (b - W mean / std)`.
    pub fn fold(&self, standardizer: &Standardizer) -> Head {
        let mut out = self.clone();
        for k in 0..self.classes {
            let w = &mut out.weights[k * self.dim..(k + 1) * self.dim];
            let mut shift = 0.0;
            for ((w, m), s) in w.iter_mut().zip(&standardizer.mean).zip(&standardizer.std) {
                *w /= s;
                shift += *w * m;
            }
            out.bias[k] -= shift;
        }
        out
    }
}

pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn logits(weights: &[f64], bias: &[f64], dim: usize, x: &[f32]) -> Vec<f64> {
    bias.iter()
        .enumerate()
        .map(|(k, b)| {
            let w = &weights[k * dim..(k + 1) * dim];
            b + w.iter().zip(x).map(|(w, &x)| w * x as f64).sum::<f64>()
        })
        .collect()
}

/// scikit-learn's `class_weight="balanced"`: `n / (classes * count)` per class (0 for a class
/// without samples).
pub fn balanced_weights(y: &[usize], classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for &c in y {
        counts[c] += 1;
    }
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                y.len() as f64 / (classes * c) as f64
            }
        })
        .collect()
}

/// How a head is fitted.
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// Inverse L2 strength (scikit-learn's `C`).
    pub c: f64,
    /// Stop when every gradient component is at most this.
    pub gtol: f64,
    pub max_iter: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            c: 1.0,
            gtol: 1e-6,
            max_iter: 1000,
        }
    }
}

/// Fits a head on rows `x` with classes `y` (each < `classes`) and per-sample weights
/// `sample_weight` (all positive), starting from `init` (a warm start) or zeros. Returns the
/// head and the number of iterations taken.
pub fn fit(
    x: &Matrix,
    y: &[usize],
    sample_weight: &[f64],
    classes: usize,
    opts: FitOptions,
    init: Option<&Head>,
) -> (Head, usize) {
    let dim = x.cols;
    let stride = dim + 1;
    let mut theta = vec![0.0; classes * stride];
    if let Some(h) = init.filter(|h| h.classes == classes && h.dim == dim) {
        for k in 0..classes {
            theta[k * stride..k * stride + dim].copy_from_slice(&h.weights[k * dim..(k + 1) * dim]);
            theta[k * stride + dim] = h.bias[k];
        }
    }
    let total: f64 = sample_weight.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let threads = std::thread::available_parallelism()
        .map(NonZeroUsize::get)
        .unwrap_or(1)
        .min(x.rows.div_ceil(256).max(1));
    let objective = |theta: &[f64], grad: &mut [f64]| -> f64 {
        let chunk = x.rows.div_ceil(threads).max(1);
        let parts: Vec<(f64, Vec<f64>)> = if threads == 1 {
            vec![loss_part(theta, x, y, sample_weight, classes, 0..x.rows)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..x.rows)
                    .step_by(chunk)
                    .map(|start| {
                        let end = (start + chunk).min(x.rows);
                        s.spawn(move || loss_part(theta, x, y, sample_weight, classes, start..end))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("the loss threads do not panic"))
                    .collect()
            })
        };
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        for (l, g) in parts {
            loss += l;
            grad.iter_mut().zip(g).for_each(|(a, b)| *a += b);
        }
        // Penalty on the weights, not the intercepts; everything over C * total.
        let scale = 1.0 / (opts.c * total);
        loss *= opts.c * scale;
        let mut penalty = 0.0;
        for k in 0..classes {
            for j in 0..stride {
                let i = k * stride + j;
                grad[i] *= opts.c * scale;
                if j < dim {
                    penalty += theta[i] * theta[i];
                    grad[i] += theta[i] * scale;
                }
            }
        }
        loss + 0.5 * penalty * scale
    };
    let (theta, iters) = lbfgs(objective, theta, opts.gtol, opts.max_iter);
    let mut head = Head::zeros(classes, dim);
    for k in 0..classes {
        head.weights[k * dim..(k + 1) * dim].copy_from_slice(&theta[k * stride..k * stride + dim]);
        head.bias[k] = theta[k * stride + dim];
    }
    (head, iters)
}

/// The weighted log loss and its gradient (unscaled) over rows `range`.
fn loss_part(
    theta: &[f64],
    x: &Matrix,
    y: &[usize],
    sample_weight: &[f64],
    classes: usize,
    range: std::ops::Range<usize>,
) -> (f64, Vec<f64>) {
    let dim = x.cols;
    let stride = dim + 1;
    let mut grad = vec![0.0; theta.len()];
    let mut loss = 0.0;
    let mut z = vec![0.0; classes];
    for i in range {
        let row = x.row(i);
        for (k, zk) in z.iter_mut().enumerate() {
            let w = &theta[k * stride..k * stride + dim];
            *zk = theta[k * stride + dim]
                + w.iter().zip(row).map(|(w, &v)| w * v as f64).sum::<f64>();
        }
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
        let lse = m + sum.ln();
        let w = sample_weight[i];
        loss += w * (lse - z[y[i]]);
        for k in 0..classes {
            let p = (z[k] - lse).exp();
            let d = w * (p - if k == y[i] { 1.0 } else { 0.0 });
            let g = &mut grad[k * stride..(k + 1) * stride];
            for (g, &v) in g[..dim].iter_mut().zip(row) {
                *g += d * v as f64;
            }
            g[dim] += d;
        }
    }
    (loss, grad)
}

/// Limited-memory BFGS (10 pairs) with a backtracking (Armijo) line search, minimising
/// `f`, which returns the value at `x` and writes the gradient. Stops when the largest
/// gradient component is at most `gtol`, after `max_iter` iterations, or when no step
/// decreases `f` any more. Returns the point and the iterations taken.
fn lbfgs(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    mut x: Vec<f64>,
    gtol: f64,
    max_iter: usize,
) -> (Vec<f64>, usize) {
    const PAIRS: usize = 10;
    let n = x.len();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut history: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    let mut g_new = vec![0.0; n];
    let mut x_new = vec![0.0; n];
    for iter in 0..max_iter {
        if g.iter().all(|v| v.abs() <= gtol) {
            return (x, iter);
        }
        // Two-loop recursion: d = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(q, y)| *q -= a * y);
            alphas.push(a);
        }
        if let Some((s, y, _)) = history.back() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|q| *q *= gamma);
        }
        for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(q, s)| *q += (a - b) * s);
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            history.clear();
            d = g.iter().map(|v| -v).collect();
            slope = dot(&g, &d);
        }
        let mut step = if history.is_empty() {
            1.0 / dot(&g, &g).sqrt().max(1.0)
        } else {
            1.0
        };
        let mut accepted = false;
        for _ in 0..60 {
            x_new
                .iter_mut()
                .zip(&x)
                .zip(&d)
                .for_each(|((n, x), d)| *n = x + step * d);
            let f_new = f(&x_new, &mut g_new);
            if f_new <= fx + 1e-4 * step * slope {
                let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
                let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
                let sy = dot(&s, &y);
                if sy > 1e-16 {
                    if history.len() == PAIRS {
                        history.pop_front();
                    }
                    history.push_back((s, y, 1.0 / sy));
                }
                std::mem::swap(&mut x, &mut x_new);
                std::mem::swap(&mut g, &mut g_new);
                fx = f_new;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            return (x, iter);
        }
    }
    (x, max_iter)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data set scikit-learn 1.9.1 was fitted on (`LogisticRegression(C=..., tol=1e-12,
    /// max_iter=100000)`): 9 points, 2 features, classes of 4, 3 and 2 points.
    fn tiny() -> (Matrix, Vec<usize>) {
        let rows = [
            [0.0, 1.0],
            [1.0, 0.5],
            [2.0, -1.0],
            [0.5, 2.0],
            [-1.0, 0.0],
            [1.5, 1.5],
            [3.0, 0.0],
            [-0.5, -1.5],
            [2.5, 2.0],
        ];
        let mut x = Matrix::new(2);
        for r in rows {
            x.push(&r);
        }
        (x, vec![0, 1, 2, 0, 0, 1, 2, 0, 1])
    }

    /// Compares with scikit-learn's `coef_`, `intercept_` (centred: the multinomial
    /// intercepts are defined up to a common shift) and `predict_proba` of the first two rows.
    fn assert_matches(
        head: &Head,
        x: &Matrix,
        coef: [[f64; 2]; 3],
        icpt: [f64; 3],
        proba: [[f64; 3]; 2],
    ) {
        let mean = head.bias.iter().sum::<f64>() / 3.0;
        for k in 0..3 {
            for (j, want) in coef[k].iter().enumerate() {
                let got = head.weights[k * 2 + j];
                assert!((got - want).abs() < 1e-5, "coef[{k}][{j}] {got} vs {want}");
            }
            let got = head.bias[k] - mean;
            assert!(
                (got - icpt[k]).abs() < 1e-5,
                "intercept[{k}] {got} vs {}",
                icpt[k]
            );
        }
        for (i, want) in proba.iter().enumerate() {
            for (k, (got, want)) in head.proba(x.row(i)).iter().zip(want).enumerate() {
                assert!((got - want).abs() < 1e-5, "proba[{i}][{k}] {got} vs {want}");
            }
        }
    }

    #[test]
    fn matches_scikit_learn_unweighted() {
        let (x, y) = tiny();
        let opts = FitOptions {
            c: 1.0,
            gtol: 1e-10,
            max_iter: 10_000,
        };
        let (head, _) = fit(&x, &y, &[1.0; 9], 3, opts, None);
        assert_matches(
            &head,
            &x,
            [
                [-1.123686925390085, 0.19115198128413116],
                [0.2841282625007494, 0.4931348529359318],
                [0.8395586628893357, -0.684286834220063],
            ],
            [1.3812066372377216, -0.2755646965419308, -1.105641940695791],
            [
                [0.7735999652009554, 0.1995902344397638, 0.026809800359280878],
                [0.43685905983553897, 0.3960917655017039, 0.16704917466275726],
            ],
        );
    }

    #[test]
    fn matches_scikit_learn_balanced_class_weights() {
        let (x, y) = tiny();
        let per_class = balanced_weights(&y, 3);
        assert_eq!(per_class, vec![9.0 / 12.0, 1.0, 9.0 / 6.0]);
        let w: Vec<f64> = y.iter().map(|&c| per_class[c]).collect();
        let opts = FitOptions {
            c: 0.5,
            gtol: 1e-10,
            max_iter: 10_000,
        };
        let (head, _) = fit(&x, &y, &w, 3, opts, None);
        assert_matches(
            &head,
            &x,
            [
                [-0.7901123613020756, 0.08581945700081754],
                [0.15280186882980112, 0.461445397494148],
                [0.6373104924722743, -0.5472648544949655],
            ],
            [
                0.9249926349475038,
                -0.23677311249650917,
                -0.6882195224509946,
            ],
            [
                [0.640454812211444, 0.2917912826071984, 0.06775390518135761],
                [0.3884164264712034, 0.3765457226329351, 0.23503785089586143],
            ],
        );
    }

    #[test]
    fn a_warm_start_reaches_the_same_optimum() {
        let (x, y) = tiny();
        let opts = FitOptions {
            c: 1.0,
            gtol: 1e-10,
            max_iter: 10_000,
        };
        let (cold, _) = fit(&x, &y, &[1.0; 9], 3, opts, None);
        let (near, _) = fit(&x, &y, &[1.0; 9], 3, FitOptions { c: 0.3, ..opts }, None);
        let (warm, _) = fit(&x, &y, &[1.0; 9], 3, opts, Some(&near));
        for (a, b) in cold.weights.iter().zip(&warm.weights) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn folding_the_standardizer_keeps_the_logits() {
        let (x, y) = tiny();
        let st = Standardizer::fit(&x);
        let z = st.apply(&x);
        let (head, _) = fit(&z, &y, &[1.0; 9], 3, FitOptions::default(), None);
        let folded = head.fold(&st);
        for i in 0..x.rows {
            for (a, b) in head.logits(z.row(i)).iter().zip(folded.logits(x.row(i))) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn a_constant_feature_is_centred_not_scaled() {
        let mut x = Matrix::new(2);
        x.push(&[1.0, 5.0]);
        x.push(&[3.0, 5.0]);
        let st = Standardizer::fit(&x);
        assert_eq!(st.mean, vec![2.0, 5.0]);
        assert_eq!(st.std, vec![1.0, 1.0]);
        assert_eq!(st.apply(&x).data, vec![-1.0, 0.0, 1.0, 0.0]);
    }
}
