//! `lookout.QAdd` and `lookout.QMul`: lookout's quantized two-input element-wise operators,
//! each one pass in registers where tract 0.23 makes several over float tensors:
//!
//! - **`LookoutQLinearAdd`** ([`Q_ADD`]): the additions of quantized models (the residual
//!   connections of MobileNet-style networks). A QDQ model writes each as
//!   `DequantizeLinear(a), DequantizeLinear(b) -> Add -> QuantizeLinear` (a QOperator model's
//!   QLinearAdd becomes the same chain in `rewrite::contrib`); `rewrite::qdq` folds the chain
//!   into this operator, which computes the same definition per element in f32:
//!
//!   ```text
//!   y = saturate(round_half_to_even(((a - a_zero) * a_scale + (b - b_zero) * b_scale) / y_scale) + y_zero)
//!   ```
//!
//!   **`LookoutQLinearMul`** is the same with a product, `((a - a_zero) * a_scale) * ((b -
//!   b_zero) * b_scale)` (MobileNetV3's hard-swish, `x * gate`, and squeeze-excitation scaling,
//!   whose per-channel factor is broadcast over each plane).
//!
//! They quantize by dividing by the scale, as ONNX and onnxruntime define QuantizeLinear
//! (tract multiplies by the reciprocal). Inputs of equal shape take the vector path (the
//! kernel [`add`], AVX2 on x86-64 when present, the portable loop elsewhere: the same f32
//! operations in the same order, so the same bytes); a per-channel operand broadcast over
//! planes takes the vector path plane by plane, other broadcasts the portable loop over
//! broadcast views. Broadcasting is this operator's; the per-element arithmetic is the
//! kernel's ([`Params`]), the quantization [`crate::quant::Quant`]'s. The one-input operators
//! (QuantizeLinear, DequantizeLinear, the 256-entry lookup) are in [`super::qunary`].

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::tract_core::broadcast::multi_broadcast;
use tract_onnx::tract_hir::internal::*;

use super::glue::{impl_op, parsed};

use super::names::{Q_ADD, Q_MUL};
use crate::attrs::{output_quant, scale, zero};
use crate::isa::Isa;
use crate::kernels::elementwise::{add, Params};
use crate::quant::{PlaneIn, QuantOut};

/// Registers the operators with tract's ONNX front end.
pub(super) fn register(reg: &mut OnnxOpRegister) {
    reg.insert(Q_ADD, |_, _| parsed(QBinExpansion { mul: false }));
    reg.insert(Q_MUL, |_, _| parsed(QBinExpansion { mul: true }));
}

#[derive(Debug, Clone)]
struct QBinExpansion {
    mul: bool,
}

impl Expansion for QBinExpansion {
    fn name(&self) -> StaticName {
        if self.mul { Q_MUL } else { Q_ADD }.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 8)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[7].datum_type)?;
        s.given_2(&inputs[0].shape, &inputs[3].shape, move |s, a, b| {
            s.equals(&outputs[0].shape, multi_broadcast(&[a, b])?)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let op_name = if self.mul {
            "quantized multiplication"
        } else {
            "quantized addition"
        };
        let eight = |outlet: OutletId, what: &str| -> TractResult<DatumType> {
            let dt = model.outlet_fact(outlet)?.datum_type.unquantized();
            ensure!(
                matches!(dt, DatumType::U8 | DatumType::I8),
                "{op_name}: {what} has type {dt:?}, not uint8 or int8"
            );
            Ok(dt)
        };
        let named = |what: &str| format!("{op_name}: {what}");
        let (y, y_dt) = output_quant(model, inputs[6], inputs[7], op_name)?;
        let op = QBinary {
            a_dt: eight(inputs[0], "a")?,
            b_dt: eight(inputs[3], "b")?,
            y_dt,
            q: Params {
                a_scale: scale(model, inputs[1], &named("a_scale"))?,
                a_zero: zero(model, inputs[2], &named("a_zero_point"))?.0 as f32,
                b_scale: scale(model, inputs[4], &named("b_scale"))?,
                b_zero: zero(model, inputs[5], &named("b_zero_point"))?.0 as f32,
                y,
                mul: self.mul,
            },
            isa: Isa::detect(),
        };
        model.wire_node(prefix, op, &[inputs[0], inputs[3]])
    }
}

/// Where `small` broadcasts over `full` as one value per block of trailing elements (`small`'s
/// shape is `full`'s with its last dimensions 1, and `full` is the output's shape), the block
/// length.
fn per_block(full: &[usize], small: &[usize]) -> Option<usize> {
    if full.len() != small.len() {
        return None;
    }
    let k = small.iter().rposition(|&d| d != 1).map_or(0, |i| i + 1);
    (full[..k] == small[..k]).then(|| full[k..].iter().product())
}

/// [`add`] over `full` in blocks of `inner` elements, block `i` against `small[i]` repeated.
fn by_block<A: PlaneIn, B: PlaneIn, O: QuantOut>(
    isa: Isa,
    q: &Params,
    full: &[A],
    small: &[B],
    out: &mut [O],
    inner: usize,
) {
    if inner == 0 {
        return;
    }
    let mut repeated = Vec::with_capacity(inner);
    for ((x, o), &v) in full.chunks(inner).zip(out.chunks_mut(inner)).zip(small) {
        repeated.clear();
        repeated.resize(inner, v);
        add(isa, q, x, &repeated, o);
    }
}

/// The typed operator: two 8-bit tensors in, one out.
#[derive(Debug, Clone, PartialEq)]
pub struct QBinary {
    a_dt: DatumType,
    b_dt: DatumType,
    y_dt: DatumType,
    q: Params,
    isa: Isa,
}

impl QBinary {
    fn eval_t<A: PlaneIn + Datum, B: PlaneIn + Datum, O: QuantOut + Datum>(
        &self,
        a: &Tensor,
        b: &Tensor,
    ) -> TractResult<Tensor> {
        let shape = multi_broadcast(&[a.shape(), b.shape()])?;
        // SAFETY: 8-bit integers have no invalid bit patterns, and both paths below write
        // every element.
        let mut t = unsafe { Tensor::uninitialized::<O>(&shape)? };
        {
            let mut ov = t.try_as_plain_ram_mut()?;
            let out = ov.as_slice_mut::<O>()?;
            let (av, bv) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
            let (xs, ys) = (av.as_slice::<A>()?, bv.as_slice::<B>()?);
            if a.shape() == b.shape() {
                add(self.isa, &self.q, xs, ys, out);
            } else if let Some(inner) = per_block(a.shape(), b.shape()) {
                // b holds one value per block of `inner` elements of a (a squeeze-excitation's
                // per-channel factor): the vector path, block by block.
                by_block(self.isa, &self.q, xs, ys, out, inner);
            } else if let Some(inner) = per_block(b.shape(), a.shape()) {
                by_block(self.isa, &self.q.swapped(), ys, xs, out, inner);
            } else {
                let (xa, xb) = (a.to_plain_array_view::<A>()?, b.to_plain_array_view::<B>()?);
                let (xa, xb) = (
                    xa.broadcast(&*shape).context("broadcasting a")?,
                    xb.broadcast(&*shape).context("broadcasting b")?,
                );
                for ((o, &x), &y) in out.iter_mut().zip(xa.iter()).zip(xb.iter()) {
                    *o = self
                        .q
                        .one(x.centred(self.q.a_zero), y.centred(self.q.b_zero));
                }
            }
        }
        Ok(t)
    }
}

impl_op!(QBinary + Eq, |op|
    name: if op.q.mul { "lookout.QMul" } else { "lookout.QAdd" },
    info: format!(
        "{:?} {} {:?} -> {:?} kernels: {}",
        op.a_dt,
        if op.q.mul { "*" } else { "+" },
        op.b_dt,
        op.y_dt,
        op.isa.vector_name()
    ),
);

impl EvalOp for QBinary {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        use DatumType::{I8, U8};
        let (a, b) = (&inputs[0], &inputs[1]);
        let t = match (self.a_dt, self.b_dt, self.y_dt) {
            (U8, U8, U8) => self.eval_t::<u8, u8, u8>(a, b)?,
            (U8, U8, I8) => self.eval_t::<u8, u8, i8>(a, b)?,
            (U8, I8, U8) => self.eval_t::<u8, i8, u8>(a, b)?,
            (U8, I8, I8) => self.eval_t::<u8, i8, i8>(a, b)?,
            (I8, U8, U8) => self.eval_t::<i8, u8, u8>(a, b)?,
            (I8, U8, I8) => self.eval_t::<i8, u8, i8>(a, b)?,
            (I8, I8, U8) => self.eval_t::<i8, i8, u8>(a, b)?,
            (I8, I8, I8) => self.eval_t::<i8, i8, i8>(a, b)?,
            other => bail!("quantized {}: types {other:?}", self.name()),
        };
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for QBinary {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = multi_broadcast(&[&*inputs[0].shape, &*inputs[1].shape])?;
        Ok(tvec!(self.y_dt.fact(&*shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::elementwise::tests::{bytes, params};

    #[test]
    fn broadcast_inputs_match_the_same_inputs_expanded() {
        // One value per channel plane (the block path), on either side, and one per
        // spatial position (the portable loop over broadcast views); sums and products.
        let full = bytes(60, 3);
        let ctx = EvalContext::out_of_plan();
        let cases: [(&[usize], usize); 2] = [(&[1, 3, 1, 1], 3), (&[1, 1, 4, 5], 20)];
        for mul in [false, true] {
            let op = QBinary {
                a_dt: DatumType::U8,
                b_dt: DatumType::U8,
                y_dt: DatumType::U8,
                q: Params {
                    mul,
                    ..params(5, false)
                },
                isa: Isa::detect(),
            };
            for (shape, n) in cases {
                let small = bytes(n, 9);
                let expanded: Vec<u8> = (0..60)
                    .map(|i| if n == 3 { small[i / 20] } else { small[i % 20] })
                    .collect();
                let t = |v: &[u8], s: &[usize]| Tensor::from_shape(s, v).unwrap().into_tvalue();
                let big = [1, 3, 4, 5];
                for small_first in [false, true] {
                    let (got, want) = if small_first {
                        (
                            op.eval(&ctx, tvec!(t(&small, shape), t(&full, &big))),
                            op.eval(&ctx, tvec!(t(&expanded, &big), t(&full, &big))),
                        )
                    } else {
                        (
                            op.eval(&ctx, tvec!(t(&full, &big), t(&small, shape))),
                            op.eval(&ctx, tvec!(t(&full, &big), t(&expanded, &big))),
                        )
                    };
                    let (got, want) = (got.unwrap(), want.unwrap());
                    assert_eq!(got[0].shape(), &big);
                    assert_eq!(
                        got[0].to_plain_array_view::<u8>().unwrap(),
                        want[0].to_plain_array_view::<u8>().unwrap(),
                        "mul {mul} shape {shape:?} small first {small_first}"
                    );
                }
            }
        }
    }
}
