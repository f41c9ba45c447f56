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
//!    lookout's 8-bit operators ([`super::qelementwise`], [`super::qgemv`]), and a float
//!    input's QuantizeLinear on a vector pass.
//! 2. **Convolutions get lookout's kernels**: a QLinearConv whose every channel has its own
//!    filter becomes [`fastops::Q_DEPTHWISE`], a float one [`fastops::F_DEPTHWISE`]
//!    ([`super::depthwise`]); any other group-1 QLinearConv becomes [`fastops::Q_CONV`]
//!    ([`super::qgemm`]), a float Conv [`fconv::F_CONV`] ([`super::fconv`]). A following Relu
//!    or constant Clip is fused into the float ones.
//! 3. **Quantized weights of float matrix products are dequantized once, here**, instead of on
//!    every run (tract 0.23 re-dequantizes and re-packs a DequantizeLinear of a constant feeding
//!    Gemm/MatMul on each inference).
//!
//! Each rewrite applies only where every operand it bakes in is an initializer of the expected
//! type and shape; anything else is left to tract as it was.

use std::collections::HashMap;

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use super::contrib::{node_name, Translation};
use super::{fastops, fconv};

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
    let adds = fold_qdq_adds(graph);
    note(
        "DequantizeLinear x2 -> Add -> QuantizeLinear",
        adds,
        "lookout.QAdd (8-bit in and out, one pass)",
    );
    let gemms = fold_qdq_gemms(graph);
    note(
        "DequantizeLinear x2 -> Gemm -> QuantizeLinear",
        gemms,
        "lookout.QGemm (integer arithmetic)",
    );
    let inputs = quantize_float_inputs(graph);
    note(
        "QuantizeLinear (float input)",
        inputs,
        "lookout.QuantizeLinear (one vector pass)",
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

/// One folded convolution: the node replacing the Conv, the QuantizeLinear it absorbs, and a
/// requantized bias initializer where one was needed.
struct Fold {
    conv: usize,
    quant: usize,
    node: pb::NodeProto,
    bias: Option<pb::TensorProto>,
}

fn plan_fold(g: &pb::GraphProto, ix: &Index, k: usize) -> Option<Fold> {
    let conv = &g.node[k];
    if conv.op_type != "Conv" || !conv.domain.is_empty() || conv.input.len() < 2 {
        return None;
    }
    // x: DequantizeLinear(x_q, x_scale, x_zero) of a computed tensor, per tensor.
    let dx = ix.dq(g, &conv.input[0])?;
    if ix.init(&dx.input[0]).is_some() {
        return None;
    }
    let (x_scale, x_zero) = (ix.scalar(&dx.input[1])?, ix.scalar(&dx.input[2])?);
    // w: DequantizeLinear of an 8-bit initializer, per tensor or per output channel.
    let dw = ix.dq(g, &conv.input[1])?;
    let wq = ix
        .init(&dw.input[0])
        .filter(|t| is_8bit(t) && t.dims.len() >= 3)?;
    let (w_scale, w_zero) = (ix.init(&dw.input[1])?, ix.init(&dw.input[2])?);
    let m = wq.dims[0] as usize;
    let per_channel = w_scale.dims.iter().product::<i64>() != 1;
    if per_channel && (attr_i(dw, "axis").unwrap_or(1) != 0 || w_scale.dims != [m as i64]) {
        return None;
    }
    if !is_8bit(x_zero) || !is_8bit(w_zero) {
        return None;
    }
    // y: the Conv's only reader is a per-tensor QuantizeLinear to 8 bits.
    let qk = sole_quantize(g, ix, conv.output.first()?)?;
    let q = &g.node[qk];
    // The bias, as int32 at scale x_scale * w_scale[c].
    let sx = values(x_scale)?[0];
    let sw = values(w_scale)?;
    let expected: Vec<f64> = (0..m)
        .map(|c| sx * sw[if per_channel { c } else { 0 }])
        .collect();
    let mut bias_name = None;
    let mut bias_init = None;
    if let Some(b) = conv.input.get(2).filter(|b| !b.is_empty()) {
        let (float_bias, reusable) = if let Some(db) = ix.dq(g, b) {
            let bq = ix
                .init(&db.input[0])
                .filter(|t| t.data_type == DataType::Int32 as i32)?;
            let sb = values(ix.init(&db.input[1])?)?;
            let zb = values(ix.init(&db.input[2])?)?;
            let qv = values(bq)?;
            if qv.len() != m {
                return None;
            }
            let at = |v: &[f64], c: usize| v[if v.len() == 1 { 0 } else { c }];
            let same_scale = zb.iter().all(|&z| z == 0.0)
                && (0..m).all(|c| (at(&sb, c) - expected[c]).abs() <= 1e-6 * expected[c].abs());
            let fb: Vec<f64> = (0..m).map(|c| (qv[c] - at(&zb, c)) * at(&sb, c)).collect();
            (fb, same_scale.then(|| bq.name.clone()))
        } else {
            let t = ix
                .init(b)
                .filter(|t| t.data_type == DataType::Float as i32)?;
            let v = values(t)?;
            if v.len() != m {
                return None;
            }
            (v, None)
        };
        match reusable {
            Some(name) => bias_name = Some(name),
            None => {
                let mut q = Vec::with_capacity(m);
                for c in 0..m {
                    let v = (float_bias[c] / expected[c]).round_ties_even();
                    if !v.is_finite() || v.abs() > i32::MAX as f64 {
                        return None;
                    }
                    q.push(v as i32);
                }
                let name = format!("{}/lookout.bias_int32", node_name(conv));
                bias_init = Some(int32_tensor(name.clone(), &q));
                bias_name = Some(name);
            }
        }
    }
    let mut input = vec![
        dx.input[0].clone(),
        dx.input[1].clone(),
        dx.input[2].clone(),
        dw.input[0].clone(),
        dw.input[1].clone(),
        dw.input[2].clone(),
        q.input[1].clone(),
        q.input[2].clone(),
    ];
    input.extend(bias_name);
    let node = pb::NodeProto {
        name: node_name(conv),
        op_type: "QLinearConv".into(),
        input,
        output: vec![q.output[0].clone()],
        attribute: conv.attribute.clone(),
        ..Default::default()
    };
    Some(Fold {
        conv: k,
        quant: qk,
        node,
        bias: bias_init,
    })
}

/// Rewrite 1: DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv. Returns the count.
fn fold_qdq_convs(g: &mut pb::GraphProto) -> usize {
    let folds: Vec<Fold> = {
        let ix = Index::new(g);
        (0..g.node.len())
            .filter_map(|k| plan_fold(g, &ix, k))
            .collect()
    };
    let count = folds.len();
    let mut remove = vec![false; g.node.len()];
    for f in folds {
        remove[f.quant] = true;
        g.node[f.conv] = f.node;
        g.initializer.extend(f.bias);
    }
    remove_marked(g, &remove);
    count
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

/// Rewrite 1b: `Add(DequantizeLinear(a), DequantizeLinear(b)) -> QuantizeLinear`, every
/// scale a float and every zero point an 8-bit per-tensor initializer, into one
/// [`super::qelementwise::Q_ADD`]. Returns the count.
fn fold_qdq_adds(g: &mut pb::GraphProto) -> usize {
    let folds: Vec<(usize, usize, pb::NodeProto)> = {
        let ix = Index::new(g);
        (0..g.node.len())
            .filter_map(|k| {
                let add = &g.node[k];
                if add.op_type != "Add" || !add.domain.is_empty() || add.input.len() != 2 {
                    return None;
                }
                let (da, db) = (ix.dq(g, &add.input[0])?, ix.dq(g, &add.input[1])?);
                if !ix.per_tensor_8bit(da) || !ix.per_tensor_8bit(db) {
                    return None;
                }
                let qk = sole_quantize(g, &ix, add.output.first()?)?;
                let q = &g.node[qk];
                let node = pb::NodeProto {
                    name: node_name(add),
                    op_type: super::qelementwise::Q_ADD.into(),
                    input: [&da.input[..], &db.input[..], &q.input[1..]].concat(),
                    output: vec![q.output[0].clone()],
                    ..Default::default()
                };
                Some((k, qk, node))
            })
            .collect()
    };
    replace_absorbing(g, folds)
}

/// Plans one Gemm fold (see [`fold_qdq_gemms`]): the Gemm's index, the QuantizeLinear's, the
/// node replacing the Gemm, and a float bias initializer where one was computed.
type GemmFold = (usize, usize, pb::NodeProto, Option<pb::TensorProto>);

fn plan_gemm(g: &pb::GraphProto, ix: &Index, k: usize) -> Option<GemmFold> {
    let gemm = &g.node[k];
    if gemm.op_type != "Gemm" || !gemm.domain.is_empty() || !(2..=3).contains(&gemm.input.len()) {
        return None;
    }
    let attr_f = |name: &str| gemm.attribute.iter().find(|a| a.name == name).map(|a| a.f);
    let trans_b = attr_i(gemm, "transB").unwrap_or(0);
    if attr_i(gemm, "transA").unwrap_or(0) != 0
        || attr_f("alpha").unwrap_or(1.0) != 1.0
        || attr_f("beta").unwrap_or(1.0) != 1.0
    {
        return None;
    }
    // a: per-tensor DequantizeLinear of a computed tensor.
    let da = ix.dq(g, &gemm.input[0])?;
    if ix.init(&da.input[0]).is_some() || !ix.per_tensor_8bit(da) {
        return None;
    }
    // w: DequantizeLinear of a 2-D 8-bit initializer, per tensor or per output (along N).
    let dw = ix.dq(g, &gemm.input[1])?;
    let w = ix
        .init(&dw.input[0])
        .filter(|t| is_8bit(t) && t.dims.len() == 2)?;
    let n = w.dims[if trans_b != 0 { 0 } else { 1 }];
    let (ws, wz) = (ix.init(&dw.input[1])?, ix.init(&dw.input[2])?);
    if ws.data_type != DataType::Float as i32 || !is_8bit(wz) {
        return None;
    }
    let count = |t: &pb::TensorProto| t.dims.iter().product::<i64>();
    let axis_ok = attr_i(dw, "axis").unwrap_or(1) == if trans_b != 0 { 0 } else { 1 };
    if !(count(ws) == 1 && count(wz) == 1 || count(ws) == n && count(wz) == n && axis_ok) {
        return None;
    }
    // bias: absent, a float initializer of N values, or the DequantizeLinear of an int32 one
    // (computed here as DequantizeLinear computes it, in f32).
    let mut bias = None;
    let mut bias_init = None;
    if let Some(b) = gemm.input.get(2).filter(|b| !b.is_empty()) {
        if let Some(db) = ix.dq(g, b) {
            let bq = ix
                .init(&db.input[0])
                .filter(|t| t.data_type == DataType::Int32 as i32)?;
            // Per tensor or per output (axis 0 of the bias).
            let (sb, zb) = (
                values(ix.init(&db.input[1])?)?,
                values(ix.init(&db.input[2])?)?,
            );
            let qb = values(bq)?;
            let ok = |v: &[f64]| v.len() == 1 || v.len() == qb.len();
            if qb.len() as i64 != n || !ok(&sb) || !ok(&zb) {
                return None;
            }
            let at = |v: &[f64], c: usize| v[if v.len() == 1 { 0 } else { c }];
            let v: Vec<f32> = qb
                .iter()
                .enumerate()
                .map(|(c, &q)| (q - at(&zb, c)) as f32 * at(&sb, c) as f32)
                .collect();
            let name = format!("{}/lookout.bias_f32", node_name(gemm));
            bias_init = Some(float_tensor(name.clone(), vec![n], &v));
            bias = Some(name);
        } else {
            let t = ix
                .init(b)
                .filter(|t| t.data_type == DataType::Float as i32)?;
            if count(t) != n {
                return None;
            }
            bias = Some(b.clone());
        }
    }
    let qk = sole_quantize(g, ix, gemm.output.first()?)?;
    let q = &g.node[qk];
    let mut input = [&da.input[..], &dw.input[..], &q.input[1..]].concat();
    input.extend(bias);
    let node = pb::NodeProto {
        name: node_name(gemm),
        op_type: super::qgemv::Q_GEMM.into(),
        input,
        output: vec![q.output[0].clone()],
        attribute: vec![pb::AttributeProto {
            name: "transB".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: trans_b,
            ..Default::default()
        }],
        ..Default::default()
    };
    Some((k, qk, node, bias_init))
}

/// Rewrite 1c: `DequantizeLinear(a) -> Gemm(DequantizeLinear(w), float bias) ->
/// QuantizeLinear` (the classifier of a QDQ model) into one [`super::qgemv::Q_GEMM`]. Returns
/// the count.
fn fold_qdq_gemms(g: &mut pb::GraphProto) -> usize {
    let folds: Vec<GemmFold> = {
        let ix = Index::new(g);
        (0..g.node.len())
            .filter_map(|k| plan_gemm(g, &ix, k))
            .collect()
    };
    let mut nodes = Vec::with_capacity(folds.len());
    for (k, qk, node, bias) in folds {
        g.initializer.extend(bias);
        nodes.push((k, qk, node));
    }
    replace_absorbing(g, nodes)
}

/// Rewrite 1d: a per-tensor QuantizeLinear to 8 bits of a float32 graph input (a quantized
/// model's first operation) into [`super::qelementwise::Q_QUANTIZE`]. Returns the count.
fn quantize_float_inputs(g: &mut pb::GraphProto) -> usize {
    let float_inputs = super::contrib::inputs_of_type(g, DataType::Float);
    let ix = Index::new(g);
    let found: Vec<usize> = (0..g.node.len())
        .filter(|&k| {
            let n = &g.node[k];
            n.op_type == "QuantizeLinear"
                && n.domain.is_empty()
                && ix.per_tensor_8bit(n)
                && float_inputs.contains(&n.input[0])
                && ix.init(&n.input[0]).is_none()
        })
        .collect();
    drop(ix);
    for &k in &found {
        g.node[k].op_type = super::qelementwise::Q_QUANTIZE.into();
        g.node[k].attribute.clear();
    }
    found.len()
}

/// Whether `node` (Conv or QLinearConv, weights at `w_input`) is depthwise with constant
/// operands: group == filters, one input channel per filter, 2-D, explicit padding.
fn is_depthwise(ix: &Index, node: &pb::NodeProto, w_input: usize) -> bool {
    let Some(w) = node.input.get(w_input).and_then(|w| ix.init(w)) else {
        return false;
    };
    let explicit_pads = matches!(attr_s(node, "auto_pad"), None | Some(b"NOTSET") | Some(b""));
    w.dims.len() == 4
        && w.dims[1] == 1
        && w.dims[0] > 1
        && super::depthwise::supports(w.dims[2] as usize, w.dims[3] as usize)
        && attr_i(node, "group") == Some(w.dims[0])
        && explicit_pads
        && node
            .input
            .iter()
            .skip(1)
            .all(|i| i.is_empty() || ix.init(i).is_some())
}

/// How many convolutions [`onto_kernels`] put on each of lookout's kernels.
struct Kernels {
    /// QLinearConv, depthwise or group 1.
    quantized: usize,
    /// Float depthwise Conv.
    depthwise: usize,
    /// Float group-1 Conv.
    float: usize,
}

/// Rewrite 2: convolutions onto lookout's kernels.
fn onto_kernels(g: &mut pb::GraphProto) -> Kernels {
    let (quant, qconv, float, fconv, clips) = {
        let ix = Index::new(g);
        let mut fconv = Vec::new();
        let mut qconv = Vec::new();
        let mut quant = Vec::new();
        let mut float = Vec::new();
        let mut clips = Vec::new();
        for (k, n) in g.node.iter().enumerate() {
            if !n.domain.is_empty() {
                continue;
            }
            if n.op_type == "QLinearConv" && is_depthwise(&ix, n, 3) {
                let types_ok = [2, 5, 7]
                    .iter()
                    .all(|&i| ix.init(&n.input[i]).is_some_and(is_8bit));
                if types_ok {
                    quant.push(k);
                }
            } else if n.op_type == "QLinearConv" && is_group1_2d(&ix, n, 3) {
                qconv.push(k);
            } else if n.op_type == "Conv"
                && ix
                    .init(&n.input[1])
                    .is_some_and(|w| w.data_type == DataType::Float as i32)
            {
                let target = if is_depthwise(&ix, n, 1) {
                    &mut float
                } else if is_group1_2d(&ix, n, 1) {
                    &mut fconv
                } else {
                    continue;
                };
                target.push(k);
                if let Some(c) = fusable_clip(g, &ix, &n.output[0]) {
                    clips.push((k, c));
                }
            }
        }
        (quant, qconv, float, fconv, clips)
    };
    for &k in &quant {
        g.node[k].op_type = fastops::Q_DEPTHWISE.into();
    }
    for &k in &qconv {
        g.node[k].op_type = fastops::Q_CONV.into();
    }
    for &k in &float {
        g.node[k].op_type = fastops::F_DEPTHWISE.into();
    }
    for &k in &fconv {
        g.node[k].op_type = fconv::F_CONV.into();
    }
    let mut remove = vec![false; g.node.len()];
    for (k, (ck, lo, hi)) in clips {
        let out = g.node[ck].output[0].clone();
        let conv = &mut g.node[k];
        conv.output[0] = out;
        conv.attribute.push(float_attr("lookout_min", lo));
        conv.attribute.push(float_attr("lookout_max", hi));
        remove[ck] = true;
    }
    remove_marked(g, &remove);
    Kernels {
        quantized: quant.len() + qconv.len(),
        depthwise: float.len(),
        float: fconv.len(),
    }
}

/// Whether a Conv (weights at `w_input` = 1) or QLinearConv (`w_input` = 3) is a 2-D group-1
/// convolution with constant operands and explicit padding (what [`fconv::F_CONV`] and
/// [`fastops::Q_CONV`] compute); a QLinearConv's weights and zero points must also be 8-bit.
fn is_group1_2d(ix: &Index, node: &pb::NodeProto, w_input: usize) -> bool {
    let Some(w) = node.input.get(w_input).and_then(|w| ix.init(w)) else {
        return false;
    };
    let explicit_pads = matches!(attr_s(node, "auto_pad"), None | Some(b"NOTSET") | Some(b""));
    let quantized_ok = w_input != 3
        || (is_8bit(w)
            && [2, 5, 7].iter().all(|&i| {
                node.input
                    .get(i)
                    .and_then(|n| ix.init(n))
                    .is_some_and(is_8bit)
            }));
    w.dims.len() == 4
        && w.dims.iter().all(|&d| d >= 1)
        && attr_i(node, "group").unwrap_or(1) == 1
        && explicit_pads
        && node
            .input
            .iter()
            .skip(1)
            .all(|i| i.is_empty() || ix.init(i).is_some())
        && quantized_ok
}

fn float_attr(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

/// A Relu, or a Clip with constant bounds, that is the only reader of `y`: (node, min, max).
fn fusable_clip(g: &pb::GraphProto, ix: &Index, y: &str) -> Option<(usize, f32, f32)> {
    let k = sole_reader(g, ix, y)?;
    let n = &g.node[k];
    if !n.domain.is_empty() {
        return None;
    }
    match n.op_type.as_str() {
        "Relu" => Some((k, 0.0, f32::INFINITY)),
        "Clip" => {
            let attr_f = |name: &str| n.attribute.iter().find(|a| a.name == name).map(|a| a.f);
            let bound = |i: usize, attr: &str, default: f32| -> Option<f32> {
                match n.input.get(i).filter(|s| !s.is_empty()) {
                    Some(name) => {
                        let t = ix.scalar(name).or_else(|| constant_scalar(g, ix, name))?;
                        values(t).map(|v| v[0] as f32)
                    }
                    None => Some(attr_f(attr).unwrap_or(default)),
                }
            };
            let lo = bound(1, "min", f32::NEG_INFINITY)?;
            let hi = bound(2, "max", f32::INFINITY)?;
            Some((k, lo, hi))
        }
        _ => None,
    }
}

/// The value of a `Constant` node's scalar output.
fn constant_scalar<'g>(
    g: &'g pb::GraphProto,
    ix: &Index,
    name: &str,
) -> Option<&'g pb::TensorProto> {
    let n = &g.node[*ix.producer.get(name)?];
    if n.op_type != "Constant" {
        return None;
    }
    n.attribute
        .iter()
        .find(|a| a.name == "value")
        .and_then(|a| a.t.as_ref())
        .filter(|t| t.dims.iter().product::<i64>() == 1)
}

/// Rewrite 3: DequantizeLinear of a constant read only by Gemm/MatMul becomes a float
/// initializer. Returns the count.
fn dequantize_matmul_weights(g: &mut pb::GraphProto) -> usize {
    let plans: Vec<(usize, pb::TensorProto)> = {
        let ix = Index::new(g);
        let mut readers: HashMap<&str, Vec<&str>> = HashMap::new();
        for n in &g.node {
            for i in &n.input {
                readers
                    .entry(i.as_str())
                    .or_default()
                    .push(n.op_type.as_str());
            }
        }
        g.node
            .iter()
            .enumerate()
            .filter_map(|(k, n)| {
                if n.op_type != "DequantizeLinear" || !n.domain.is_empty() || n.input.len() != 3 {
                    return None;
                }
                let out = n.output.first()?;
                let r = readers.get(out.as_str())?;
                if r.is_empty() || !r.iter().all(|t| *t == "Gemm" || *t == "MatMul") {
                    return None;
                }
                if g.output.iter().any(|o| &o.name == out) {
                    return None;
                }
                let q = ix.init(&n.input[0]).filter(|t| is_8bit(t))?;
                let s = values(ix.scalar(&n.input[1])?)?[0];
                let z = values(ix.scalar(&n.input[2])?)?[0];
                let v: Vec<f32> = values(q)?.iter().map(|&x| ((x - z) * s) as f32).collect();
                Some((k, float_tensor(out.clone(), q.dims.clone(), &v)))
            })
            .collect()
    };
    let count = plans.len();
    let mut remove = vec![false; g.node.len()];
    for (k, t) in plans {
        remove[k] = true;
        g.initializer.push(t);
    }
    remove_marked(g, &remove);
    count
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
        assert_eq!(fold_qdq_adds(&mut g), 1);
        assert_eq!(quantize_float_inputs(&mut g), 1);
        prune_dead(&mut g);
        use super::super::qelementwise::{Q_ADD, Q_QUANTIZE};
        assert_eq!(ops(&g), [Q_QUANTIZE, Q_ADD]);
        let add = &g.node[1];
        assert_eq!(
            add.input,
            ["a_q", "sa", "za", "b_q", "sb", "zb", "sy", "zy"]
        );
        assert_eq!(add.output, ["y"]);
        assert_eq!(g.node[0].input, ["x", "sx", "zx"]);
        assert_eq!(g.node[0].output, ["a_q"]);
    }

    #[test]
    fn an_add_whose_float_sum_is_read_elsewhere_is_left_alone() {
        let mut g = graph(true);
        assert_eq!(fold_qdq_adds(&mut g), 0);
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
        assert_eq!(fold_qdq_adds(&mut g), 0);
        // A QuantizeLinear of a computed tensor or an 8-bit input stays tract's.
        let mut g = graph(false);
        g.input[0] = value("x", DataType::Uint8);
        assert_eq!(quantize_float_inputs(&mut g), 0);
    }
}
