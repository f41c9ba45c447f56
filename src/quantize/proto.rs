//! Reading and writing ONNX protobuf pieces for the quantizer: initializer values, new
//! tensors and nodes, who reads what, and the graph's constants (initializers and `Constant`
//! nodes).

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
pub(super) const QUANTIZED_OPS: [&str; 8] = [
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "QGemm",
];

/// The quantized operator types a model already has (empty: a float model).
pub fn quantized_ops(graph: &pb::GraphProto) -> Vec<String> {
    let mut found: Vec<String> = graph
        .node
        .iter()
        .filter(|n| QUANTIZED_OPS.contains(&n.op_type.as_str()))
        .map(|n| n.op_type.clone())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// An initializer's values as f32 (float tensors, raw or not).
pub fn floats(t: &pb::TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::Float as i32 {
        return None;
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            return None;
        }
        return Some(
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    Some(t.float_data.clone())
}

pub(super) fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub(super) fn u8_tensor(name: &str, dims: &[i64], values: &[u8]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Uint8 as i32,
        raw_data: values.to_vec(),
        ..Default::default()
    }
}

pub(super) fn i8_tensor(name: &str, dims: &[i64], values: &[i8]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int8 as i32,
        raw_data: values.iter().map(|&v| v as u8).collect(),
        ..Default::default()
    }
}

pub(super) fn i32_tensor(name: &str, dims: &[i64], values: &[i32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int32 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub(super) fn node(
    op: &str,
    name: String,
    input: Vec<String>,
    output: Vec<String>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name,
        input,
        output,
        ..Default::default()
    }
}

pub(super) fn attr_f(n: &pb::NodeProto, name: &str) -> Option<f32> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

/// The graph's constants by name: its initializers, the values of its `Constant` nodes
/// (exporters write a Clip's bounds that way) and `Identity` copies of either (PyTorch's
/// exporter shares equal biases of different layers through one).
pub(super) fn inits(g: &pb::GraphProto) -> HashMap<&str, &pb::TensorProto> {
    let mut m: HashMap<&str, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for n in g
        .node
        .iter()
        .filter(|n| n.op_type == "Constant" && n.domain.is_empty())
    {
        if let (Some(out), Some(t)) = (
            n.output.first(),
            n.attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref()),
        ) {
            m.insert(out.as_str(), t);
        }
    }
    for n in g
        .node
        .iter()
        .filter(|n| n.op_type == "Identity" && n.domain.is_empty())
    {
        if let (Some(out), Some(t)) = (
            n.output.first(),
            n.input.first().and_then(|i| m.get(i.as_str()).copied()),
        ) {
            m.insert(out.as_str(), t);
        }
    }
    m
}

pub(super) fn readers(g: &pb::GraphProto) -> HashMap<&str, Vec<usize>> {
    let mut r: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, n) in g.node.iter().enumerate() {
        for i in &n.input {
            r.entry(i.as_str()).or_default().push(k);
        }
    }
    r
}

pub(super) fn is_graph_output(g: &pb::GraphProto, t: &str) -> bool {
    g.output.iter().any(|o| o.name == t)
}

pub(super) fn drop_unused_initializers(g: &mut pb::GraphProto) {
    let used: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    g.initializer
        .retain(|t| used.contains(&t.name) || g.output.iter().any(|o| o.name == t.name));
}

pub(super) fn node_name(n: &pb::NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}
