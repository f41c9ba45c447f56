//! Tests of the quantizer's graph edits on a small hand-made graph.

use super::*;

fn value(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        ..Default::default()
    }
}

/// input -> Conv(w, b) -> BatchNormalization -> Relu -> Conv(w2) -> Clip(-1, 1) -> output
fn graph() -> pb::GraphProto {
    let mut clip = node(
        "Clip",
        "clip".into(),
        vec!["c2".into(), "lo".into(), "hi".into()],
        vec!["output".into()],
    );
    clip.domain = String::new();
    pb::GraphProto {
        input: vec![value("input")],
        output: vec![value("output")],
        initializer: vec![
            float_tensor("w", &[2, 1, 1, 1], &[1.0, -2.0]),
            float_tensor("b", &[2], &[0.5, 0.0]),
            float_tensor("gamma", &[2], &[2.0, 1.0]),
            float_tensor("beta", &[2], &[0.0, 1.0]),
            float_tensor("mean", &[2], &[0.5, 0.0]),
            float_tensor("var", &[2], &[1.0, 4.0]),
            float_tensor("w2", &[1, 2, 1, 1], &[0.25, -0.5]),
            float_tensor("lo", &[], &[-1.0]),
            float_tensor("hi", &[], &[1.0]),
        ],
        node: vec![
            node(
                "Conv",
                "conv1".into(),
                vec!["input".into(), "w".into(), "b".into()],
                vec!["c1".into()],
            ),
            node(
                "BatchNormalization",
                "bn".into(),
                vec![
                    "c1".into(),
                    "gamma".into(),
                    "beta".into(),
                    "mean".into(),
                    "var".into(),
                ],
                vec!["bn1".into()],
            ),
            node("Relu", "relu".into(), vec!["bn1".into()], vec!["r1".into()]),
            node(
                "Conv",
                "conv2".into(),
                vec!["r1".into(), "w2".into()],
                vec!["c2".into()],
            ),
            clip,
        ],
        ..Default::default()
    }
}

#[test]
fn batch_norm_folds_into_the_conv_before_it() {
    let mut g = graph();
    assert_eq!(fold_batch_norms(&mut g), 1);
    assert!(g.node.iter().all(|n| n.op_type != "BatchNormalization"));
    let conv = &g.node[0];
    assert_eq!(conv.output[0], "bn1");
    let ix = inits(&g);
    let w = floats(ix[conv.input[1].as_str()]).unwrap();
    let b = floats(ix[conv.input[2].as_str()]).unwrap();
    // eps 1e-5: f = gamma / sqrt(var + eps)
    let f0 = 2.0 / (1.0f32 + 1e-5).sqrt();
    let f1 = 1.0 / (4.0f32 + 1e-5).sqrt();
    assert!(
        (w[0] - f0).abs() < 1e-6 && (w[1] + 2.0 * f1).abs() < 1e-6,
        "{w:?}"
    );
    assert!(
        (b[0] - 0.0).abs() < 1e-6 && (b[1] - 1.0).abs() < 1e-6,
        "{b:?}"
    );
    assert!(!ix.contains_key("gamma"), "unused initializers dropped");
}

#[test]
fn the_plan_absorbs_a_relu_but_not_a_clip_below_zero_and_the_qdq_graph_is_ordered() {
    let mut g = graph();
    fold_batch_norms(&mut g);
    let p = plan(&g, &[]);
    assert_eq!(p.convs.len(), 2);
    assert_eq!(p.convs[0].output, "r1");
    assert_eq!(p.convs[0].absorbs.as_deref(), Some("Relu"));
    // Clip(-1, 1) does not start at 0: the Conv's own output is quantized, the Clip stays.
    assert_eq!(p.convs[1].output, "c2");
    assert_eq!(p.convs[1].absorbs, None);
    assert_eq!(p.tensors, ["input", "r1", "c2"]);
    assert_eq!(p.float_ops, [("Clip".to_string(), 1)]);
    assert_eq!(
        plan(&g, &["conv2".into()]).kept,
        [("conv2".to_string(), "--keep-float".to_string())]
    );

    let ranges: HashMap<String, (f32, f32)> = [
        ("input".to_string(), (-1.0, 1.0)),
        ("r1".to_string(), (0.0, 3.0)),
        ("c2".to_string(), (-2.0, 2.0)),
    ]
    .into();
    write_qdq(&mut g, &p, &ranges, true);
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert!(!ops.contains(&"Relu"), "{ops:?}");
    assert_eq!(
        ops.iter().filter(|o| **o == "QuantizeLinear").count(),
        3,
        "{ops:?}"
    );
    // Every input is produced before it is read.
    let mut seen: HashSet<String> = ["input".to_string()].into();
    seen.extend(g.initializer.iter().map(|t| t.name.clone()));
    for n in &g.node {
        for i in &n.input {
            assert!(
                seen.contains(i),
                "{} reads {i} before it is made: {ops:?}",
                n.name
            );
        }
        seen.extend(n.output.iter().cloned());
    }
    // conv1's bias: int32 at input scale x weight scale, per channel.
    let ix = inits(&g);
    let conv1 = g.node.iter().find(|n| n.name == "conv1").unwrap();
    assert_eq!(conv1.output[0], "r1");
    let bdq = g
        .node
        .iter()
        .find(|n| n.output[0] == conv1.input[2])
        .unwrap();
    let bq = ix[bdq.input[0].as_str()];
    assert_eq!(bq.data_type, DataType::Int32 as i32);
    let x_scale = 2.0f32 / 255.0;
    let ws = floats(
        ix[g.node
            .iter()
            .find(|n| n.output[0] == conv1.input[1])
            .unwrap()
            .input[1]
            .as_str()],
    )
    .unwrap();
    let bs = floats(ix[bdq.input[1].as_str()]).unwrap();
    assert_eq!(bs.len(), 2);
    assert!((bs[1] - x_scale * ws[1]).abs() < 1e-9);
    // The graph output stays the float Clip's.
    assert_eq!(g.output[0].name, "output");
    assert!(g
        .node
        .iter()
        .any(|n| n.op_type == "Clip" && n.output[0] == "output"));
}

#[test]
fn weights_and_activations_quantize_as_specified() {
    let (q, s) = quantize_weights(&[1.0, -0.5, 0.25, 0.0, 2.0, -4.0], 2, true);
    assert_eq!(s, [1.0 / 127.0, 4.0 / 127.0]);
    assert_eq!(q, [127, -64, 32, 0, 64, -127]);
    let (_, s) = quantize_weights(&[1.0, -4.0], 2, false);
    assert_eq!(s, [4.0 / 127.0]);
    let (scale, zero) = activation_qparams(0.0, 2.55);
    assert!((scale - 0.01).abs() < 1e-7 && zero == 0, "{scale} {zero}");
    let (scale, zero) = activation_qparams(-1.0, 1.0);
    assert!((scale - 2.0 / 255.0).abs() < 1e-9);
    // -lo / scale is 127.5: either neighbour puts 0 within half a step of exact.
    assert!(zero == 127 || zero == 128, "{zero}");
    // A positive-only range still holds 0.
    assert_eq!(activation_qparams(1.0, 2.55).1, 0);
    assert_eq!(activation_qparams(0.0, 0.0), (1.0, 0));
}

#[test]
fn a_bias_shared_through_identity_is_a_constant_and_a_missing_one_is_named() {
    let mut g = graph();
    // conv1's bias through an Identity of the initializer, as PyTorch exports shared biases.
    g.node.insert(
        0,
        node(
            "Identity",
            "id".into(),
            vec!["b".into()],
            vec!["b_copy".into()],
        ),
    );
    g.node[1].input[2] = "b_copy".into();
    assert_eq!(plan(&g, &[]).convs.len(), 2);
    // A bias computed at run time keeps the Conv in float, saying why.
    g.node[1].input[2] = "input".into();
    let p = plan(&g, &[]);
    assert_eq!(p.convs.len(), 1);
    assert!(p.kept[0].1.contains("bias"), "{:?}", p.kept);
}
