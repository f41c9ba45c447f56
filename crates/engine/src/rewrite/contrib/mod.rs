//! onnxruntime's quantized `com.microsoft` contrib operators (the QOperator format), rewritten
//! into standard ONNX operators before tract parses the model.
//!
//! tract implements QLinearConv and QLinearMatMul, but not the contrib operators that
//! `onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QOperator)` and the
//! ONNX Model Zoo `*-int8` models use around them. Each one is defined by onnxruntime as
//! "dequantize the inputs, apply the float operator, quantize the result":
//!
//! ```text
//! C = saturate(round_half_to_even(f(A_scale * (A - A_zero_point), ...) / C_scale) + C_zero_point)
//! ```
//!
//! so [`rewrite`] replaces each node by exactly that chain of standard operators
//! (DequantizeLinear -> the float operator -> QuantizeLinear), which tract then optimises like
//! any QDQ model. Zero points, scales, rounding (half to even) and saturation are those of the
//! standard QuantizeLinear/DequantizeLinear. onnxruntime's own kernels compute some of these
//! with fixed-point multipliers or lookup tables, which can land on the other side of a
//! rounding tie: results agree with onnxruntime's to within one quantization step, and are
//! usually identical (see `tests/quant.rs`).
//!
//! QLinearMatMul is rewritten the same way (tract's own gives `[1, N]` for a 1-D input where
//! ONNX says `[N]`), and so is a DequantizeLinear of an int8 graph input (see
//! `dequantize_int8_inputs`). Apart from [`parse`], this module works on the protobuf only;
//! one node's chain is built in `translate.rs`, and the folds of the resulting QDQ chains onto
//! lookout's operators are `rewrite::qdq`'s.

use std::collections::{BTreeMap, HashMap};

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

mod translate;

use translate::{int_attr, Builder};

/// One operator type that was rewritten, for `lookout check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    pub op_type: String,
    pub count: usize,
    /// The standard operators it became, e.g. "DequantizeLinear -> Add -> QuantizeLinear".
    pub into: String,
}

/// A contrib node that could not be rewritten, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub op_type: String,
    pub node: String,
    pub why: String,
}

/// The contrib operators [`rewrite`] translates.
pub const TRANSLATED: [&str; 10] = [
    "QLinearAdd",
    "QLinearMul",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearConcat",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "QGemm",
    "QLinearSoftmax",
    // Standard ONNX, and tract has it, but its translation keeps the leading axis of a 1-D `A`
    // (output [1, N] where ONNX says [N]; e.g. after a Squeeze in mbv2-cifar10-int8). Used
    // once, as the classifier, in the image models we know; float there costs nothing.
    "QLinearMatMul",
];

/// Rewrites every supported contrib node of `proto`'s main graph in place. Returns the
/// translations applied (one entry per operator type), or the nodes that cannot be rewritten.
pub fn rewrite(proto: &mut pb::ModelProto) -> Result<Vec<Translation>, Vec<Refusal>> {
    let opset = onnx_opset(proto);
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    let inputs = dequantize_int8_inputs(graph);
    if inputs > 0 {
        done.push(Translation {
            op_type: "DequantizeLinear (int8 input)".into(),
            count: inputs,
            into: "Cast -> Sub -> Mul".into(),
        });
    }
    if !graph
        .node
        .iter()
        .any(|n| TRANSLATED.contains(&n.op_type.as_str()))
    {
        return Ok(done);
    }
    let zp_types: HashMap<String, i32> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.data_type))
        .collect();
    let mut b = Builder {
        nodes: Vec::with_capacity(graph.node.len() * 3),
        initializers: Vec::new(),
        zp_types,
        opset,
        fresh: 0,
    };
    let mut applied: BTreeMap<String, Translation> = BTreeMap::new();
    let mut refused = Vec::new();
    for node in std::mem::take(&mut graph.node) {
        if !TRANSLATED.contains(&node.op_type.as_str()) {
            b.nodes.push(node);
            continue;
        }
        match b.translate(&node) {
            Ok(into) => {
                applied
                    .entry(node.op_type.clone())
                    .or_insert_with(|| Translation {
                        op_type: node.op_type.clone(),
                        count: 0,
                        into,
                    })
                    .count += 1;
            }
            Err(why) => {
                refused.push(Refusal {
                    op_type: node.op_type.clone(),
                    node: node_name(&node),
                    why,
                });
                b.nodes.push(node);
            }
        }
    }
    graph.node = b.nodes;
    graph.initializer.extend(b.initializers);
    if refused.is_empty() {
        done.extend(applied.into_values());
        Ok(done)
    } else {
        Err(refused)
    }
}

/// Reads an ONNX file's bytes, rewrites its contrib operators and parses it with tract: the
/// path the daemon's model loading takes, for tools and tests that feed tensors directly.
pub fn parse(
    bytes: &[u8],
) -> tract_onnx::prelude::TractResult<(tract_onnx::prelude::InferenceModel, Vec<Translation>)> {
    use tract_onnx::prelude::Framework;
    let onnx = crate::onnx();
    let mut proto = onnx.proto_model_for_read(&mut &*bytes)?;
    let translations = rewrite(&mut proto).map_err(|refused| {
        anyhow::anyhow!(
            "cannot translate {}",
            refused
                .iter()
                .map(|r| format!("{} at {:?}: {}", r.op_type, r.node, r.why))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    Ok((onnx.parse(&proto, None)?.model, translations))
}

/// The names of the graph inputs declared as tensors of `elem_type`.
pub(super) fn inputs_of_type(graph: &pb::GraphProto, elem_type: DataType) -> Vec<String> {
    use pb::type_proto::Value;
    graph
        .input
        .iter()
        .filter(|i| {
            matches!(
                i.r#type.as_ref().and_then(|t| t.value.as_ref()),
                Some(Value::TensorType(t)) if t.elem_type == elem_type as i32
            )
        })
        .map(|i| i.name.clone())
        .collect()
}

/// tract 0.23 folds DequantizeLinear(int8 graph input) -> Transpose/Reshape... ->
/// QuantizeLinear(uint8), the entry of a TFLite-style model with uint8 activations, into one
/// lookup table that outputs int8 where uint8 is expected, and refuses the model. Such a
/// per-tensor DequantizeLinear is rewritten as Cast -> Sub -> Mul (the same arithmetic: exact
/// in f32 for 8-bit values), which tract leaves alone. Returns how many were rewritten.
fn dequantize_int8_inputs(graph: &mut pb::GraphProto) -> usize {
    let int8_inputs = inputs_of_type(graph, DataType::Int8);
    if int8_inputs.is_empty() {
        return 0;
    }
    let scalar: HashMap<&str, bool> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.dims.iter().product::<i64>() <= 1))
        .collect();
    let mut rewritten = Vec::new();
    for (k, n) in graph.node.iter().enumerate() {
        let per_tensor = n
            .input
            .iter()
            .skip(1)
            .all(|p| scalar.get(p.as_str()) == Some(&true));
        if n.op_type == "DequantizeLinear"
            && n.input.len() >= 2
            && int8_inputs.contains(&n.input[0])
            && per_tensor
        {
            rewritten.push(k);
        }
    }
    let count = rewritten.len();
    for k in rewritten.into_iter().rev() {
        let n = graph.node.remove(k);
        let name = node_name(&n);
        let cast = |input: &str, out: &str| pb::NodeProto {
            name: format!("{name}/lookout.cast.{out}"),
            op_type: "Cast".into(),
            input: vec![input.to_owned()],
            output: vec![out.to_owned()],
            attribute: vec![int_attr("to", DataType::Float as i64)],
            ..Default::default()
        };
        let binary = |op: &str, a: &str, b: &str, out: &str| pb::NodeProto {
            name: format!("{name}/lookout.{op}"),
            op_type: op.into(),
            input: vec![a.to_owned(), b.to_owned()],
            output: vec![out.to_owned()],
            ..Default::default()
        };
        let x = format!("{name}/lookout.x");
        let mut chain = vec![cast(&n.input[0], &x)];
        let centred = match n.input.get(2).filter(|z| !z.is_empty()) {
            Some(zp) => {
                let z = format!("{name}/lookout.zero_point");
                let c = format!("{name}/lookout.centred");
                chain.push(cast(zp, &z));
                chain.push(binary("Sub", &x, &z, &c));
                c
            }
            None => x,
        };
        chain.push(binary("Mul", &centred, &n.input[1], &n.output[0]));
        graph.node.splice(k..k, chain);
    }
    count
}

/// The model's opset of the default (`ai.onnx`) domain; 0 when it declares none.
pub fn onnx_opset(proto: &pb::ModelProto) -> i64 {
    proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0)
}

/// The node's name, or its first output where it has none.
pub fn node_name(node: &pb::NodeProto) -> String {
    if node.name.is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name.clone()
    }
}

#[cfg(test)]
mod tests;
