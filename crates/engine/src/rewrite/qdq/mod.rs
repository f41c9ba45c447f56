//! Graph rewrites that put a model's convolutions on fast paths, applied to the ONNX protobuf
//! before tract parses it (after [`super::contrib`]):
//!
//! 1. **QDQ convolutions become integer convolutions.** `quantize_static(...,
//!    quant_format=QuantFormat.QDQ)` writes every quantized convolution as
//!    `DequantizeLinear(x) -> Conv(DequantizeLinear(w), DequantizeLinear(bias)) ->
//!    QuantizeLinear`, which tract 0.23 computes in float around two element-wise passes per
//!    layer. The chain means exactly one `QLinearConv` (onnxruntime fuses it the same way), so
//!    it is replaced by one, which tract runs with integer kernels. A float bias, or an int32
//!    bias whose scale is not `x_scale * w_scale`, is requantized to that scale.
//!    The same folding puts a QDQ model's additions (`DequantizeLinear x2 -> Add ->
//!    QuantizeLinear`) and classifier (`DequantizeLinear -> Gemm -> QuantizeLinear`) on
//!    lookout's 8-bit operators ([`names::Q_ADD`], [`names::Q_MUL`], [`names::Q_GEMM`]), and every
//!    QuantizeLinear of a float tensor (the input's, and those after float operations such
//!    as hard-swish), and every DequantizeLinear of a computed 8-bit tensor (those before
//!    such operations), on a vector pass.
//! 2. **Convolutions get lookout's kernels**: a QLinearConv whose every channel has its own
//!    filter becomes [`names::Q_DEPTHWISE`], a float one [`names::F_DEPTHWISE`] (the depthwise
//!    kernels); any other group-1 QLinearConv becomes [`names::Q_CONV`] (the integer matrix
//!    product), a float Conv [`names::F_CONV`] (the float one). A following Relu or constant
//!    Clip is fused into the float ones.
//! 3. **Quantized weights of float matrix products are dequantized once, here**, instead of on
//!    every run (tract 0.23 re-dequantizes and re-packs a DequantizeLinear of a constant feeding
//!    Gemm/MatMul on each inference).
//!
//! Each rewrite applies only where every operand it bakes in is an initializer of the expected
//! type and shape; anything else is left to tract as it was. The rewrites only rename nodes
//! to the op types of [`names`] (and precompute what those take: lookup tables with
//! [`crate::quant::Quant`], requantized biases); what each operator then does is `ops`'.

use std::collections::HashMap;

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use crate::ops::names;
use crate::rewrite::contrib::{node_name, Translation};

mod conv;
mod eightbit;

use conv::{fold_qdq_convs, onto_kernels};
use eightbit::{
    dequantize_computed, dequantize_matmul_weights, fold_qdq_binary, fold_qdq_gemms,
    fold_qdq_tables, quantize_floats,
};

/// Applies the rewrites to `graph`; returns what was rewritten, for `lookout check`.
pub fn rewrite(graph: &mut pb::GraphProto) -> Vec<Translation> {
    let mut done = Vec::new();
    let mut note = |op_type: &str, count: usize, into: &str| {
        if count > 0 {
            done.push(Translation {
                op_type: op_type.into(),
                count,
                into: into.into(),
            })
        }
    };
    let folded = fold_qdq_convs(graph);
    note(
        "DequantizeLinear -> Conv -> QuantizeLinear",
        folded,
        "QLinearConv (integer arithmetic)",
    );
    let adds = fold_qdq_binary(graph, "Add");
    note(
        "DequantizeLinear x2 -> Add -> QuantizeLinear",
        adds,
        "lookout.QAdd (8-bit in and out, one pass)",
    );
    let muls = fold_qdq_binary(graph, "Mul");
    note(
        "DequantizeLinear x2 -> Mul -> QuantizeLinear",
        muls,
        "lookout.QMul (8-bit in and out, one pass)",
    );
    let gemms = fold_qdq_gemms(graph);
    note(
        "DequantizeLinear x2 -> Gemm -> QuantizeLinear",
        gemms,
        "lookout.QGemm (integer arithmetic)",
    );
    let tables = fold_qdq_tables(graph);
    note(
        "DequantizeLinear -> HardSigmoid -> QuantizeLinear",
        tables,
        "lookout.QTable (one 256-entry lookup)",
    );
    let inputs = quantize_floats(graph);
    note(
        "QuantizeLinear (float to 8 bits)",
        inputs,
        "lookout.QuantizeLinear (one vector pass)",
    );
    // The folds leave the DequantizeLinear nodes they bypassed; gone first, so that only
    // those something still reads are counted and rewritten.
    prune_dead(graph);
    let floats = dequantize_computed(graph);
    note(
        "DequantizeLinear (8 bits to float)",
        floats,
        "lookout.DequantizeLinear (one vector pass)",
    );
    let k = onto_kernels(graph);
    note(
        "QLinearConv",
        k.quantized,
        "lookout.QConv / lookout.QDepthwiseConv (lookout's integer kernels)",
    );
    note("Conv, depthwise", k.depthwise, "lookout.DepthwiseConv");
    note("Conv", k.float, "lookout.Conv (lookout's float kernel)");
    let weights = dequantize_matmul_weights(graph);
    note(
        "DequantizeLinear of Gemm/MatMul weights",
        weights,
        "float initializer",
    );
    prune_dead(graph);
    done
}

/// Values of an initializer, as f64 (float, double, 8/16/32/64-bit integers).
fn values(t: &pb::TensorProto) -> Option<Vec<f64>> {
    let raw = &t.raw_data;
    let dt = DataType::try_from(t.data_type).ok()?;
    let n: usize = t.dims.iter().product::<i64>().max(1) as usize;
    let v: Vec<f64> = if !raw.is_empty() {
        match dt {
            DataType::Float => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            DataType::Double => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            DataType::Uint8 => raw.iter().map(|&b| b as f64).collect(),
            DataType::Int8 => raw.iter().map(|&b| b as i8 as f64).collect(),
            DataType::Int32 => raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            _ => return None,
        }
    } else {
        match dt {
            DataType::Float => t.float_data.iter().map(|&v| v as f64).collect(),
            DataType::Double => t.double_data.clone(),
            DataType::Uint8 | DataType::Int8 | DataType::Int32 => {
                t.int32_data.iter().map(|&v| v as f64).collect()
            }
            _ => return None,
        }
    };
    (v.len() == n).then_some(v)
}

fn float_tensor(name: String, dims: Vec<i64>, v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims,
        data_type: DataType::Float as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn int32_tensor(name: String, v: &[i32]) -> pb::TensorProto {
    pb::TensorProto {
        name,
        dims: vec![v.len() as i64],
        data_type: DataType::Int32 as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn attr_i(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn attr_s<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a [u8]> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.s.as_slice())
}

fn is_8bit(t: &pb::TensorProto) -> bool {
    t.data_type == DataType::Uint8 as i32 || t.data_type == DataType::Int8 as i32
}

/// Read-only indexes over a graph.
struct Index<'g> {
    inits: HashMap<&'g str, &'g pb::TensorProto>,
    /// output name -> producing node
    producer: HashMap<&'g str, usize>,
    /// tensor name -> how many node inputs and graph outputs read it
    uses: HashMap<&'g str, usize>,
}

impl<'g> Index<'g> {
    fn new(g: &'g pb::GraphProto) -> Index<'g> {
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for n in &g.node {
            for i in &n.input {
                *uses.entry(i.as_str()).or_default() += 1;
            }
        }
        for o in &g.output {
            *uses.entry(o.name.as_str()).or_default() += 1;
        }
        Index {
            inits: g.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
            producer: g
                .node
                .iter()
                .enumerate()
                .flat_map(|(k, n)| n.output.iter().map(move |o| (o.as_str(), k)))
                .collect(),
            uses,
        }
    }

    fn init(&self, name: &str) -> Option<&'g pb::TensorProto> {
        self.inits.get(name).copied()
    }

    fn scalar(&self, name: &str) -> Option<&'g pb::TensorProto> {
        self.init(name)
            .filter(|t| t.dims.iter().product::<i64>() == 1)
    }

    /// Whether a (De)QuantizeLinear node's scale is one float and its zero point one 8-bit
    /// value, both initializers.
    fn per_tensor_8bit(&self, n: &pb::NodeProto) -> bool {
        n.input.len() == 3
            && self
                .scalar(&n.input[1])
                .is_some_and(|t| t.data_type == DataType::Float as i32)
            && self.scalar(&n.input[2]).is_some_and(is_8bit)
    }

    /// The DequantizeLinear node producing `name`, if that is what does.
    fn dq<'a>(&self, g: &'a pb::GraphProto, name: &str) -> Option<&'a pb::NodeProto> {
        let n = &g.node[*self.producer.get(name)?];
        (n.op_type == "DequantizeLinear" && n.domain.is_empty() && n.input.len() == 3).then_some(n)
    }
}

/// The node reading `y` as its first input when it is the only reader of `y` (and `y` is not a
/// graph output), by index.
fn sole_reader(g: &pb::GraphProto, ix: &Index, y: &str) -> Option<usize> {
    if ix.uses.get(y) != Some(&1) {
        return None;
    }
    g.node
        .iter()
        .position(|n| n.input.first().map(String::as_str) == Some(y))
}

/// The per-tensor QuantizeLinear to 8 bits that is the only reader of `y` (not a graph
/// output), by index.
fn sole_quantize(g: &pb::GraphProto, ix: &Index, y: &str) -> Option<usize> {
    let k = sole_reader(g, ix, y)?;
    let q = &g.node[k];
    let ok = q.op_type == "QuantizeLinear" && q.domain.is_empty() && ix.per_tensor_8bit(q);
    ok.then_some(k)
}

/// Puts each `(k, qk, node)`'s node in place of node `k` and removes node `qk` (the
/// QuantizeLinear it absorbed). Returns the count.
fn replace_absorbing(g: &mut pb::GraphProto, folds: Vec<(usize, usize, pb::NodeProto)>) -> usize {
    let count = folds.len();
    let mut remove = vec![false; g.node.len()];
    for (k, qk, node) in folds {
        remove[qk] = true;
        g.node[k] = node;
    }
    remove_marked(g, &remove);
    count
}

/// Removes the nodes whose index is marked in `remove`.
fn remove_marked(g: &mut pb::GraphProto, remove: &[bool]) {
    let mut k = 0;
    g.node.retain(|_| {
        k += 1;
        !remove[k - 1]
    });
}

/// Removes DequantizeLinear/QuantizeLinear nodes (and initializers) nothing reads any more.
fn prune_dead(g: &mut pb::GraphProto) {
    loop {
        let dead: Vec<bool> = {
            let ix = Index::new(g);
            g.node
                .iter()
                .map(|n| {
                    matches!(n.op_type.as_str(), "DequantizeLinear" | "QuantizeLinear")
                        && n.output.iter().all(|o| !ix.uses.contains_key(o.as_str()))
                })
                .collect()
        };
        if !dead.contains(&true) {
            break;
        }
        remove_marked(g, &dead);
    }
    let ix = Index::new(g);
    let used: std::collections::HashSet<String> = ix.uses.keys().map(|s| s.to_string()).collect();
    let inputs: std::collections::HashSet<String> =
        g.input.iter().map(|i| i.name.clone()).collect();
    drop(ix);
    g.initializer
        .retain(|t| used.contains(&t.name) || inputs.contains(&t.name));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: format!("{op}:{output}"),
            ..Default::default()
        }
    }

    fn u8_scalar(name: &str, v: u8) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            data_type: DataType::Uint8 as i32,
            raw_data: vec![v],
            ..Default::default()
        }
    }

    fn value(name: &str, elem_type: DataType) -> pb::ValueInfoProto {
        use pb::type_proto::{Tensor, Value};
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(Value::TensorType(Tensor {
                    elem_type: elem_type as i32,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// x (float input) -> QuantizeLinear -> a_q; DQ(a_q), DQ(b_q) -> Add -> s ->
    /// QuantizeLinear -> y; with `extra`, a Relu reads s too.
    fn graph(extra: bool) -> pb::GraphProto {
        let mut nodes = vec![
            node("QuantizeLinear", &["x", "sx", "zx"], "a_q"),
            node("DequantizeLinear", &["a_q", "sa", "za"], "a"),
            node("DequantizeLinear", &["b_q", "sb", "zb"], "b"),
            node("Add", &["a", "b"], "s"),
            node("QuantizeLinear", &["s", "sy", "zy"], "y"),
        ];
        let mut outputs = vec![value("y", DataType::Uint8)];
        if extra {
            nodes.push(node("Relu", &["s"], "r"));
            outputs.push(value("r", DataType::Float));
        }
        pb::GraphProto {
            node: nodes,
            initializer: vec![
                float_tensor("sx".into(), vec![], &[0.02]),
                u8_scalar("zx", 128),
                float_tensor("sa".into(), vec![], &[0.02]),
                u8_scalar("za", 128),
                float_tensor("sb".into(), vec![], &[0.05]),
                u8_scalar("zb", 3),
                float_tensor("sy".into(), vec![], &[0.07]),
                u8_scalar("zy", 9),
            ],
            input: vec![value("x", DataType::Float), value("b_q", DataType::Uint8)],
            output: outputs,
            ..Default::default()
        }
    }

    fn ops(g: &pb::GraphProto) -> Vec<&str> {
        g.node.iter().map(|n| n.op_type.as_str()).collect()
    }

    #[test]
    fn a_quantized_add_chain_becomes_one_node_on_the_8bit_tensors() {
        let mut g = graph(false);
        assert_eq!(fold_qdq_binary(&mut g, "Add"), 1);
        assert_eq!(quantize_floats(&mut g), 1);
        prune_dead(&mut g);
        use crate::ops::names::{Q_ADD, Q_QUANTIZE};
        assert_eq!(ops(&g), [Q_QUANTIZE, Q_ADD]);
        let add = &g.node[1];
        assert_eq!(
            add.input,
            ["a_q", "sa", "za", "b_q", "sb", "zb", "sy", "zy"]
        );
        assert_eq!(add.output, ["y"]);
        assert_eq!(g.node[0].input, ["x", "sx", "zx"]);
        assert_eq!(g.node[0].output, ["a_q"]);
        // The same chain with a product: a multiplication, with the same operands.
        let mut g = graph(false);
        g.node[3].op_type = "Mul".into();
        assert_eq!(fold_qdq_binary(&mut g, "Add"), 0);
        assert_eq!(fold_qdq_binary(&mut g, "Mul"), 1);
        prune_dead(&mut g);
        let mul = &g.node[1];
        assert_eq!(mul.op_type, crate::ops::names::Q_MUL);
        assert_eq!(
            mul.input,
            ["a_q", "sa", "za", "b_q", "sb", "zb", "sy", "zy"]
        );
    }

    #[test]
    fn an_add_whose_float_sum_is_read_elsewhere_is_left_alone() {
        let mut g = graph(true);
        assert_eq!(fold_qdq_binary(&mut g, "Add"), 0);
        assert_eq!(
            ops(&g),
            [
                "QuantizeLinear",
                "DequantizeLinear",
                "DequantizeLinear",
                "Add",
                "QuantizeLinear",
                "Relu"
            ]
        );
        // Per-channel (non-scalar) scales are not folded either.
        let mut g = graph(false);
        g.initializer[4] = float_tensor("sb".into(), vec![2], &[0.05, 0.06]);
        assert_eq!(fold_qdq_binary(&mut g, "Add"), 0);
        // A QuantizeLinear of an 8-bit graph input stays tract's (one of a computed tensor
        // goes to lookout's: the Add's output's, here).
        let mut g = graph(false);
        g.input[0] = value("x", DataType::Uint8);
        assert_eq!(quantize_floats(&mut g), 1);
        assert_eq!(g.node[0].op_type, "QuantizeLinear");
        assert_eq!(g.node[4].op_type, crate::ops::names::Q_QUANTIZE);
    }

    /// x (uint8 input) -> DequantizeLinear(0.1, 128) -> HardSigmoid(1/6, 0.5) ->
    /// QuantizeLinear(0.01, 0) -> y; the DequantizeLinear's output also a graph output when
    /// `shared`.
    fn hard_sigmoid_graph(shared: bool) -> pb::GraphProto {
        let mut hs = node("HardSigmoid", &["xf"], "h");
        hs.attribute = vec![
            pb::AttributeProto {
                name: "alpha".into(),
                f: 1.0 / 6.0,
                ..Default::default()
            },
            pb::AttributeProto {
                name: "beta".into(),
                f: 0.5,
                ..Default::default()
            },
        ];
        let mut output = vec![value("y", DataType::Uint8)];
        if shared {
            output.push(value("xf", DataType::Float));
        }
        pb::GraphProto {
            node: vec![
                node("DequantizeLinear", &["x", "sx", "zx"], "xf"),
                hs,
                node("QuantizeLinear", &["h", "sy", "zy"], "y"),
            ],
            initializer: vec![
                float_tensor("sx".into(), vec![], &[0.1]),
                u8_scalar("zx", 128),
                float_tensor("sy".into(), vec![], &[0.01]),
                u8_scalar("zy", 0),
            ],
            input: vec![value("x", DataType::Uint8)],
            output,
            ..Default::default()
        }
    }

    #[test]
    fn dequantize_hard_sigmoid_quantize_becomes_one_lookup() {
        use crate::ops::names::Q_TABLE;
        let mut g = hard_sigmoid_graph(false);
        let done = rewrite(&mut g);
        assert_eq!(ops(&g), [Q_TABLE], "{done:?}");
        assert_eq!(g.node[0].output, ["y"]);
        assert_eq!(g.node[0].input[0], "x");
        let table = g
            .initializer
            .iter()
            .find(|t| t.name == g.node[0].input[1])
            .expect("the table");
        assert_eq!(
            (table.dims.as_slice(), table.data_type),
            (&[256][..], DataType::Uint8 as i32)
        );
        // (x - 128) * 0.1 -> min(max(v / 6 + 0.5, 0), 1) -> / 0.01: 0 below x = 98 (v = -3),
        // 50 at x = 128, 60 at x = 134 (v = 0.6), 100 from x = 158 (v = 3) up.
        let t = &table.raw_data;
        assert_eq!(
            (t[0], t[98], t[128], t[134], t[158], t[255]),
            (0, 0, 50, 60, 100, 100)
        );
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "monotonic: {t:?}");
        // The dequantized tensor read elsewhere too: the lookup reads x, the DequantizeLinear
        // stays (on lookout's vector pass).
        let mut g = hard_sigmoid_graph(true);
        rewrite(&mut g);
        assert_eq!(ops(&g), [crate::ops::names::Q_DEQUANTIZE, Q_TABLE]);
        // A HardSigmoid whose float result is a graph output is not folded.
        let mut g = hard_sigmoid_graph(false);
        g.output.push(value("h", DataType::Float));
        assert_eq!(fold_qdq_tables(&mut g), 0);
    }

    #[test]
    fn dequantize_linear_of_computed_tensors_goes_to_the_vector_pass() {
        use crate::ops::names::Q_DEQUANTIZE;
        // The Add is not folded (its float sum is read by the Relu): both DequantizeLinear
        // nodes, of a computed tensor and of an 8-bit graph input, are lookout's.
        let mut g = graph(true);
        assert_eq!(dequantize_computed(&mut g), 2);
        assert_eq!(g.node[1].op_type, Q_DEQUANTIZE);
        assert_eq!(g.node[2].op_type, Q_DEQUANTIZE);
        assert_eq!(g.node[1].input, ["a_q", "sa", "za"]);
        // One of a constant (left to tract's constant folding) or with a per-channel scale
        // stays tract's.
        let mut g = graph(true);
        g.node[2].input[0] = "w_q".into();
        g.initializer.push(u8_scalar("w_q", 200));
        g.initializer[2] = float_tensor("sa".into(), vec![2], &[0.02, 0.03]);
        assert_eq!(dequantize_computed(&mut g), 0);
        // Where the folds take both (and leave them dead), the whole rewrite counts none.
        let mut g = graph(false);
        let done = rewrite(&mut g);
        assert!(
            !done.iter().any(|t| t.into.contains("DequantizeLinear")),
            "{done:?}"
        );
        assert!(!ops(&g).contains(&Q_DEQUANTIZE), "{:?}", ops(&g));
    }
}
