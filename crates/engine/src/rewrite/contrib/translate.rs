//! The translation of one contrib node into its standard chain (DequantizeLinear -> the
//! float operator -> QuantizeLinear, see the parent module): [`Builder`] appends the chain's
//! nodes and any zero-point initializer it needs, with fresh tensor names. Which nodes are
//! translated, and what is reported, is [`super::rewrite`]'s.

use std::collections::HashMap;

use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

use super::node_name;

pub(super) struct Builder {
    pub(super) nodes: Vec<pb::NodeProto>,
    pub(super) initializers: Vec<pb::TensorProto>,
    /// Element type of each initializer, to give an absent output zero point its input's type.
    pub(super) zp_types: HashMap<String, i32>,
    pub(super) opset: i64,
    pub(super) fresh: usize,
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

pub(super) fn int_attr(name: &str, v: i64) -> pb::AttributeProto {
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
    pub(super) fn translate(&mut self, n: &pb::NodeProto) -> Result<String, String> {
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
