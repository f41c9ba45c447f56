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
//! `dequantize_int8_inputs`). Apart from [`parse`], this module works on the protobuf only.

use std::collections::{BTreeMap, HashMap};

use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

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
/// path [`super::Model::load`] takes, for tools and tests that feed tensors directly.
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

struct Builder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    /// Element type of each initializer, to give an absent output zero point its input's type.
    zp_types: HashMap<String, i32>,
    opset: i64,
    fresh: usize,
}

/// Input `i` of `node`, if present (ONNX marks an omitted optional input with "").
fn input(node: &pb::NodeProto, i: usize) -> Option<&str> {
    node.input
        .get(i)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

fn required<'a>(node: &'a pb::NodeProto, i: usize, what: &str) -> Result<&'a str, String> {
    input(node, i).ok_or_else(|| format!("input {i} ({what}) is missing"))
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

fn int_attr(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn float_attr(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

impl Builder {
    fn tmp(&mut self, node: &pb::NodeProto, what: &str) -> String {
        self.fresh += 1;
        format!("{}/lookout.{what}.{}", node_name(node), self.fresh)
    }

    fn push(
        &mut self,
        node: &pb::NodeProto,
        op_type: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<pb::AttributeProto>,
    ) {
        self.nodes.push(pb::NodeProto {
            name: format!("{}/lookout.{op_type}.{}", node_name(node), self.nodes.len()),
            op_type: op_type.into(),
            domain: String::new(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_owned()],
            attribute,
            ..Default::default()
        });
    }

    /// DequantizeLinear(x, scale, zero_point) into a new float tensor.
    fn dq(&mut self, node: &pb::NodeProto, x: &str, scale: &str, zp: Option<&str>) -> String {
        self.dq_axis(node, x, scale, zp, None)
    }

    fn dq_axis(
        &mut self,
        node: &pb::NodeProto,
        x: &str,
        scale: &str,
        zp: Option<&str>,
        axis: Option<i64>,
    ) -> String {
        let out = self.tmp(node, "dq");
        let mut inputs = vec![x, scale];
        inputs.extend(zp);
        let attrs = axis.map(|a| vec![int_attr("axis", a)]).unwrap_or_default();
        self.push(node, "DequantizeLinear", &inputs, &out, attrs);
        out
    }

    /// QuantizeLinear(x, scale, zero_point) into `out`. An absent zero point is 0 of the type
    /// of `like` (the input's zero point), as onnxruntime's kernels read it; uint8 without one.
    fn q(
        &mut self,
        node: &pb::NodeProto,
        x: &str,
        scale: &str,
        zp: Option<&str>,
        like: Option<&str>,
        out: &str,
    ) {
        let zp = match zp {
            Some(z) => z.to_owned(),
            None => {
                let dt = like
                    .and_then(|l| self.zp_types.get(l).copied())
                    .unwrap_or(DataType::Uint8 as i32);
                let name = self.tmp(node, "zero_point");
                self.initializers.push(pb::TensorProto {
                    name: name.clone(),
                    data_type: dt,
                    dims: vec![],
                    int32_data: vec![0],
                    ..Default::default()
                });
                name
            }
        };
        self.push(node, "QuantizeLinear", &[x, scale, &zp], out, vec![]);
    }

    fn output<'a>(&self, node: &'a pb::NodeProto) -> Result<&'a str, String> {
        node.output
            .first()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "it has no output".to_owned())
    }

    /// Rewrites one node; returns the chain it became.
    fn translate(&mut self, n: &pb::NodeProto) -> Result<String, String> {
        let y = self.output(n)?;
        match n.op_type.as_str() {
            "QLinearAdd" | "QLinearMul" => {
                let a = self.dq(
                    n,
                    required(n, 0, "A")?,
                    required(n, 1, "A_scale")?,
                    input(n, 2),
                );
                let bx = self.dq(
                    n,
                    required(n, 3, "B")?,
                    required(n, 4, "B_scale")?,
                    input(n, 5),
                );
                let op = if n.op_type == "QLinearAdd" {
                    "Add"
                } else {
                    "Mul"
                };
                let sum = self.tmp(n, op);
                self.push(n, op, &[&a, &bx], &sum, vec![]);
                self.q(
                    n,
                    &sum,
                    required(n, 6, "C_scale")?,
                    input(n, 7),
                    input(n, 2),
                    y,
                );
                Ok(format!("DequantizeLinear x2 -> {op} -> QuantizeLinear"))
            }
            "QLinearSigmoid" | "QLinearLeakyRelu" => {
                let x = self.dq(
                    n,
                    required(n, 0, "X")?,
                    required(n, 1, "X_scale")?,
                    input(n, 2),
                );
                let (op, attrs) = if n.op_type == "QLinearSigmoid" {
                    ("Sigmoid", vec![])
                } else {
                    (
                        "LeakyRelu",
                        vec![float_attr("alpha", attr_f(n, "alpha", 0.01))],
                    )
                };
                let f = self.tmp(n, op);
                self.push(n, op, &[&x], &f, attrs);
                self.q(
                    n,
                    &f,
                    required(n, 3, "Y_scale")?,
                    input(n, 4),
                    input(n, 2),
                    y,
                );
                Ok(format!("DequantizeLinear -> {op} -> QuantizeLinear"))
            }
            "QLinearConcat" => {
                // Inputs: Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per tensor.
                let rest = n.input.len().saturating_sub(2);
                if rest == 0 || !rest.is_multiple_of(3) {
                    return Err(format!(
                        "expected Y_scale, Y_zero_point and triples (X, X_scale, X_zero_point), got {} inputs",
                        n.input.len()
                    ));
                }
                let mut parts = Vec::new();
                for k in 0..rest / 3 {
                    let i = 2 + 3 * k;
                    parts.push(self.dq(
                        n,
                        required(n, i, "X")?,
                        required(n, i + 1, "X_scale")?,
                        input(n, i + 2),
                    ));
                }
                let cat = self.tmp(n, "Concat");
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                self.push(
                    n,
                    "Concat",
                    &refs,
                    &cat,
                    vec![int_attr("axis", attr_i(n, "axis", 0))],
                );
                self.q(
                    n,
                    &cat,
                    required(n, 0, "Y_scale")?,
                    input(n, 1),
                    input(n, 4),
                    y,
                );
                Ok("DequantizeLinear per input -> Concat -> QuantizeLinear".into())
            }
            "QLinearGlobalAveragePool" | "QLinearAveragePool" => {
                let channels_last = attr_i(n, "channels_last", 0) != 0;
                let mut x = self.dq(
                    n,
                    required(n, 0, "X")?,
                    required(n, 1, "x_scale")?,
                    input(n, 2),
                );
                if channels_last {
                    // Rank 4 (NHWC), the only layout onnxruntime's NHWC transformer produces.
                    let t = self.tmp(n, "nchw");
                    self.push(
                        n,
                        "Transpose",
                        &[&x],
                        &t,
                        vec![ints_attr("perm", &[0, 3, 1, 2])],
                    );
                    x = t;
                }
                if n.op_type == "QLinearAveragePool"
                    && attr_i(n, "ceil_mode", 0) != 0
                    && attr_i(n, "count_include_pad", 0) != 0
                {
                    // onnxruntime's kernel divides a window that runs past the padding (ceil
                    // mode) by the whole kernel; ONNX AveragePool (and onnxruntime's own float
                    // one) by the cells inside the padded input. Refused rather than differ.
                    return Err("ceil_mode = 1 with count_include_pad = 1 averages border windows differently \
                                in onnxruntime's QLinearAveragePool than in ONNX AveragePool; re-export with \
                                ceil_mode = 0 or count_include_pad = 0, or in QDQ format"
                        .into());
                }
                let (op, attrs) = if n.op_type == "QLinearGlobalAveragePool" {
                    ("GlobalAveragePool", vec![])
                } else {
                    let keep = [
                        "auto_pad",
                        "ceil_mode",
                        "count_include_pad",
                        "kernel_shape",
                        "pads",
                        "strides",
                    ];
                    let attrs = n
                        .attribute
                        .iter()
                        .filter(|a| keep.contains(&a.name.as_str()))
                        .cloned()
                        .collect();
                    ("AveragePool", attrs)
                };
                let mut p = self.tmp(n, op);
                self.push(n, op, &[&x], &p, attrs);
                if channels_last {
                    let t = self.tmp(n, "nhwc");
                    self.push(
                        n,
                        "Transpose",
                        &[&p],
                        &t,
                        vec![ints_attr("perm", &[0, 2, 3, 1])],
                    );
                    p = t;
                }
                self.q(
                    n,
                    &p,
                    required(n, 3, "y_scale")?,
                    input(n, 4),
                    input(n, 2),
                    y,
                );
                let layout = if channels_last {
                    " (NHWC, transposed)"
                } else {
                    ""
                };
                Ok(format!(
                    "DequantizeLinear -> {op}{layout} -> QuantizeLinear"
                ))
            }
            "QLinearSoftmax" => {
                // Opset 13 semantics: softmax along `axis`; before 13: along the flattened
                // trailing axes from `axis`. Both agree for the last axis; otherwise the
                // model's opset must match the one the operator was built for.
                let axis = attr_i(n, "axis", -1);
                let op_opset = attr_i(n, "opset", 13);
                if axis != -1 && ((op_opset >= 13) != (self.opset >= 13)) {
                    return Err(format!(
                        "softmax over axis {axis} with opset-{op_opset} semantics in an opset-{} model; \
                         re-export with axis = -1 or in QDQ format",
                        self.opset
                    ));
                }
                let x = self.dq(
                    n,
                    required(n, 0, "X")?,
                    required(n, 1, "X_scale")?,
                    input(n, 2),
                );
                let s = self.tmp(n, "Softmax");
                self.push(n, "Softmax", &[&x], &s, vec![int_attr("axis", axis)]);
                self.q(
                    n,
                    &s,
                    required(n, 3, "y_scale")?,
                    input(n, 4),
                    input(n, 2),
                    y,
                );
                Ok("DequantizeLinear -> Softmax -> QuantizeLinear".into())
            }
            "QLinearMatMul" => {
                let a = self.dq(
                    n,
                    required(n, 0, "a")?,
                    required(n, 1, "a_scale")?,
                    input(n, 2),
                );
                // A per-column scale of B runs along its last axis.
                let bq = self.dq_axis(
                    n,
                    required(n, 3, "b")?,
                    required(n, 4, "b_scale")?,
                    input(n, 5),
                    Some(-1),
                );
                let m = self.tmp(n, "MatMul");
                self.push(n, "MatMul", &[&a, &bq], &m, vec![]);
                self.q(
                    n,
                    &m,
                    required(n, 6, "y_scale")?,
                    input(n, 7),
                    input(n, 2),
                    y,
                );
                Ok("DequantizeLinear x2 -> MatMul -> QuantizeLinear".into())
            }
            "QGemm" => {
                // Inputs: A, a_scale, a_zero_point, B, b_scale, b_zero_point, C (int32 bias
                // with scale a_scale * b_scale and zero point 0), y_scale, y_zero_point.
                // Without y_scale the output is float.
                let trans_a = attr_i(n, "transA", 0);
                let trans_b = attr_i(n, "transB", 0);
                let alpha = attr_f(n, "alpha", 1.0);
                let a_scale = required(n, 1, "a_scale")?;
                let b_scale = required(n, 4, "b_scale")?;
                let a = self.dq(n, required(n, 0, "A")?, a_scale, input(n, 2));
                // A per-column B scale runs along N: axis 1 of B [K, N], axis 0 of B^T [N, K].
                let b_axis = if trans_b != 0 { 0 } else { 1 };
                let bq = self.dq_axis(n, required(n, 3, "B")?, b_scale, input(n, 5), Some(b_axis));
                let mut inputs = vec![a, bq];
                if let Some(c) = input(n, 6) {
                    let cf = self.tmp(n, "bias_f32");
                    self.push(
                        n,
                        "Cast",
                        &[c],
                        &cf,
                        vec![int_attr("to", DataType::Float as i64)],
                    );
                    let ca = self.tmp(n, "bias_a");
                    self.push(n, "Mul", &[&cf, a_scale], &ca, vec![]);
                    let cb = self.tmp(n, "bias");
                    self.push(n, "Mul", &[&ca, b_scale], &cb, vec![]);
                    inputs.push(cb);
                }
                // onnxruntime scales the bias by alpha too: Y = alpha * (A'B' + C), so the
                // float bias C (already a_scale * b_scale * C) gets beta = alpha.
                let attrs = vec![
                    float_attr("alpha", alpha),
                    float_attr("beta", alpha),
                    int_attr("transA", trans_a),
                    int_attr("transB", trans_b),
                ];
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                match input(n, 7) {
                    Some(y_scale) => {
                        let g = self.tmp(n, "Gemm");
                        self.push(n, "Gemm", &refs, &g, attrs);
                        self.q(n, &g, y_scale, input(n, 8), input(n, 2), y);
                        Ok("DequantizeLinear x2 (+ bias) -> Gemm -> QuantizeLinear".into())
                    }
                    None => {
                        self.push(n, "Gemm", &refs, y, attrs);
                        Ok("DequantizeLinear x2 (+ bias) -> Gemm (float output)".into())
                    }
                }
            }
            other => Err(format!("{other} has no translation")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            domain: "com.microsoft".into(),
            name: format!("{op}_node"),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn model(nodes: Vec<pb::NodeProto>) -> pb::ModelProto {
        pb::ModelProto {
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                node: nodes,
                initializer: vec![pb::TensorProto {
                    name: "xz".into(),
                    data_type: DataType::Int8 as i32,
                    int32_data: vec![-3],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ops(m: &pb::ModelProto) -> Vec<String> {
        m.graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.clone())
            .collect()
    }

    #[test]
    fn qlinear_add_becomes_dq_add_q_and_keeps_its_output_name() {
        let mut m = model(vec![node(
            "QLinearAdd",
            &["a", "as", "az", "b", "bs", "bz", "cs", "cz"],
            "c",
        )]);
        let t = rewrite(&mut m).expect("rewritten");
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].op_type.as_str(), t[0].count), ("QLinearAdd", 1));
        assert_eq!(
            ops(&m),
            [
                "DequantizeLinear",
                "DequantizeLinear",
                "Add",
                "QuantizeLinear"
            ]
        );
        let g = m.graph.unwrap();
        let q = g.node.last().unwrap();
        assert_eq!(q.output, ["c"]);
        assert_eq!(q.input[1..], ["cs".to_owned(), "cz".to_owned()]);
        assert!(g.node.iter().all(|n| n.domain.is_empty()));
    }

    #[test]
    fn an_absent_output_zero_point_takes_the_input_zero_point_type() {
        let mut m = model(vec![node("QLinearSigmoid", &["x", "xs", "xz", "ys"], "y")]);
        rewrite(&mut m).expect("rewritten");
        let g = m.graph.unwrap();
        let q = g.node.last().unwrap();
        let zp = g
            .initializer
            .iter()
            .find(|t| t.name == q.input[2])
            .expect("new zero point");
        assert_eq!(zp.data_type, DataType::Int8 as i32);
        assert_eq!(zp.int32_data, [0]);
    }

    #[test]
    fn qgemm_without_y_scale_has_a_float_output_and_a_scaled_bias() {
        let mut node = node("QGemm", &["a", "as", "az", "b", "bs", "bz", "c"], "y");
        node.attribute.push(int_attr("transB", 1));
        let mut m = model(vec![node]);
        rewrite(&mut m).expect("rewritten");
        assert_eq!(
            ops(&m),
            [
                "DequantizeLinear",
                "DequantizeLinear",
                "Cast",
                "Mul",
                "Mul",
                "Gemm"
            ]
        );
        let g = m.graph.unwrap();
        let dq_b = &g.node[1];
        assert_eq!(
            dq_b.attribute[0].i, 0,
            "per-column scale of B^T runs along axis 0"
        );
        assert_eq!(g.node.last().unwrap().output, ["y"]);
    }

    #[test]
    fn a_malformed_node_is_refused_with_its_name() {
        let mut m = model(vec![node("QLinearConcat", &["ys", "yz", "x0"], "y")]);
        let r = rewrite(&mut m).expect_err("refused");
        assert_eq!(r[0].node, "QLinearConcat_node");
        assert!(r[0].why.contains("triples"), "{}", r[0].why);
    }

    #[test]
    fn models_without_contrib_ops_are_untouched() {
        let mut m = model(vec![pb::NodeProto {
            op_type: "Relu".into(),
            input: vec!["x".into()],
            output: vec!["y".into()],
            ..Default::default()
        }]);
        let before = m.clone();
        assert_eq!(rewrite(&mut m).expect("ok"), vec![]);
        assert_eq!(m, before);
    }
}
