//! lookout's own tract operators, for the convolutions where tract 0.23 has no fast path:
//! depthwise convolutions, quantized (`LookoutQLinearDepthwiseConv`) and float
//! (`LookoutDepthwiseConv`), both computed by [`crate::kernels::depthwise`], and the other quantized
//! convolutions (`LookoutQLinearConv`: group 1, any kernel), computed by [`crate::kernels::qgemm`].
//!
//! [`crate::rewrite::qdq`] renames the ONNX nodes these operators replace before tract parses the model;
//! [`register`] tells tract's ONNX front end how to build them. Weights, biases, scales and
//! zero points must be constants (initializers), which [`crate::rewrite::qdq`] checks before renaming.

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use crate::kernels::depthwise::{self, Finish, Geometry, Isa};
#[cfg(target_arch = "x86_64")]
use crate::kernels::depthwise8;
use crate::kernels::qgemm::{self, Im2col, PackedWeights, Requant};
use crate::team::{self, Shared};

/// ONNX op type of a quantized depthwise convolution (QLinearConv inputs and attributes).
pub const Q_DEPTHWISE: &str = "LookoutQLinearDepthwiseConv";
/// ONNX op type of a float depthwise convolution (Conv inputs and attributes).
pub const F_DEPTHWISE: &str = "LookoutDepthwiseConv";
/// ONNX op type of a quantized group-1 convolution (QLinearConv inputs and attributes).
pub const Q_CONV: &str = "LookoutQLinearConv";

/// Registers the operators with tract's ONNX front end.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert(Q_DEPTHWISE, build_quant);
    reg.insert(F_DEPTHWISE, |_, node| build_float(node, true));
    reg.insert(Q_CONV, build_qconv);
    reg.insert(crate::kernels::fgemm::F_CONV, |_, node| build_float(node, false));
    crate::ops::qbinary::register(reg);
    crate::ops::qunary::register(reg);
    crate::ops::qgemv::register(reg);
}

fn build_qconv(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((
        expand(QLinearExpansion {
            attrs: attrs(node)?,
            depthwise: false,
        }),
        vec![],
    ))
}

/// Convolution attributes shared by both operators.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Attrs {
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// top, left, bottom, right
    pub pads: [usize; 4],
}

impl Attrs {
    /// Output height and width of a `kernel` over an `h` x `w` input.
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
}

fn attrs(node: &NodeProto) -> TractResult<Attrs> {
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

fn build_quant(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((
        expand(QLinearExpansion {
            attrs: attrs(node)?,
            depthwise: true,
        }),
        vec![],
    ))
}

/// The float convolutions' builder: depthwise or group 1, the fused clip from the attributes.
fn build_float(
    node: &NodeProto,
    depthwise: bool,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((
        expand(FloatExpansion {
            attrs: attrs(node)?,
            clip: clip_attrs(node)?,
            depthwise,
        }),
        vec![],
    ))
}

/// The fused Relu/Clip bounds [`crate::rewrite::qdq`] wrote (`lookout_min`, `lookout_max`), if any.
fn clip_attrs(node: &NodeProto) -> TractResult<Option<(f32, f32)>> {
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

/// Output shape rules shared by the expansions: [N, M, OH, OW] from the input and the kernel
/// [M, C / group, KH, KW].
fn shape_rules<'r, 'p: 'r, 's: 'r>(
    attrs: &'s Attrs,
    s: &mut Solver<'r>,
    x: &'p TensorProxy,
    w: &'p TensorProxy,
    y: &'p TensorProxy,
) -> InferenceResult {
    s.equals(&x.rank, 4)?;
    s.equals(&y.rank, 4)?;
    s.equals(&y.shape[0], &x.shape[0])?;
    s.equals(&y.shape[1], &w.shape[0])?;
    s.given_2(&x.shape, &w.shape, move |s, xs, ws| {
        let dims = |d: &TDim| d.to_usize().ok();
        if let (Some(h), Some(wd), Some(kh), Some(kw)) =
            (dims(&xs[2]), dims(&xs[3]), dims(&ws[2]), dims(&ws[3]))
        {
            let (oh, ow) = attrs.output_hw([kh, kw], h, wd)?;
            s.equals(&y.shape[2], oh.to_dim())?;
            s.equals(&y.shape[3], ow.to_dim())?;
        }
        Ok(())
    })
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

/// Checks the kernel tensor [C, 1, KH, KW] against the input's channels.
fn kernel_dims(s: &[usize], channels: Option<usize>) -> TractResult<(usize, usize, usize)> {
    ensure!(
        s.len() == 4 && s[1] == 1,
        "depthwise convolution: kernel shape {s:?} is not [channels, 1, kh, kw]"
    );
    if let Some(c) = channels {
        ensure!(
            s[0] == c,
            "depthwise convolution: {} filters for {c} input channels",
            s[0]
        );
    }
    ensure!(
        depthwise::supports(s[2], s[3]),
        "depthwise convolution: kernel {}x{} has more than {} taps",
        s[2],
        s[3],
        depthwise::MAX_TAPS
    );
    Ok((s[0], s[2], s[3]))
}

/// The ONNX-level quantized convolutions (QLinearConv inputs): depthwise, or group 1.
#[derive(Debug, Clone)]
struct QLinearExpansion {
    attrs: Attrs,
    depthwise: bool,
}

impl Expansion for QLinearExpansion {
    fn name(&self) -> StaticName {
        if self.depthwise { Q_DEPTHWISE } else { Q_CONV }.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        ensure!(
            inputs.len() == 8 || inputs.len() == 9,
            "QLinearConv takes 8 or 9 inputs"
        );
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[7].datum_type)?;
        shape_rules(&self.attrs, s, &inputs[0], &inputs[3], &outputs[0])
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        if self.depthwise {
            self.wire_depthwise(prefix, model, inputs)
        } else {
            self.wire_group1(prefix, model, inputs)
        }
    }
}

impl QLinearExpansion {
    fn wire_depthwise(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let q = q_operands(model, inputs)?;
        let channels = model
            .outlet_fact(inputs[0])?
            .shape
            .get(1)
            .and_then(|d| d.to_usize().ok());
        let (c, kh, kw) = kernel_dims(&q.w_shape, channels)?;
        let taps: Vec<f32> =
            q.w.chunks(kh * kw)
                .zip(&q.w_zero)
                .flat_map(|(k, &z)| k.iter().map(move |&v| (v - z) as f32))
                .collect();
        let op = DepthwiseConv {
            attrs: self.attrs.clone(),
            channels: c,
            kernel: [kh, kw],
            taps: Arc::new(taps),
            bias: Arc::new(q.bias.iter().map(|&b| b as f32).collect()),
            kind: Kind::Quant {
                x_dt: q.x_dt,
                x_zero: q.x_zero as f32,
                y_dt: q.y_dt,
                y_zero: q.y_zero,
                qmin: q.qmin,
                qmax: q.qmax,
                multipliers: Arc::new(q.multipliers),
            },
            isa: Isa::detect(),
        };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// Quantization operands of a QLinearConv node, read from its constant inputs.
struct QOperands {
    x_dt: DatumType,
    x_zero: i32,
    y_dt: DatumType,
    y_zero: f32,
    qmin: f32,
    qmax: f32,
    /// x_scale * w_scale[m] / y_scale
    multipliers: Vec<f32>,
    w_zero: Vec<i32>,
    /// int32, per output channel
    bias: Vec<i32>,
    /// raw weight values
    w: Vec<i32>,
    w_shape: Vec<usize>,
}

fn q_operands(model: &TypedModel, inputs: &[OutletId]) -> TractResult<QOperands> {
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

impl QLinearExpansion {
    fn wire_group1(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let q = q_operands(model, inputs)?;
        let ws = &q.w_shape;
        ensure!(
            ws.len() == 4,
            "quantized convolution: kernel shape {ws:?} is not 2-D"
        );
        let channels = model
            .outlet_fact(inputs[0])?
            .shape
            .get(1)
            .and_then(|d| d.to_usize().ok());
        if let Some(c) = channels {
            ensure!(
                ws[1] == c,
                "quantized convolution: kernel {ws:?} for {c} input channels"
            );
        }
        let (m, k) = (ws[0], ws[1] * ws[2] * ws[3]);
        let isa = Isa::detect();
        let packed = PackedWeights::new(&q.w, m, k, &q.w_zero, isa);
        let requant = (0..m)
            .map(|r| Requant {
                bias: q.bias[r] - q.x_zero * packed.row_sums[r],
                multiplier: q.multipliers[r],
                zero: q.y_zero as i32,
                lo: q.qmin - q.y_zero,
                hi: q.qmax - q.y_zero,
            })
            .collect();
        let op = QConv {
            attrs: self.attrs.clone(),
            c: ws[1],
            kernel: [ws[2], ws[3]],
            weights: Arc::new(packed),
            requant: Arc::new(requant),
            x_dt: q.x_dt,
            x_zero: q.x_zero as i16,
            y_dt: q.y_dt,
            isa,
        };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// The typed quantized convolution: [N, C, H, W] -> [N, M, OH, OW], weights packed in.
#[derive(Debug, Clone, PartialEq)]
pub struct QConv {
    attrs: Attrs,
    c: usize,
    kernel: [usize; 2],
    weights: Arc<PackedWeights>,
    requant: Arc<Vec<Requant>>,
    x_dt: DatumType,
    x_zero: i16,
    y_dt: DatumType,
    isa: Isa,
}

// Compared as tract compares operators: finite floats, bit for bit.
impl Eq for QConv {}

impl QConv {
    fn im2col(&self, h: usize, w: usize) -> TractResult<Im2col> {
        let a = &self.attrs;
        let (oh, ow) = a.output_hw(self.kernel, h, w)?;
        Ok(Im2col {
            c: self.c,
            h,
            w,
            kh: self.kernel[0],
            kw: self.kernel[1],
            stride: a.strides,
            dil: a.dilations,
            pad_top: a.pads[0],
            pad_left: a.pads[1],
            oh,
            ow,
        })
    }

    fn run<I: qgemm::Act, O: depthwise::QuantOut>(
        &self,
        x: &[I],
        out: &mut [O],
        n: usize,
        g: &Im2col,
    ) {
        let (img_in, img_out) = (g.c * g.h * g.w, self.weights.m * g.pixels());
        QSCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            for b in 0..n {
                qgemm::conv(
                    self.isa,
                    &self.weights,
                    g,
                    &x[b * img_in..(b + 1) * img_in],
                    self.x_zero,
                    &self.requant,
                    &mut s,
                    &mut out[b * img_out..(b + 1) * img_out],
                );
            }
        })
    }
}

thread_local! {
    /// Each worker thread's packed-activation buffer, reused from run to run.
    static QSCRATCH: std::cell::RefCell<qgemm::Scratch> = std::cell::RefCell::new(qgemm::Scratch::default());
}

impl Op for QConv {
    fn name(&self) -> StaticName {
        "lookout.QConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "m: {} k: {} kernel: {:?} {:?} kernels: {}",
            self.weights.m,
            self.weights.k,
            self.kernel,
            self.attrs,
            self.weights.kernels(self.isa)
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for QConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(
            shape.len() == 4 && shape[1] == self.c,
            "quantized convolution: input shape {shape:?}"
        );
        let g = self.im2col(shape[2], shape[3])?;
        // SAFETY: 8-bit integers have no invalid bit patterns, and qgemm::conv writes every
        // output value (every channel's every pixel).
        let mut t = unsafe {
            Tensor::uninitialized_dt(self.y_dt, &[shape[0], self.weights.m, g.oh, g.ow])?
        };
        {
            let xv = x.try_as_plain_ram()?;
            let mut ov = t.try_as_plain_ram_mut()?;
            match (self.x_dt, self.y_dt) {
                (DatumType::U8, DatumType::U8) => {
                    self.run(xv.as_slice::<u8>()?, ov.as_slice_mut::<u8>()?, shape[0], &g)
                }
                (DatumType::U8, DatumType::I8) => {
                    self.run(xv.as_slice::<u8>()?, ov.as_slice_mut::<i8>()?, shape[0], &g)
                }
                (DatumType::I8, DatumType::U8) => {
                    self.run(xv.as_slice::<i8>()?, ov.as_slice_mut::<u8>()?, shape[0], &g)
                }
                (DatumType::I8, DatumType::I8) => {
                    self.run(xv.as_slice::<i8>()?, ov.as_slice_mut::<i8>()?, shape[0], &g)
                }
                other => bail!("quantized convolution: types {other:?}"),
            }
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for QConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(
            s.rank() == 4,
            "quantized convolution: input rank {}",
            s.rank()
        );
        let g = self.im2col(s[2].to_usize()?, s[3].to_usize()?)?;
        Ok(tvec!(self.y_dt.fact(&[
            s[0].clone(),
            self.weights.m.to_dim(),
            g.oh.to_dim(),
            g.ow.to_dim()
        ])))
    }

    as_op!();
}

/// The ONNX-level float convolutions (Conv inputs), with an optional fused clip: depthwise
/// ([`DepthwiseConv`]) or group 1 ([`crate::kernels::fgemm::Conv`]).
#[derive(Debug, Clone)]
struct FloatExpansion {
    attrs: Attrs,
    clip: Option<(f32, f32)>,
    depthwise: bool,
}

impl Expansion for FloatExpansion {
    fn name(&self) -> StaticName {
        if self.depthwise {
            F_DEPTHWISE.into()
        } else {
            crate::kernels::fgemm::F_CONV.into()
        }
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        ensure!(
            inputs.len() == 2 || inputs.len() == 3,
            "Conv takes 2 or 3 inputs"
        );
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        shape_rules(&self.attrs, s, &inputs[0], &inputs[1], &outputs[0])
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x_fact = model.outlet_fact(inputs[0])?.clone();
        ensure!(
            x_fact.datum_type == f32::datum_type(),
            "convolution: input type {:?} is not float32",
            x_fact.datum_type
        );
        if !self.depthwise {
            return crate::kernels::fgemm::wire(&self.attrs, self.clip, prefix, model, inputs);
        }
        let channels = x_fact.shape.get(1).and_then(|d| d.to_usize().ok());
        let w = konst(model, inputs[1], "the weights")?;
        let (c, kh, kw) = kernel_dims(w.shape(), channels)?;
        let bias = match inputs.get(2) {
            Some(b) => per_channel(floats(konst(model, *b, "the bias")?.as_ref())?, c, "bias")?,
            None => vec![0.0; c],
        };
        let (min, max) = self.clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let op = DepthwiseConv {
            attrs: self.attrs.clone(),
            channels: c,
            kernel: [kh, kw],
            taps: Arc::new(floats(&w)?),
            bias: Arc::new(bias),
            kind: Kind::Float { min, max },
            isa: Isa::detect(),
        };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Float {
        min: f32,
        max: f32,
    },
    Quant {
        x_dt: DatumType,
        x_zero: f32,
        y_dt: DatumType,
        y_zero: f32,
        qmin: f32,
        qmax: f32,
        /// x_scale * w_scale[c] / y_scale
        multipliers: Arc<Vec<f32>>,
    },
}

/// The typed operator: input [N, C, H, W] -> output [N, C, OH, OW]; weights baked in.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseConv {
    attrs: Attrs,
    channels: usize,
    kernel: [usize; 2],
    /// [C][KH * KW]; quantized: `w - w_zero`.
    taps: Arc<Vec<f32>>,
    /// Per channel; quantized: the int32 bias as float.
    bias: Arc<Vec<f32>>,
    kind: Kind,
    isa: Isa,
}

// Compared as tract compares operators (to merge identical nodes): float fields equal bit for
// bit or not at all, never NaN (they are finite weights, scales and clip bounds).
impl Eq for DepthwiseConv {}

impl DepthwiseConv {
    fn geometry(&self, h: usize, w: usize) -> TractResult<Geometry> {
        self.attrs.geometry(self.kernel, h, w)
    }

    fn run<I: depthwise::PlaneIn + Datum, O: depthwise::QuantOut + Datum>(
        &self,
        x: &[I],
        out: &mut [O],
        outf: &mut [f32],
        n: usize,
        g: &Geometry,
    ) {
        // Eight channels at a time where the CPU has AVX2 (`depthwise8.rs`), the remaining
        // channels plane by plane: each a part of its own, on this thread or shared with an
        // idle worker (`team`).
        let blocks = self.blocks();
        let per_image = blocks + self.channels - blocks * BLOCK8;
        let (out, outf) = (Shared::new(out), Shared::new(outf));
        team::for_each(n * per_image, |u| {
            let (b, j) = (u / per_image, u % per_image);
            if j < blocks {
                self.block(&out, &outf, x, b, j * BLOCK8, g);
            } else {
                self.plane(&out, &outf, x, b, blocks * BLOCK8 + j - blocks, g);
            }
        });
    }

    /// Channel `c` of image `b`, plane by plane ([`depthwise::plane`]).
    fn plane<I: depthwise::PlaneIn + Datum, O: depthwise::QuantOut + Datum>(
        &self,
        out: &Shared<'_, O>,
        outf: &Shared<'_, f32>,
        x: &[I],
        b: usize,
        c: usize,
        g: &Geometry,
    ) {
        let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
        let taps_len = g.kh * g.kw;
        let i = b * self.channels + c;
        let src = &x[i * plane_in..(i + 1) * plane_in];
        let taps = &self.taps[c * taps_len..(c + 1) * taps_len];
        let bias = self.bias[c];
        let outs = (i * plane_out, (i + 1) * plane_out);
        match &self.kind {
            Kind::Float { min, max } => depthwise::plane::<I, O>(
                self.isa,
                g,
                src,
                0.0,
                taps,
                bias,
                Finish::Float {
                    // SAFETY: channel `c` of image `b` is this part's alone.
                    out: unsafe { outf.range(outs.0, outs.1) },
                    min: *min,
                    max: *max,
                },
            ),
            Kind::Quant {
                x_zero,
                y_zero,
                qmin,
                qmax,
                multipliers,
                ..
            } => depthwise::plane::<I, O>(
                self.isa,
                g,
                src,
                *x_zero,
                taps,
                bias,
                Finish::Quant {
                    // SAFETY: as above.
                    out: unsafe { out.range(outs.0, outs.1) },
                    multiplier: multipliers[c],
                    zero: *y_zero as i32,
                    lo: qmin - y_zero,
                    hi: qmax - y_zero,
                },
            ),
        }
    }

    /// How many blocks of eight channels per image run on [`depthwise8`] (where the CPU has
    /// AVX2), from channel 0 on.
    fn blocks(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        if self.isa.avx2() {
            return self.channels / BLOCK8;
        }
        0
    }

    /// Channels `c..c + 8` of image `b` on [`depthwise8`] (only where [`Self::blocks`] > 0).
    #[allow(unused_variables)]
    fn block<I: depthwise::PlaneIn + Datum, O: depthwise::QuantOut + Datum>(
        &self,
        out: &Shared<'_, O>,
        outf: &Shared<'_, f32>,
        x: &[I],
        b: usize,
        c: usize,
        g: &Geometry,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            use depthwise8::Finish8;
            assert!(self.isa.avx2());
            let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
            let taps_len = g.kh * g.kw;
            let i = b * self.channels + c;
            let x = &x[i * plane_in..(i + BLOCK8) * plane_in];
            let taps = &self.taps[c * taps_len..(c + BLOCK8) * taps_len];
            let bias = &self.bias[c..c + BLOCK8];
            let outs = (i * plane_out, (i + BLOCK8) * plane_out);
            // SAFETY: both AVX2 variants are only constructed after run-time detection of
            // AVX2 and FMA (asserted); channels c..c + 8 of image b are this part's alone.
            match &self.kind {
                Kind::Float { min, max } => unsafe {
                    depthwise8::block8::<I, O>(
                        g,
                        x,
                        0.0,
                        taps,
                        bias,
                        Finish8::Float {
                            out: outf.range(outs.0, outs.1),
                            min: *min,
                            max: *max,
                        },
                    )
                },
                Kind::Quant {
                    x_zero,
                    y_zero,
                    qmin,
                    qmax,
                    multipliers,
                    ..
                } => unsafe {
                    depthwise8::block8::<I, O>(
                        g,
                        x,
                        *x_zero,
                        taps,
                        bias,
                        Finish8::Quant {
                            out: out.range(outs.0, outs.1),
                            multipliers: &multipliers[c..c + BLOCK8],
                            zero: *y_zero as i32,
                            lo: qmin - y_zero,
                            hi: qmax - y_zero,
                        },
                    )
                },
            }
        }
    }
}

/// Channels per [`depthwise8`] block.
#[cfg(target_arch = "x86_64")]
const BLOCK8: usize = depthwise8::BLOCK;
#[cfg(not(target_arch = "x86_64"))]
const BLOCK8: usize = 8;

impl Op for DepthwiseConv {
    fn name(&self) -> StaticName {
        match self.kind {
            Kind::Float { .. } => "lookout.DepthwiseConv".into(),
            Kind::Quant { .. } => "lookout.QDepthwiseConv".into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "channels: {} kernel: {:?} {:?} kernels: {}",
            self.channels,
            self.kernel,
            self.attrs,
            self.isa.vector_name()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(
            shape.len() == 4 && shape[1] == self.channels,
            "depthwise convolution: input shape {shape:?}"
        );
        let g = self.geometry(shape[2], shape[3])?;
        let out_shape = [shape[0], self.channels, g.oh, g.ow];
        let xv = x.try_as_plain_ram()?;
        let out = match &self.kind {
            // SAFETY (both): 8-bit integers and f32 have no invalid bit patterns, and `run`
            // writes every output value (each plane's rows, all columns).
            Kind::Float { .. } => {
                let mut t = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
                let mut ov = t.try_as_plain_ram_mut()?;
                let o = ov.as_slice_mut::<f32>()?;
                self.run::<f32, u8>(xv.as_slice::<f32>()?, &mut [], o, shape[0], &g);
                t
            }
            Kind::Quant { x_dt, y_dt, .. } => {
                let mut t = unsafe { Tensor::uninitialized_dt(*y_dt, &out_shape)? };
                let mut ov = t.try_as_plain_ram_mut()?;
                match (x_dt, y_dt) {
                    (DatumType::U8, DatumType::U8) => self.run(
                        xv.as_slice::<u8>()?,
                        ov.as_slice_mut::<u8>()?,
                        &mut [],
                        shape[0],
                        &g,
                    ),
                    (DatumType::U8, DatumType::I8) => self.run(
                        xv.as_slice::<u8>()?,
                        ov.as_slice_mut::<i8>()?,
                        &mut [],
                        shape[0],
                        &g,
                    ),
                    (DatumType::I8, DatumType::U8) => self.run(
                        xv.as_slice::<i8>()?,
                        ov.as_slice_mut::<u8>()?,
                        &mut [],
                        shape[0],
                        &g,
                    ),
                    (DatumType::I8, DatumType::I8) => self.run(
                        xv.as_slice::<i8>()?,
                        ov.as_slice_mut::<i8>()?,
                        &mut [],
                        shape[0],
                        &g,
                    ),
                    other => bail!("quantized depthwise convolution: types {other:?}"),
                }
                t
            }
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for DepthwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(
            s.rank() == 4,
            "depthwise convolution: input rank {}",
            s.rank()
        );
        let (h, w) = (s[2].to_usize()?, s[3].to_usize()?);
        let g = self.geometry(h, w)?;
        let dt = match &self.kind {
            Kind::Float { .. } => f32::datum_type(),
            Kind::Quant { y_dt, .. } => *y_dt,
        };
        Ok(tvec!(dt.fact(&[
            s[0].clone(),
            s[1].clone(),
            g.oh.to_dim(),
            g.ow.to_dim()
        ])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two images of twelve channels: where the CPU has AVX2, channels 0-7 of each image go to
    /// the eight-channel kernel and 8-11 plane by plane; every output equals, bit for bit, what
    /// the plane kernel gives channel by channel.
    #[test]
    fn depthwise_blocks_and_remaining_channels_match_the_plane_kernel() {
        let isa = Isa::detect();
        let (n, channels, h, w) = (2, 12, 7, 7);
        let op = DepthwiseConv {
            attrs: Attrs {
                strides: [1, 1],
                dilations: [1, 1],
                pads: [1, 1, 1, 1],
            },
            channels,
            kernel: [3, 3],
            taps: Arc::new(
                (0..channels * 9)
                    .map(|i| ((i * 13 % 17) as f32 - 8.0) / 3.0)
                    .collect(),
            ),
            bias: Arc::new((0..channels).map(|c| c as f32 * 0.25 - 1.0).collect()),
            kind: Kind::Float {
                min: -1.0,
                max: 6.0,
            },
            isa,
        };
        let g = op.geometry(h, w).expect("geometry");
        let (plane_in, plane_out) = (h * w, g.oh * g.ow);
        let x: Vec<f32> = (0..n * channels * plane_in)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut got = vec![f32::NAN; n * channels * plane_out];
        op.run::<f32, u8>(&x, &mut [], &mut got, n, &g);
        let mut want = vec![0f32; n * channels * plane_out];
        for i in 0..n * channels {
            let c = i % channels;
            depthwise::plane::<f32, u8>(
                isa,
                &g,
                &x[i * plane_in..(i + 1) * plane_in],
                0.0,
                &op.taps[c * 9..(c + 1) * 9],
                op.bias[c],
                Finish::Float {
                    out: &mut want[i * plane_out..(i + 1) * plane_out],
                    min: -1.0,
                    max: 6.0,
                },
            );
        }
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(a.to_bits() == b.to_bits(), "output {i}: {a} vs {b}");
        }
        #[cfg(target_arch = "x86_64")]
        if isa.avx2() {
            // The first eight channels ran as one block.
            assert_eq!(op.blocks(), 1);
        }
    }
}
