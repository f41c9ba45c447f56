//! `lookout.QuantizeLinear`, `lookout.DequantizeLinear` and `lookout.QTable`: lookout's
//! quantized one-input element-wise operators, each one pass where tract 0.23 makes one scalar
//! pass or several over float tensors (their loops are [`crate::kernels::elementwise`]'s, the
//! quantization [`Quant`]'s; the two-input operators are in [`super::qbinary`]):
//!
//! - **`LookoutQuantizeLinear`**: every per-tensor QuantizeLinear of a float tensor (the
//!   model's input, and what the float operations between quantized ones produce):
//!   `saturate(round_half_to_even(x / y_scale) + y_zero)`, dividing by the scale as ONNX and
//!   onnxruntime define it (tract multiplies by the reciprocal); AVX2 on x86-64, the portable
//!   loop elsewhere, the same bytes.
//!
//! - **`LookoutDequantizeLinear`**: the per-tensor DequantizeLinear of a computed 8-bit tensor
//!   (what feeds the float operations between quantized ones): `(x - x_zero) * x_scale`, eight
//!   values at a time, the same f32 operations as tract's scalar pass and so the same bits
//!   (which took a third of MobileNetV3-Small's int8 run, and more in a size-optimised build).
//!
//! - **`LookoutQTable`**: a chain from one 8-bit tensor to one 8-bit tensor through a float
//!   function of each element alone (`DequantizeLinear -> HardSigmoid -> QuantizeLinear`,
//!   MobileNetV3's hard-swish gates): an 8-bit input has 256 values, so `rewrite::qdq`
//!   computes the chain's 256 results once, with the f32 operations the unfused chain runs,
//!   and this operator looks each element up.

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::tract_hir::internal::*;

use super::glue::{impl_op, parsed, same_shape_rules, OutputType};

use super::names::{Q_DEQUANTIZE, Q_QUANTIZE, Q_TABLE};
use crate::attrs::{ints, konst, output_quant, scale, zero};
use crate::isa::Isa;
use crate::kernels::elementwise::{dequantize, quantize};
use crate::quant::{PlaneIn, Quant, QuantOut};

/// Registers the operators with tract's ONNX front end.
pub(super) fn register(reg: &mut OnnxOpRegister) {
    reg.insert(Q_QUANTIZE, |_, _| parsed(QuantizeExpansion));
    reg.insert(Q_DEQUANTIZE, |_, _| parsed(DequantizeExpansion));
    reg.insert(Q_TABLE, |_, _| parsed(TableExpansion));
}

#[derive(Debug, Clone)]
struct QuantizeExpansion;

impl Expansion for QuantizeExpansion {
    fn name(&self) -> StaticName {
        Q_QUANTIZE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        same_shape_rules(s, inputs, outputs, 3, OutputType::Input(2))
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let dt = model.outlet_fact(inputs[0])?.datum_type;
        ensure!(
            dt.is_float() || dt.is_integer(),
            "quantization: input type {dt:?} is not a number"
        );
        let mut x = inputs[0];
        if dt != f32::datum_type() {
            // float16 (or int32) into QuantizeLinear: exactly representable in float32 for
            // every value the quantization can tell apart.
            let cast = tract_onnx::tract_core::ops::cast::cast(f32::datum_type());
            x = model.wire_node(format!("{prefix}.to_f32"), cast, &[x])?[0];
        }
        let (q, y_dt) = output_quant(model, inputs[1], inputs[2], "quantization")?;
        let op = Quantize {
            y_dt,
            q,
            isa: Isa::detect(),
        };
        model.wire_node(prefix, op, &[x])
    }
}

/// The typed per-tensor quantization: f32 in, 8 bits out, same shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantize {
    y_dt: DatumType,
    q: Quant,
    isa: Isa,
}

impl Quantize {
    fn eval_t<O: QuantOut + Datum>(&self, x: &Tensor) -> TractResult<Tensor> {
        // SAFETY: 8-bit integers have no invalid bit patterns; quantize writes every element.
        let mut t = unsafe { Tensor::uninitialized::<O>(x.shape())? };
        {
            let mut ov = t.try_as_plain_ram_mut()?;
            let xv = x.try_as_plain_ram()?;
            quantize(
                self.isa,
                &self.q,
                xv.as_slice::<f32>()?,
                ov.as_slice_mut::<O>()?,
            );
        }
        Ok(t)
    }
}

impl_op!(Quantize + Eq, |op|
    name: "lookout.QuantizeLinear",
    info: format!("f32 -> {:?} kernels: {}", op.y_dt, op.isa.vector_name()),
);

impl EvalOp for Quantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let t = match self.y_dt {
            DatumType::U8 => self.eval_t::<u8>(&inputs[0])?,
            DatumType::I8 => self.eval_t::<i8>(&inputs[0])?,
            dt => bail!("quantization: output type {dt:?}"),
        };
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for Quantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.y_dt.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[derive(Debug, Clone)]
struct TableExpansion;

impl Expansion for TableExpansion {
    fn name(&self) -> StaticName {
        Q_TABLE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        same_shape_rules(s, inputs, outputs, 2, OutputType::Input(1))
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x_dt = model.outlet_fact(inputs[0])?.datum_type.unquantized();
        let t = konst(model, inputs[1], "lookup table")?;
        let y_dt = t.datum_type().unquantized();
        ensure!(
            matches!(x_dt, DatumType::U8 | DatumType::I8)
                && matches!(y_dt, DatumType::U8 | DatumType::I8),
            "8-bit lookup: input {x_dt:?} and table {y_dt:?} must be uint8 or int8"
        );
        let values = ints(&t)?;
        ensure!(
            values.len() == 256,
            "8-bit lookup: the table has {} entries, not 256",
            values.len()
        );
        let mut table = [0u8; 256];
        for (e, v) in table.iter_mut().zip(values) {
            *e = v as u8;
        }
        model.wire_node(prefix, QTable { x_dt, y_dt, table }, &[inputs[0]])
    }
}

/// The typed lookup: 8 bits in, 8 bits out, same shape; `table` holds the output bit patterns
/// by input bit pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QTable {
    x_dt: DatumType,
    y_dt: DatumType,
    table: [u8; 256],
}

impl QTable {
    /// `bits` gives an input's bit pattern (the table index), `value` an output from its bit
    /// pattern.
    fn eval_t<X: Datum + Copy, Y: Datum>(
        &self,
        x: &Tensor,
        bits: impl Fn(X) -> u8,
        value: impl Fn(u8) -> Y,
    ) -> TractResult<Tensor> {
        // SAFETY: 8-bit integers have no invalid bit patterns; every element is written below.
        let mut t = unsafe { Tensor::uninitialized::<Y>(x.shape())? };
        {
            let mut ov = t.try_as_plain_ram_mut()?;
            let xv = x.try_as_plain_ram()?;
            for (o, &v) in ov.as_slice_mut::<Y>()?.iter_mut().zip(xv.as_slice::<X>()?) {
                *o = value(self.table[bits(v) as usize]);
            }
        }
        Ok(t)
    }
}

impl_op!(QTable, |op|
    name: "lookout.QTable",
    info: format!("{:?} -> {:?}, 256 entries", op.x_dt, op.y_dt),
);

impl EvalOp for QTable {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        use DatumType::{I8, U8};
        let x = &inputs[0];
        let t = match (x.datum_type().unquantized(), self.y_dt) {
            (U8, U8) => self.eval_t(x, |v: u8| v, |b| b)?,
            (U8, I8) => self.eval_t(x, |v: u8| v, |b| b as i8)?,
            (I8, U8) => self.eval_t(x, |v: i8| v as u8, |b| b)?,
            (I8, I8) => self.eval_t(x, |v: i8| v as u8, |b| b as i8)?,
            other => bail!("8-bit lookup: types {other:?}"),
        };
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for QTable {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.y_dt.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[derive(Debug, Clone)]
struct DequantizeExpansion;

impl Expansion for DequantizeExpansion {
    fn name(&self) -> StaticName {
        Q_DEQUANTIZE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        same_shape_rules(s, inputs, outputs, 3, OutputType::Fixed(f32::datum_type()))
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x_dt = model.outlet_fact(inputs[0])?.datum_type.unquantized();
        let (z, z_dt) = zero(model, inputs[2], "dequantization: x_zero_point")?;
        ensure!(
            matches!(x_dt, DatumType::U8 | DatumType::I8) && z_dt == x_dt,
            "dequantization: x has type {x_dt:?} and x_zero_point {z_dt:?}; both must be uint8 or both int8"
        );
        let op = Dequantize {
            x_dt,
            scale: scale(model, inputs[1], "dequantization: x_scale")?,
            zero: z as f32,
        };
        model.wire_node(prefix, op, &[inputs[0]])
    }
}

/// The typed per-tensor dequantization: 8 bits in, f32 out, same shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Dequantize {
    x_dt: DatumType,
    scale: f32,
    zero: f32,
}

impl Dequantize {
    fn eval_t<X: PlaneIn + Datum>(&self, x: &Tensor) -> TractResult<Tensor> {
        // SAFETY: every f32 bit pattern is valid; dequantize writes every element.
        let mut t = unsafe { Tensor::uninitialized::<f32>(x.shape())? };
        {
            let mut ov = t.try_as_plain_ram_mut()?;
            let xv = x.try_as_plain_ram()?;
            dequantize(
                self.scale,
                self.zero,
                xv.as_slice::<X>()?,
                ov.as_slice_mut::<f32>()?,
            );
        }
        Ok(t)
    }
}

impl_op!(Dequantize + Eq, |op|
    name: "lookout.DequantizeLinear",
    info: format!(
        "{:?} -> f32 scale: {} zero_point: {}",
        op.x_dt, op.scale, op.zero
    ),
);

impl EvalOp for Dequantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let t = match inputs[0].datum_type().unquantized() {
            DatumType::U8 => self.eval_t::<u8>(&inputs[0])?,
            DatumType::I8 => self.eval_t::<i8>(&inputs[0])?,
            dt => bail!("dequantization: input type {dt:?}"),
        };
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for Dequantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::datum_type().fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_maps_every_input_by_its_bit_pattern() {
        // Table: output bit pattern = 255 - input bit pattern.
        let mut table = [0u8; 256];
        for (k, e) in table.iter_mut().enumerate() {
            *e = 255 - k as u8;
        }
        let ctx = EvalContext::out_of_plan();
        let unsigned: Vec<u8> = (0..=255).collect();
        let op = QTable {
            x_dt: DatumType::U8,
            y_dt: DatumType::U8,
            table,
        };
        let x = Tensor::from_shape(&[1, 4, 8, 8], &unsigned).unwrap();
        let y = op.eval(&ctx, tvec!(x.into_tvalue())).unwrap();
        assert_eq!(y[0].shape(), &[1, 4, 8, 8]);
        let got = y[0].to_plain_array_view::<u8>().unwrap();
        assert!(got.iter().zip(&unsigned).all(|(&g, &x)| g == 255 - x));
        // int8 in, int8 out: -128 is bit pattern 0x80, whose entry 0x7f is 127.
        let op = QTable {
            x_dt: DatumType::I8,
            y_dt: DatumType::I8,
            table,
        };
        let x = Tensor::from_shape(&[3], &[-128i8, -1, 0]).unwrap();
        let y = op.eval(&ctx, tvec!(x.into_tvalue())).unwrap();
        let got = y[0].to_plain_array_view::<i8>().unwrap();
        assert_eq!(got.as_slice().unwrap(), [127, 0, -1]);
    }
}
