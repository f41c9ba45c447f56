//! The backbone's graph: finding its feature tensor (the input of the final Gemm/MatMul
//! classifier, or a tensor the user names), cutting the graph there, and writing the cut graph
//! with a new Gemm head and its labels. It edits the original protobuf (contrib operators and
//! all), so the result loads in onnxruntime as well as in lookout; the engine's rewrites happen
//! when lookout loads it, as for any model.

use std::collections::{HashMap, HashSet};

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use super::logistic::Head;
use super::TrainError;

/// Operators a classifier's output may pass through after its last matrix product.
const TAIL_OPS: [&str; 14] = [
    "Add",
    "QLinearAdd",
    "DequantizeLinear",
    "QuantizeLinear",
    "Softmax",
    "LogSoftmax",
    "Sigmoid",
    "Identity",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Cast",
    "Relu",
    "Dropout",
];

/// Matrix products that end a classifier, and whether their first input is quantized.
fn classifier_op(op: &str) -> Option<bool> {
    match op {
        "Gemm" | "MatMul" => Some(false),
        "QLinearMatMul" | "QGemm" => Some(true),
        _ => None,
    }
}

/// Where the features are read: a float tensor, or a quantized one with its scale and zero
/// point (then a DequantizeLinear is added).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// The tensor in the backbone's graph.
    pub tensor: String,
    /// Scale and zero-point tensors of a quantized `tensor`.
    pub quantized: Option<(String, String)>,
    /// How it was found, for the card: the classifier node's name, or "--features".
    pub found_by: String,
}

/// Name of the float feature tensor in the cut graph.
pub const FEATURES: &str = "lookout_features";
/// Name of the trained model's output.
pub const LOGITS: &str = "logits";

/// Decodes an ONNX file.
pub fn decode(bytes: &[u8], path: &std::path::Path) -> Result<pb::ModelProto, TrainError> {
    let proto = pb::ModelProto::decode(bytes).map_err(|e| TrainError::Backbone {
        path: path.to_owned(),
        why: format!("not a valid ONNX file ({e})"),
    })?;
    if proto.graph.as_ref().is_none_or(|g| g.node.is_empty()) {
        return Err(TrainError::Backbone {
            path: path.to_owned(),
            why: "the file holds no graph".into(),
        });
    }
    Ok(proto)
}

fn producers(graph: &pb::GraphProto) -> HashMap<&str, usize> {
    let mut p = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in &n.output {
            p.insert(o.as_str(), i);
        }
    }
    p
}

fn node_label(n: &pb::NodeProto) -> String {
    if n.name.is_empty() {
        format!(
            "{} -> {}",
            n.op_type,
            n.output.first().cloned().unwrap_or_default()
        )
    } else {
        n.name.clone()
    }
}

/// Finds the features: the tensor `named` (a tensor, or a node whose first output it takes),
/// else the input of the last Gemm/MatMul on the way back from the graph's first output.
pub fn find_features(
    graph: &pb::GraphProto,
    named: Option<&str>,
    path: &std::path::Path,
) -> Result<Features, TrainError> {
    let producers = producers(graph);
    let init: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    if let Some(name) = named {
        let tensor = match graph.node.iter().find(|n| n.name == name) {
            Some(n) => n.output.first().cloned().unwrap_or_default(),
            None => name.to_owned(),
        };
        let Some(&p) = producers.get(tensor.as_str()) else {
            return Err(TrainError::NoSuchFeatures {
                path: path.to_owned(),
                name: name.to_owned(),
            });
        };
        let producer = &graph.node[p];
        let quantized = match producer.op_type.as_str() {
            "QuantizeLinear" => match (producer.input.get(1), producer.input.get(2)) {
                (Some(s), Some(z)) => Some((s.clone(), z.clone())),
                _ => None,
            },
            op if op.starts_with("QLinear") || op == "QGemm" => {
                return Err(TrainError::Backbone {
                    path: path.to_owned(),
                    why: format!(
                        "--features {name}: tensor {tensor:?} is the quantized output of {op} node {:?}; name a float tensor (a DequantizeLinear's output) or the quantized input of the classifier's QLinearMatMul",
                        node_label(producer)
                    ),
                })
            }
            _ => None,
        };
        return Ok(Features {
            tensor,
            quantized,
            found_by: "--features".into(),
        });
    }
    let no_classifier = |why: String| TrainError::NoClassifier {
        path: path.to_owned(),
        why,
    };
    let Some(output) = graph.output.first() else {
        return Err(no_classifier("the graph has no output".into()));
    };
    let mut tensor = output.name.as_str();
    for _ in 0..16 {
        let Some(&p) = producers.get(tensor) else {
            return Err(no_classifier(format!(
                "tensor {tensor:?} is not computed by any node"
            )));
        };
        let node = &graph.node[p];
        if let Some(quantized) = classifier_op(&node.op_type) {
            // The data input: the first input that is not a constant (MatMul(W, x) exists).
            let data = node
                .input
                .iter()
                .take(if quantized { 1 } else { 2 })
                .find(|i| !init.contains(i.as_str()))
                .ok_or_else(|| {
                    no_classifier(format!("{} has only constant inputs", node_label(node)))
                })?;
            let quantized = if quantized {
                match (node.input.get(1), node.input.get(2)) {
                    (Some(s), Some(z)) if !s.is_empty() => Some((s.clone(), z.clone())),
                    _ => {
                        return Err(no_classifier(format!(
                            "{} has no input scale",
                            node_label(node)
                        )))
                    }
                }
            } else {
                None
            };
            return Ok(Features {
                tensor: data.clone(),
                quantized,
                found_by: node_label(node),
            });
        }
        if !TAIL_OPS.contains(&node.op_type.as_str()) {
            return Err(no_classifier(format!(
                "the output comes from {} node {:?}, not from a Gemm or MatMul",
                node.op_type,
                node_label(node)
            )));
        }
        match node.input.iter().find(|i| {
            !i.is_empty() && !init.contains(i.as_str()) && producers.contains_key(i.as_str())
        }) {
            Some(i) => tensor = i,
            None => {
                return Err(no_classifier(format!(
                    "{} has no computed input",
                    node_label(node)
                )))
            }
        }
    }
    Err(no_classifier(
        "no Gemm or MatMul within 16 nodes of the output".into(),
    ))
}

fn float_output(
    name: &str,
    dims: Option<Vec<pb::tensor_shape_proto::Dimension>>,
) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: dims.map(|dim| pb::TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_owned(),
        name: name.to_owned(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: vec![output.to_owned()],
        attribute,
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// The backbone cut at `features`: the nodes the feature tensor needs (in their order), the
/// initializers and inputs they read, then a DequantizeLinear (for quantized features) and a
/// Flatten to [N, D] named [`FEATURES`], the graph's one output.
pub fn cut(proto: &pb::ModelProto, features: &Features) -> pb::ModelProto {
    let mut proto = proto.clone();
    let Some(graph) = proto.graph.as_mut() else {
        return proto;
    };
    let producers: HashMap<String, usize> = producers(graph)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let mut keep = vec![false; graph.node.len()];
    let mut stack = vec![features.tensor.clone()];
    if let Some((s, z)) = &features.quantized {
        stack.push(s.clone());
        stack.push(z.clone());
    }
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(t) = stack.pop() {
        if !seen.insert(t.clone()) {
            continue;
        }
        if let Some(&p) = producers.get(&t) {
            if !keep[p] {
                keep[p] = true;
                stack.extend(
                    graph.node[p]
                        .input
                        .iter()
                        .filter(|i| !i.is_empty())
                        .cloned(),
                );
            }
        }
    }
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        keep[index - 1]
    });
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(
            features
                .quantized
                .iter()
                .flat_map(|(s, z)| [s.clone(), z.clone()]),
        )
        .collect();
    let produced: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    // Graph inputs the cut graph no longer reads go too: weights of the dropped head that an
    // IR < 4 model lists as inputs as well as initializers (left in, they would be inputs
    // nobody feeds), and any other input only the head read.
    graph
        .input
        .retain(|i| used.contains(&i.name) || i.name == features.tensor);
    graph.value_info.retain(|v| produced.contains(&v.name));
    let mut x = features.tensor.clone();
    if let Some((s, z)) = &features.quantized {
        let dq = format!("{FEATURES}_dequantized");
        graph.node.push(node(
            "DequantizeLinear",
            "lookout_features_dequantize",
            &[&x, s, z],
            &dq,
            vec![],
        ));
        x = dq;
    }
    graph.node.push(node(
        "Flatten",
        "lookout_features_flatten",
        &[&x],
        FEATURES,
        vec![int_attr("axis", 1)],
    ));
    graph.output = vec![float_output(FEATURES, None)];
    proto
}

/// The batch dimension of the graph's (first non-initializer) input, for the output's shape.
fn batch_dim(graph: &pb::GraphProto) -> pb::tensor_shape_proto::Dimension {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .find(|i| !inits.contains(i.name.as_str()))
        .and_then(|i| match &i.r#type.as_ref()?.value {
            Some(pb::type_proto::Value::TensorType(t)) => t.shape.as_ref()?.dim.first().cloned(),
            _ => None,
        })
        .unwrap_or(pb::tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(pb::tensor_shape_proto::dimension::Value::DimParam(
                "N".into(),
            )),
        })
}

fn float_tensor(name: &str, dims: &[i64], values: &[f64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: values.iter().map(|&v| v as f32).collect(),
        ..Default::default()
    }
}

/// The trained model: `cut` (the backbone to [`FEATURES`]) with a Gemm head (`head` on raw
/// features, the standardisation folded in) writing [`LOGITS`] `[N, classes]`, and the labels
/// as a JSON list in the metadata property `labels` (other label properties removed).
pub fn with_head(
    cut: &pb::ModelProto,
    head: &Head,
    labels: &[String],
    extra: &[(&str, String)],
) -> pb::ModelProto {
    let mut proto = cut.clone();
    proto.metadata_props.retain(|p| {
        !crate::model::labels::METADATA_KEYS
            .iter()
            .any(|k| p.key.eq_ignore_ascii_case(k))
    });
    proto.metadata_props.push(pb::StringStringEntryProto {
        key: "labels".into(),
        value: serde_json::to_string(labels).unwrap_or_default(),
    });
    for (k, v) in extra {
        proto.metadata_props.retain(|p| p.key != *k);
        proto.metadata_props.push(pb::StringStringEntryProto {
            key: (*k).to_owned(),
            value: v.clone(),
        });
    }
    proto.producer_name = "lookout train".into();
    proto.producer_version = env!("CARGO_PKG_VERSION").into();
    let Some(graph) = proto.graph.as_mut() else {
        return proto;
    };
    let (k, d) = (head.classes as i64, head.dim as i64);
    graph
        .initializer
        .push(float_tensor("lookout_head_weight", &[k, d], &head.weights));
    graph
        .initializer
        .push(float_tensor("lookout_head_bias", &[k], &head.bias));
    graph.node.push(node(
        "Gemm",
        "lookout_head",
        &[FEATURES, "lookout_head_weight", "lookout_head_bias"],
        LOGITS,
        vec![int_attr("transB", 1)],
    ));
    let batch = batch_dim(graph);
    let classes = pb::tensor_shape_proto::Dimension {
        denotation: String::new(),
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(k)),
    };
    graph.output = vec![float_output(LOGITS, Some(vec![batch, classes]))];
    proto
}

pub fn encode(proto: &pb::ModelProto) -> Vec<u8> {
    proto.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(nodes: Vec<pb::NodeProto>, inits: &[&str]) -> pb::ModelProto {
        pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: nodes,
                initializer: inits
                    .iter()
                    .map(|n| float_tensor(n, &[1], &[1.0]))
                    .collect(),
                input: vec![float_output("x", None)],
                output: vec![float_output("y", None)],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn path() -> &'static std::path::Path {
        std::path::Path::new("m.onnx")
    }

    #[test]
    fn finds_the_input_of_the_last_gemm_through_the_tail() {
        let m = model(
            vec![
                node("Conv", "conv", &["x", "w"], "c", vec![]),
                node("GlobalAveragePool", "gap", &["c"], "p", vec![]),
                node("Flatten", "flat", &["p"], "f", vec![]),
                node("Gemm", "fc", &["f", "W", "B"], "z", vec![]),
                node("Softmax", "sm", &["z"], "y", vec![]),
            ],
            &["w", "W", "B"],
        );
        let g = m.graph.as_ref().unwrap();
        let f = find_features(g, None, path()).unwrap();
        assert_eq!(
            (f.tensor.as_str(), f.quantized.clone(), f.found_by.as_str()),
            ("f", None, "fc")
        );
        let cut = cut(&m, &f);
        let cg = cut.graph.as_ref().unwrap();
        let ops: Vec<&str> = cg.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Conv", "GlobalAveragePool", "Flatten", "Flatten"]);
        let inits: Vec<&str> = cg.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(inits, ["w"]);
        assert_eq!(cg.output[0].name, FEATURES);
        // Named by node or tensor.
        assert_eq!(find_features(g, Some("gap"), path()).unwrap().tensor, "p");
        assert_eq!(find_features(g, Some("c"), path()).unwrap().tensor, "c");
        let e = find_features(g, Some("nope"), path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn a_quantized_classifier_is_read_through_a_dequantize() {
        let m = model(
            vec![
                node("QLinearConv", "qc", &["x"], "q", vec![]),
                node(
                    "QLinearMatMul",
                    "fc",
                    &["q", "s", "z", "W", "ws", "wz", "ys", "yz"],
                    "o",
                    vec![],
                ),
                node("DequantizeLinear", "dq", &["o", "ys", "yz"], "y", vec![]),
            ],
            &["s", "z", "W", "ws", "wz", "ys", "yz"],
        );
        let f = find_features(m.graph.as_ref().unwrap(), None, path()).unwrap();
        assert_eq!(f.quantized, Some(("s".into(), "z".into())));
        let cut = cut(&m, &f);
        let cg = cut.graph.as_ref().unwrap();
        let ops: Vec<&str> = cg.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["QLinearConv", "DequantizeLinear", "Flatten"]);
        let mut inits: Vec<&str> = cg.initializer.iter().map(|t| t.name.as_str()).collect();
        inits.sort();
        assert_eq!(inits, ["s", "z"]);
    }

    #[test]
    fn weights_listed_as_inputs_of_an_old_model_go_with_the_head() {
        // IR < 4: every initializer is a graph input as well.
        let mut m = model(
            vec![
                node("Conv", "conv", &["x", "w"], "c", vec![]),
                node("Flatten", "flat", &["c"], "f", vec![]),
                node("Gemm", "fc", &["f", "W", "B"], "y", vec![]),
            ],
            &["w", "W", "B"],
        );
        let g = m.graph.as_mut().unwrap();
        for name in ["w", "W", "B"] {
            g.input.push(float_output(name, None));
        }
        let f = find_features(m.graph.as_ref().unwrap(), None, path()).unwrap();
        let cut = cut(&m, &f);
        let cg = cut.graph.as_ref().unwrap();
        let inputs: Vec<&str> = cg.input.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(inputs, ["x", "w"]);
        let inits: Vec<&str> = cg.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(inits, ["w"]);
    }

    #[test]
    fn a_graph_without_a_classifier_asks_for_features() {
        let m = model(vec![node("Conv", "conv", &["x", "w"], "y", vec![])], &["w"]);
        let e = find_features(m.graph.as_ref().unwrap(), None, path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--features") && e.contains("Conv"), "{e}");
    }

    #[test]
    fn the_head_carries_labels_and_a_batch_of_n() {
        let m = model(
            vec![node("Gemm", "fc", &["x", "W", "B"], "y", vec![])],
            &["W", "B"],
        );
        let f = find_features(m.graph.as_ref().unwrap(), None, path()).unwrap();
        let head = Head::zeros(2, 4);
        let out = with_head(&cut(&m, &f), &head, &["a".into(), "b".into()], &[]);
        let labels = out
            .metadata_props
            .iter()
            .find(|p| p.key == "labels")
            .unwrap();
        assert_eq!(labels.value, r#"["a","b"]"#);
        let g = out.graph.unwrap();
        assert_eq!(g.output[0].name, LOGITS);
        assert_eq!(g.node.last().unwrap().op_type, "Gemm");
    }
}
