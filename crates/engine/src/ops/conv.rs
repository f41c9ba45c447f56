//! The ONNX front end of lookout's convolutions: how tract builds an operator from each of the
//! op types `rewrite::qdq` renames convolution nodes to ([`Q_DEPTHWISE`], [`F_DEPTHWISE`],
//! [`Q_CONV`], [`F_CONV`]), what shapes and types the node's outputs take (the inference
//! rules), and which typed operator it is wired into: [`super::depthwise`]'s, [`super::qconv`]'s
//! or [`super::fconv`]'s. Weights, biases, scales and zero points must be constants
//! (initializers), which `rewrite::qdq` checks before renaming; the typed operators read them.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::glue::parsed;
use super::names::{F_CONV, F_DEPTHWISE, Q_CONV, Q_DEPTHWISE};
use super::{depthwise, fconv, qconv};
use crate::attrs::{fused_clip, Attrs};

/// Registers the operators with tract's ONNX front end.
pub(super) fn register(reg: &mut OnnxOpRegister) {
    reg.insert(Q_DEPTHWISE, build_quant);
    reg.insert(F_DEPTHWISE, |_, node| build_float(node, true));
    reg.insert(Q_CONV, build_qconv);
    reg.insert(F_CONV, |_, node| build_float(node, false));
}

fn build_qconv(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    parsed(QLinearExpansion {
        attrs: Attrs::from_node(node)?,
        depthwise: false,
    })
}

fn build_quant(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    parsed(QLinearExpansion {
        attrs: Attrs::from_node(node)?,
        depthwise: true,
    })
}

/// The float convolutions' builder: depthwise or group 1, the fused clip from the attributes.
fn build_float(
    node: &NodeProto,
    depthwise: bool,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    parsed(FloatExpansion {
        attrs: Attrs::from_node(node)?,
        clip: fused_clip(node)?,
        depthwise,
    })
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

/// The ONNX-level quantized convolutions (QLinearConv inputs): depthwise
/// ([`super::depthwise::DepthwiseConv`]), or group 1 ([`super::qconv::QConv`]).
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
            depthwise::wire_quant(&self.attrs, prefix, model, inputs)
        } else {
            qconv::wire(&self.attrs, prefix, model, inputs)
        }
    }
}

/// The ONNX-level float convolutions (Conv inputs), with an optional fused clip: depthwise
/// ([`super::depthwise::DepthwiseConv`]) or group 1 ([`super::fconv::Conv`]).
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
            F_CONV.into()
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
        if self.depthwise {
            depthwise::wire_float(&self.attrs, self.clip, prefix, model, inputs)
        } else {
            fconv::wire(&self.attrs, self.clip, prefix, model, inputs)
        }
    }
}
