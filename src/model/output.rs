//! What the model's output holds, logits or probabilities: `model.output` when set, else
//! probabilities when the graph already ends in a softmax (a `Softmax` node, or a node named
//! like one, before only shape operators), else logits. Applying softmax twice flattens the
//! scores towards uniform, so the choice and its reason are shown by `lookout check`.

use tract_onnx::pb;

use super::OutputKind;

/// Operators that move values around without changing them, looked through towards the node
/// that computes the output.
const SHAPE_OPS: [&str; 6] = [
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Transpose",
];

/// The node that computes graph output 0, looking through shape operators: (op type, name).
fn producer(graph: &pb::GraphProto) -> Option<(&str, &str)> {
    let mut tensor = graph.output.first()?.name.as_str();
    // Bounded walk: each step goes one node up; a malformed graph with a cycle stops here.
    for _ in 0..graph.node.len().max(1) {
        let node = graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == tensor))?;
        if SHAPE_OPS.contains(&node.op_type.as_str()) {
            tensor = node.input.first()?.as_str();
            continue;
        }
        return Some((node.op_type.as_str(), node.name.as_str()));
    }
    None
}

/// Resolves `model.output`: the kind, and why, for `check`.
pub fn resolve(configured: Option<OutputKind>, graph: &pb::GraphProto) -> (OutputKind, String) {
    if let Some(kind) = configured {
        return (kind, "set by model.output".to_owned());
    }
    match producer(graph) {
        Some(("Softmax", name)) => (
            OutputKind::Probabilities,
            format!("the graph ends in Softmax node {name:?} (model.output not set)"),
        ),
        Some((op, name)) if name.to_ascii_lowercase().contains("softmax") && op != "LogSoftmax" => (
            OutputKind::Probabilities,
            format!("the graph ends in {op} node {name:?}, named as a softmax (model.output not set)"),
        ),
        Some((op, name)) => (
            OutputKind::Logits,
            format!("the graph ends in {op} node {name:?}, not a softmax: softmax is applied (model.output not set)"),
        ),
        None => (
            OutputKind::Logits,
            "the node computing the output was not found: softmax is applied (model.output not set)".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(nodes: &[(&str, &str, &str, &str)]) -> pb::GraphProto {
        let node = nodes
            .iter()
            .map(|&(op, name, input, output)| pb::NodeProto {
                op_type: op.into(),
                name: name.into(),
                input: vec![input.into()],
                output: vec![output.into()],
                ..Default::default()
            })
            .collect();
        pb::GraphProto {
            node,
            output: vec![pb::ValueInfoProto {
                name: "out".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_final_softmax_makes_probabilities_unless_configured() {
        let g = graph(&[
            ("Gemm", "fc", "x", "logits"),
            ("Softmax", "prob", "logits", "p"),
            ("Reshape", "flat", "p", "out"),
        ]);
        let (kind, why) = resolve(None, &g);
        assert_eq!(kind, OutputKind::Probabilities);
        assert!(why.contains("Softmax node \"prob\""), "{why}");
        assert_eq!(resolve(Some(OutputKind::Logits), &g).0, OutputKind::Logits);
        let named = graph(&[
            ("Gemm", "fc", "x", "l"),
            ("Div", "softmax_1/div", "l", "out"),
        ]);
        assert_eq!(resolve(None, &named).0, OutputKind::Probabilities);
        let logits = graph(&[("Gemm", "fc", "x", "out")]);
        let (kind, why) = resolve(None, &logits);
        assert_eq!(kind, OutputKind::Logits);
        assert!(why.contains("Gemm node \"fc\""), "{why}");
        let log = graph(&[("LogSoftmax", "log_softmax", "x", "out")]);
        assert_eq!(resolve(None, &log).0, OutputKind::Logits);
    }
}
