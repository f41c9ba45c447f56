//! ONNX `Softmax`, registered in place of tract's own translation.
//!
//! tract 0.23 declares its Softmax element-wise in its axes mapping. When a QDQ model wraps a
//! softmax in DequantizeLinear -> Softmax -> QuantizeLinear (what `quantize_static` writes for
//! a softmax output, and what lookout's QLinearSoftmax translation produces), tract's
//! DequantizeLinear simplification then treats the chain as element-wise and replaces it with a
//! 256-entry lookup table computed by a softmax over the table itself: every output becomes
//! the same wrong value (1.0 in `tests/quant.rs`'s models). This operator has no axes mapping,
//! so that rewrite leaves it alone; it computes softmax in f32 (max-subtracted, as onnxruntime)
//! with both the opset-13 (one axis) and the older (flattened trailing axes) semantics. It
//! has no kernel of its own: one scalar pass per lane, after the classifier.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::tract_ndarray::{ArrayViewMut1, Axis, Ix2};
use tract_onnx::tract_hir::internal::*;

use super::glue::{impl_op, parsed, same_shape_rules, OutputType};

/// Registers [`OnnxSoftmax`] for the ONNX `Softmax` operator.
pub(super) fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Softmax", build);
}

fn build(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let legacy = ctx.onnx_operator_set_version < 13;
    let axis = node
        .get_attr_opt::<i64>("axis")?
        .unwrap_or(if legacy { 1 } else { -1 });
    parsed(OnnxSoftmax { axis, legacy })
}

/// The inference-time operator: checks types and shapes, then wires [`SoftmaxF32`].
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct OnnxSoftmax {
    axis: i64,
    /// Before opset 13: softmax over all axes from `axis` on, flattened.
    legacy: bool,
}

impl Expansion for OnnxSoftmax {
    fn name(&self) -> StaticName {
        "Softmax".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        same_shape_rules(s, inputs, outputs, 1, OutputType::Input(0))?;
        s.equals(&outputs[0].rank, &inputs[0].rank)
    }

    fn wire(
        &self,
        prefix: &str,
        target: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let fact = target.outlet_fact(inputs[0])?.clone();
        ensure!(
            fact.datum_type == f32::datum_type(),
            "Softmax: input type {:?} is not supported (float32 only)",
            fact.datum_type
        );
        let rank = fact.rank() as i64;
        let axis = if self.axis < 0 {
            self.axis + rank
        } else {
            self.axis
        };
        ensure!(
            (0..rank.max(1)).contains(&axis),
            "Softmax: axis {} out of range for rank {rank}",
            self.axis
        );
        target.wire_node(
            prefix,
            SoftmaxF32 {
                axis: axis as usize,
                legacy: self.legacy,
            },
            inputs,
        )
    }
}

/// The typed operator, evaluated by lookout.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct SoftmaxF32 {
    axis: usize,
    legacy: bool,
}

impl_op!(SoftmaxF32, |op|
    name: "lookout.Softmax",
    info: format!("axis: {} legacy: {}", op.axis, op.legacy),
);

fn softmax_lane(mut lane: ArrayViewMut1<f32>) {
    let max = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    lane.iter_mut().for_each(|x| {
        *x = (*x - max).exp();
        sum += *x;
    });
    lane.iter_mut().for_each(|x| *x /= sum);
}

impl EvalOp for SoftmaxF32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut t = inputs[0].clone().into_tensor();
        let shape: TVec<usize> = t.shape().into();
        {
            let mut a = t.to_plain_array_view_mut::<f32>()?;
            if shape.is_empty() {
                a.iter_mut().for_each(|x| *x = 1.0);
            } else if self.legacy {
                let outer: usize = shape[..self.axis].iter().product();
                let inner: usize = shape[self.axis..].iter().product();
                let mut rows = a
                    .into_shape_with_order((outer, inner))
                    .map_err(|e| format_err!("Softmax: {e}"))?
                    .into_dimensionality::<Ix2>()?;
                rows.axis_iter_mut(Axis(0)).for_each(softmax_lane);
            } else {
                a.lanes_mut(Axis(self.axis))
                    .into_iter()
                    .for_each(softmax_lane);
            }
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for SoftmaxF32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}
