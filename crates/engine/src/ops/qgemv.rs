//! `LookoutQLinearGemm`: a quantized model's fully connected layer (the classifier) in
//! integer arithmetic.
//!
//! A QDQ model writes it as `DequantizeLinear(a) -> Gemm(DequantizeLinear(w), bias) ->
//! QuantizeLinear` (a QOperator model's QGemm becomes the same chain in [`crate::rewrite::contrib`]);
//! tract 0.23 runs it as a float matrix product over weights dequantized to f32 (MobileNetV2:
//! 1000 x 1280, 5 MB read from memory per frame). [`crate::rewrite::qdq`] folds the chain into this
//! operator, which keeps the weights as `w - w_zero` in i8 where they fit (1.25 MB; else
//! i16) and computes each output from the exact integer sum:
//!
//! ```text
//! acc[m][n] = sum_k a[m][k] * (w[n][k] - w_zero[n]) - a_zero * sum_k (w[n][k] - w_zero[n])
//! y[m][n]   = saturate(round_half_to_even((acc * a_scale * w_scale[n] + bias[n]) / y_scale) + y_zero)
//! ```
//!
//! (the definition's float sum of products, computed without its rounding). Rows of `a` are
//! usually one (one frame): the kernel is a matrix-vector product, four weight rows at a time
//! with `vpmaddwd` on AVX2, portable code elsewhere.

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use crate::kernels::depthwise::{Isa, QuantOut};
use crate::ops::conv::{floats, ints, konst, per_channel};
use crate::ops::qbinary::{output_quant, scale, zero, Quant};

/// ONNX op type of the folded layer. Inputs: `a, a_scale, a_zero_point, w, w_scale,
/// w_zero_point, y_scale, y_zero_point[, bias]` (constants but `a`; the bias float, one per
/// output); attribute `transB` as Gemm's (`w` is [N, K] when 1, [K, N] when 0).
pub const Q_GEMM: &str = "LookoutQLinearGemm";

/// Registers the operator with tract's ONNX front end.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert(Q_GEMM, build);
}

fn build(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let trans_b = node.get_attr_opt::<i64>("transB")?.unwrap_or(0) != 0;
    Ok((expand(QGemmExpansion { trans_b }), vec![]))
}

#[derive(Debug, Clone)]
struct QGemmExpansion {
    trans_b: bool,
}

impl Expansion for QGemmExpansion {
    fn name(&self) -> StaticName {
        Q_GEMM.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        ensure!(
            inputs.len() == 8 || inputs.len() == 9,
            "quantized Gemm takes 8 or 9 inputs"
        );
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[7].datum_type)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&inputs[3].rank, 2)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        let n_axis = if self.trans_b { 0 } else { 1 };
        s.equals(&outputs[0].shape[1], &inputs[3].shape[n_axis])
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        const OP: &str = "quantized Gemm";
        let a_dt = model.outlet_fact(inputs[0])?.datum_type.unquantized();
        ensure!(
            matches!(a_dt, DatumType::U8 | DatumType::I8),
            "{OP}: input type {a_dt:?} is not uint8 or int8"
        );
        let w = konst(model, inputs[3], "quantized Gemm: the weights")?;
        ensure!(w.rank() == 2, "{OP}: weights of shape {:?}", w.shape());
        let (n, k) = if self.trans_b {
            (w.shape()[0], w.shape()[1])
        } else {
            (w.shape()[1], w.shape()[0])
        };
        let w_vals = ints(&w)?;
        let w_scale = per_channel(
            floats(konst(model, inputs[4], "w_scale")?.as_ref())?,
            n,
            "w_scale",
        )?;
        let w_zero = per_channel(
            ints(konst(model, inputs[5], "w_zero_point")?.as_ref())?,
            n,
            "w_zero_point",
        )?;
        let a_scale = scale(model, inputs[1], "quantized Gemm: a_scale")?;
        let (a_zero, _) = zero(model, inputs[2], "quantized Gemm: a_zero_point")?;
        let (y, y_dt) = output_quant(model, inputs[6], inputs[7], OP)?;
        let bias = match inputs.get(8) {
            Some(b) => per_channel(floats(konst(model, *b, "the bias")?.as_ref())?, n, "bias")?,
            None => vec![0.0; n],
        };
        let weights = Weights::new(&w_vals, n, k, self.trans_b, &w_zero);
        let multipliers: Vec<f32> = w_scale.iter().map(|&s| a_scale * s).collect();
        ensure!(
            multipliers.iter().all(|m| m.is_finite() && *m > 0.0),
            "{OP}: a_scale and w_scale must be finite and positive"
        );
        let op = QGemv {
            a_dt,
            y_dt,
            a_zero,
            weights: Arc::new(weights),
            multipliers: Arc::new(multipliers),
            bias: Arc::new(bias),
            y,
            isa: Isa::detect(),
        };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

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
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const i16) -> std::arch::x86_64::__m256i {
        // SAFETY: as the trait's contract says.
        unsafe { std::arch::x86_64::_mm256_loadu_si256(p.cast()) }
    }
}

impl Lane for i8 {
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
        // SAFETY: both AVX2 variants exist only after run-time detection of AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2Fma | Isa::Avx2Vnni, Rows::I8(rows)) => unsafe { dots_avx2(rows, w.k, a, acc) },
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

/// The typed layer: [M, K] 8-bit in, [M, N] 8-bit out, weights packed in.
#[derive(Debug, Clone, PartialEq)]
pub struct QGemv {
    a_dt: DatumType,
    y_dt: DatumType,
    a_zero: i32,
    weights: Arc<Weights>,
    /// a_scale * w_scale[n]
    multipliers: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    y: Quant,
    isa: Isa,
}

// Compared as tract compares operators: finite floats, bit for bit.
impl Eq for QGemv {}

impl QGemv {
    /// One row of `a` (K values) to one row of the output (N values).
    fn row<A: Copy + Into<i16>, O: QuantOut>(
        &self,
        a: &[A],
        out: &mut [O],
        scratch: &mut (Vec<i16>, Vec<i32>),
    ) {
        let (wide, acc) = scratch;
        wide.clear();
        wide.extend(a.iter().map(|&v| v.into()));
        acc.resize(self.weights.n, 0);
        dots(self.isa, &self.weights, wide, acc);
        for (((o, &s), &rs), (&m, &b)) in out
            .iter_mut()
            .zip(acc.iter())
            .zip(&self.weights.row_sums)
            .zip(self.multipliers.iter().zip(self.bias.iter()))
        {
            let exact = s.wrapping_sub(self.a_zero.wrapping_mul(rs));
            *o = self.y.one(exact as f32 * m + b);
        }
    }

    fn eval_t<A: Datum + Copy + Into<i16>, O: QuantOut + Datum>(
        &self,
        a: &Tensor,
    ) -> TractResult<Tensor> {
        let (m, k) = (a.shape()[0], a.shape()[1]);
        ensure!(
            k == self.weights.k,
            "quantized Gemm: input of {k} values per row for {} weights per output",
            self.weights.k
        );
        let n = self.weights.n;
        // SAFETY: 8-bit integers have no invalid bit patterns; every row is written below.
        let mut t = unsafe { Tensor::uninitialized::<O>(&[m, n])? };
        {
            let mut ov = t.try_as_plain_ram_mut()?;
            let out = ov.as_slice_mut::<O>()?;
            let av = a.try_as_plain_ram()?;
            let x = av.as_slice::<A>()?;
            let mut scratch = (Vec::with_capacity(k), Vec::with_capacity(n));
            for r in 0..m {
                self.row(
                    &x[r * k..(r + 1) * k],
                    &mut out[r * n..(r + 1) * n],
                    &mut scratch,
                );
            }
        }
        Ok(t)
    }
}

impl Op for QGemv {
    fn name(&self) -> StaticName {
        "lookout.QGemm".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "n: {} k: {} kernels: {}",
            self.weights.n,
            self.weights.k,
            self.isa.vector_name()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for QGemv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let a = &inputs[0];
        ensure!(a.rank() == 2, "quantized Gemm: input shape {:?}", a.shape());
        let t = match (self.a_dt, self.y_dt) {
            (DatumType::U8, DatumType::U8) => self.eval_t::<u8, u8>(a)?,
            (DatumType::U8, DatumType::I8) => self.eval_t::<u8, i8>(a)?,
            (DatumType::I8, DatumType::U8) => self.eval_t::<i8, u8>(a)?,
            (DatumType::I8, DatumType::I8) => self.eval_t::<i8, i8>(a)?,
            other => bail!("quantized Gemm: types {other:?}"),
        };
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for QGemv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(s.rank() == 2, "quantized Gemm: input rank {}", s.rank());
        Ok(tvec!(self
            .y_dt
            .fact(&[s[0].clone(), self.weights.n.to_dim()])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64, lo: i32, hi: i32) -> Vec<i32> {
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

    #[test]
    fn outputs_follow_the_definition_within_one_rounding() {
        // The definition in f64 against the operator's exact sum and f32 scaling.
        let (n, k) = (37, 300);
        let w = values(n * k, 11, -128, 127);
        let w_zero = vec![0; n];
        let a = values(k, 13, 0, 255);
        let (a_scale, a_zero, y_scale, y_zero) = (0.021f32, 117, 0.09f32, 120);
        let w_scale: Vec<f32> = (0..n).map(|r| 0.002 + 0.0001 * r as f32).collect();
        let bias: Vec<f32> = (0..n).map(|r| r as f32 * 0.1 - 1.0).collect();
        let op = QGemv {
            a_dt: DatumType::U8,
            y_dt: DatumType::U8,
            a_zero,
            weights: Arc::new(Weights::new(&w, n, k, true, &w_zero)),
            multipliers: Arc::new(w_scale.iter().map(|&s| a_scale * s).collect()),
            bias: Arc::new(bias.clone()),
            y: Quant {
                scale: y_scale,
                zero: y_zero,
                lo: -(y_zero as f32),
                hi: 255.0 - y_zero as f32,
            },
            isa: Isa::detect(),
        };
        let input: Vec<u8> = a.iter().map(|&v| v as u8).collect();
        let t = Tensor::from_shape(&[1, k], &input).unwrap();
        let got = op.eval_t::<u8, u8>(&t).unwrap();
        let got = got.to_plain_array_view::<u8>().unwrap();
        let mut saturated = 0;
        for r in 0..n {
            let sum: f64 = (0..k)
                .map(|c| {
                    (a[c] - a_zero) as f64
                        * a_scale as f64
                        * w[r * k + c] as f64
                        * w_scale[r] as f64
                })
                .sum::<f64>()
                + bias[r] as f64;
            let exact = sum / y_scale as f64 + y_zero as f64;
            let want = exact.round_ties_even().clamp(0.0, 255.0);
            saturated += (want == 0.0 || want == 255.0) as usize;
            let g = got[[0, r]] as f64;
            // Equal, or one step off where the definition is within 1e-3 of a rounding tie.
            let tie = (exact - exact.floor() - 0.5).abs() < 1e-3;
            assert!(
                g == want || (tie && (g - want).abs() == 1.0),
                "output {r}: {g} for {exact}"
            );
        }
        assert!(saturated < n / 2, "the test's scales saturate most outputs");
    }
}
