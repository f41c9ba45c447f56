//! `lookout.QGemm` (ONNX op type `LookoutQLinearGemm`): a quantized model's fully connected
//! layer (the classifier) in integer arithmetic.
//!
//! A QDQ model writes it as `DequantizeLinear(a) -> Gemm(DequantizeLinear(w), bias) ->
//! QuantizeLinear` (a QOperator model's QGemm becomes the same chain in `rewrite::contrib`);
//! tract 0.23 runs it as a float matrix product over weights dequantized to f32 (MobileNetV2:
//! 1000 x 1280, 5 MB read from memory per frame). `rewrite::qdq` folds the chain into this
//! operator, which keeps the weights as `w - w_zero` in i8 where they fit (1.25 MB; else
//! i16) and computes each output from the exact integer sum:
//!
//! ```text
//! acc[m][n] = sum_k a[m][k] * (w[n][k] - w_zero[n]) - a_zero * sum_k (w[n][k] - w_zero[n])
//! y[m][n]   = saturate(round_half_to_even((acc * a_scale * w_scale[n] + bias[n]) / y_scale) + y_zero)
//! ```
//!
//! (the definition's float sum of products, computed without its rounding). The integer sums
//! are the kernel's ([`crate::kernels::qgemv`]: a matrix-vector product, four weight rows at a
//! time with `vpmaddwd` on AVX2, portable code elsewhere); `a_zero`, the scales, the bias and
//! the quantization are applied here.

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::glue::{impl_op, parsed};

use super::names::Q_GEMM;
use crate::attrs::{floats, ints, konst, output_quant, per_channel, scale, zero};
use crate::isa::Isa;
use crate::kernels::qgemv::{dots, Weights};
use crate::quant::{Quant, QuantOut};

/// Registers the operator with tract's ONNX front end.
pub(super) fn register(reg: &mut OnnxOpRegister) {
    reg.insert(Q_GEMM, build);
}

fn build(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let trans_b = node.get_attr_opt::<i64>("transB")?.unwrap_or(0) != 0;
    parsed(QGemmExpansion { trans_b })
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

impl_op!(QGemv + Eq, |op|
    name: "lookout.QGemm",
    info: format!(
        "n: {} k: {} kernels: {}",
        op.weights.n,
        op.weights.k,
        op.isa.vector_name()
    ),
);

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
    use crate::kernels::qgemv::tests::values;

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
