//! Readers of an operator's ONNX attributes and constant inputs, shared by lookout's
//! operators when they are wired: the convolution attributes ([`Attrs`], [`fused_clip`]),
//! constant tensors as integers or floats ([`konst`], [`ints`], [`floats`], [`per_channel`]),
//! per-tensor scales and zero points ([`scale`], [`zero`], [`output_quant`]) and a
//! QLinearConv's quantization operands ([`q_operands`]).
//!
//! Each returns an error that names the operand when a model's value is not what the operator
//! takes; what the operator does with the values is its own.

use std::sync::Arc;

use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use crate::kernels::depthwise::Geometry;
use crate::quant::Quant;

/// Convolution attributes (strides, dilations, explicit pads), shared by every convolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Attrs {
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// top, left, bottom, right
    pub pads: [usize; 4],
}

impl Attrs {
    /// The geometry of a `kernel` over an `h` x `w` input.
    pub(crate) fn geometry(&self, kernel: [usize; 2], h: usize, w: usize) -> TractResult<Geometry> {
        let (oh, ow) = self.output_hw(kernel, h, w)?;
        Ok(Geometry {
            h,
            w,
            kh: kernel[0],
            kw: kernel[1],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            dil_h: self.dilations[0],
            dil_w: self.dilations[1],
            pad_top: self.pads[0],
            pad_left: self.pads[1],
            oh,
            ow,
        })
    }

    /// Output height and width of a `kernel` over an `h` x `w` input.
    pub(crate) fn output_hw(
        &self,
        kernel: [usize; 2],
        h: usize,
        w: usize,
    ) -> TractResult<(usize, usize)> {
        let [kh, kw] = kernel;
        let too_small = || format_err!("kernel {kh}x{kw} larger than the padded input {h}x{w}");
        let oh = Geometry::output_len(
            h,
            kh,
            self.strides[0],
            self.dilations[0],
            self.pads[0] + self.pads[2],
        )
        .ok_or_else(too_small)?;
        let ow = Geometry::output_len(
            w,
            kw,
            self.strides[1],
            self.dilations[1],
            self.pads[1] + self.pads[3],
        )
        .ok_or_else(too_small)?;
        Ok((oh, ow))
    }

    /// The attributes of a Conv or QLinearConv node (ONNX's defaults where absent).
    pub(crate) fn from_node(node: &NodeProto) -> TractResult<Attrs> {
        let two = |name: &str| -> TractResult<[usize; 2]> {
            match node.get_attr_opt_vec::<i64>(name)? {
                None => Ok([1, 1]),
                Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 1) => {
                    Ok([v[0] as usize, v[1] as usize])
                }
                Some(v) => bail!("{name} {v:?}: expected two positive values"),
            }
        };
        let pads = match node.get_attr_opt_vec::<i64>("pads")? {
            None => [0; 4],
            Some(v) if v.len() == 4 && v.iter().all(|&x| x >= 0) => {
                [v[0] as usize, v[1] as usize, v[2] as usize, v[3] as usize]
            }
            Some(v) => bail!("pads {v:?}: expected four values >= 0"),
        };
        Ok(Attrs {
            strides: two("strides")?,
            dilations: two("dilations")?,
            pads,
        })
    }
}

/// The fused Relu/Clip bounds `rewrite::qdq` wrote (`lookout_min`, `lookout_max`), if any.
pub(crate) fn fused_clip(node: &NodeProto) -> TractResult<Option<(f32, f32)>> {
    Ok(
        match (
            node.get_attr_opt::<f32>("lookout_min")?,
            node.get_attr_opt::<f32>("lookout_max")?,
        ) {
            (None, None) => None,
            (lo, hi) => Some((lo.unwrap_or(f32::NEG_INFINITY), hi.unwrap_or(f32::INFINITY))),
        },
    )
}

pub(crate) fn konst(model: &TypedModel, outlet: OutletId, what: &str) -> TractResult<Arc<Tensor>> {
    model
        .outlet_fact(outlet)?
        .konst
        .clone()
        .ok_or_else(|| format_err!("convolution: {what} must be a constant"))
}

/// Integer values of a u8, i8 or i32 tensor (quantized types read as their storage).
pub(crate) fn ints(t: &Tensor) -> TractResult<Vec<i32>> {
    let view = t.try_as_plain_ram()?;
    Ok(match t.datum_type().unquantized() {
        DatumType::U8 => view.as_slice::<u8>()?.iter().map(|&v| v as i32).collect(),
        DatumType::I8 => view.as_slice::<i8>()?.iter().map(|&v| v as i32).collect(),
        DatumType::I32 => view.as_slice::<i32>()?.to_vec(),
        dt => bail!("expected an 8- or 32-bit integer tensor, found {dt:?}"),
    })
}

pub(crate) fn floats(t: &Tensor) -> TractResult<Vec<f32>> {
    Ok(t.cast_to::<f32>()?
        .try_as_plain_ram()?
        .as_slice::<f32>()?
        .to_vec())
}

/// One value per channel from a scalar or a `channels`-long vector.
pub(crate) fn per_channel<T: Copy>(v: Vec<T>, channels: usize, what: &str) -> TractResult<Vec<T>> {
    match v.len() {
        1 => Ok(vec![v[0]; channels]),
        n if n == channels => Ok(v),
        n => bail!("convolution: {what} has {n} values for {channels} channels"),
    }
}

/// One finite positive per-tensor scale, a constant.
pub(crate) fn scale(model: &TypedModel, outlet: OutletId, what: &str) -> TractResult<f32> {
    let v = floats(konst(model, outlet, what)?.as_ref())?;
    ensure!(
        v.len() == 1 && v[0].is_finite() && v[0] > 0.0,
        "{what} must be one finite positive value, found {v:?}"
    );
    Ok(v[0])
}

/// A per-tensor zero point (a constant) and its type.
pub(crate) fn zero(
    model: &TypedModel,
    outlet: OutletId,
    what: &str,
) -> TractResult<(i32, DatumType)> {
    let t = konst(model, outlet, what)?;
    let v = ints(&t)?;
    ensure!(
        v.len() == 1,
        "{what} must be one value (per tensor), found {}",
        v.len()
    );
    Ok((v[0], t.datum_type().unquantized()))
}

/// The output's quantization (its scale and zero point, constants) and its 8-bit type.
pub(crate) fn output_quant(
    model: &TypedModel,
    scale_outlet: OutletId,
    zero_outlet: OutletId,
    op: &str,
) -> TractResult<(Quant, DatumType)> {
    let (z, dt) = zero(model, zero_outlet, &format!("{op}: y_zero_point"))?;
    let signed = match dt {
        DatumType::U8 => false,
        DatumType::I8 => true,
        dt => bail!("{op}: y_zero_point has type {dt:?}, not uint8 or int8"),
    };
    let y_scale = scale(model, scale_outlet, &format!("{op}: y_scale"))?;
    Ok((Quant::eight_bit(y_scale, z, signed), dt))
}

/// Quantization operands of a QLinearConv node, read from its constant inputs.
pub(crate) struct QOperands {
    pub(crate) x_dt: DatumType,
    pub(crate) x_zero: i32,
    pub(crate) y_dt: DatumType,
    pub(crate) y_zero: f32,
    pub(crate) qmin: f32,
    pub(crate) qmax: f32,
    /// x_scale * w_scale[m] / y_scale
    pub(crate) multipliers: Vec<f32>,
    pub(crate) w_zero: Vec<i32>,
    /// int32, per output channel
    pub(crate) bias: Vec<i32>,
    /// raw weight values
    pub(crate) w: Vec<i32>,
    pub(crate) w_shape: Vec<usize>,
}

pub(crate) fn q_operands(model: &TypedModel, inputs: &[OutletId]) -> TractResult<QOperands> {
    let x_fact = model.outlet_fact(inputs[0])?.clone();
    let x_dt = x_fact.datum_type.unquantized();
    ensure!(
        matches!(x_dt, DatumType::U8 | DatumType::I8),
        "quantized convolution: input type {:?} is not uint8 or int8",
        x_fact.datum_type
    );
    let w = konst(model, inputs[3], "the weights")?;
    let m = *w
        .shape()
        .first()
        .context("quantized convolution: scalar weights")?;
    let x_scale = floats(konst(model, inputs[1], "x_scale")?.as_ref())?;
    let x_zero = ints(konst(model, inputs[2], "x_zero_point")?.as_ref())?;
    let w_scale = per_channel(
        floats(konst(model, inputs[4], "w_scale")?.as_ref())?,
        m,
        "w_scale",
    )?;
    let w_zero = per_channel(
        ints(konst(model, inputs[5], "w_zero_point")?.as_ref())?,
        m,
        "w_zero_point",
    )?;
    let y_scale = floats(konst(model, inputs[6], "y_scale")?.as_ref())?;
    let y_zero_t = konst(model, inputs[7], "y_zero_point")?;
    let y_zero = ints(&y_zero_t)?;
    ensure!(
        x_scale.len() == 1 && x_zero.len() == 1 && y_scale.len() == 1 && y_zero.len() == 1,
        "quantized convolution: x and y must be quantized per tensor"
    );
    let bias = match inputs.get(8) {
        Some(b) => per_channel(ints(konst(model, *b, "the bias")?.as_ref())?, m, "bias")?,
        None => vec![0; m],
    };
    let y_dt = y_zero_t.datum_type().unquantized();
    let (qmin, qmax) = match y_dt {
        DatumType::U8 => (0.0, 255.0),
        DatumType::I8 => (-128.0, 127.0),
        dt => bail!("quantized convolution: output type {dt:?} is not uint8 or int8"),
    };
    let multipliers: Vec<f32> = w_scale
        .iter()
        .map(|&ws| x_scale[0] * ws / y_scale[0])
        .collect();
    ensure!(
        multipliers.iter().all(|m| m.is_finite() && *m > 0.0),
        "quantized convolution: x_scale, w_scale and y_scale must be finite and positive"
    );
    Ok(QOperands {
        x_dt,
        x_zero: x_zero[0],
        y_dt,
        y_zero: y_zero[0] as f32,
        qmin,
        qmax,
        multipliers,
        w_zero,
        bias,
        w: ints(&w)?,
        w_shape: w.shape().to_vec(),
    })
}
