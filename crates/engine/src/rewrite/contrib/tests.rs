//! The contrib translations on small hand-made graphs: the chains they become, the names they
//! keep, the zero points they add, and the nodes they refuse. `tests/quant.rs` runs whole
//! QOperator models.

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
