//! Rewrite 1's folds onto lookout's 8-bit operators (QDQ additions, QDQ Gemm, a float
//! input's QuantizeLinear) and rewrite 3 (quantized weights of float matrix products
//! dequantized once). See the parent module.

use super::*;

/// Rewrite 1b: `op(DequantizeLinear(a), DequantizeLinear(b)) -> QuantizeLinear`, `op` being
/// `Add` (into [`names::Q_ADD`]) or `Mul` (into
/// [`names::Q_MUL`]), every scale a float and every zero point an 8-bit
/// per-tensor initializer. Returns the count.
pub(super) fn fold_qdq_binary(g: &mut pb::GraphProto, op: &str) -> usize {
    let into = match op {
        "Add" => names::Q_ADD,
        "Mul" => names::Q_MUL,
        _ => return 0,
    };
    let folds: Vec<(usize, usize, pb::NodeProto)> = {
        let ix = Index::new(g);
        (0..g.node.len())
            .filter_map(|k| {
                let node = &g.node[k];
                if node.op_type != op || !node.domain.is_empty() || node.input.len() != 2 {
                    return None;
                }
                let (da, db) = (ix.dq(g, &node.input[0])?, ix.dq(g, &node.input[1])?);
                if !ix.per_tensor_8bit(da) || !ix.per_tensor_8bit(db) {
                    return None;
                }
                let qk = sole_quantize(g, &ix, node.output.first()?)?;
                let q = &g.node[qk];
                let node = pb::NodeProto {
                    name: node_name(node),
                    op_type: into.into(),
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

/// Rewrite 1f: `DequantizeLinear(x) -> f -> QuantizeLinear`, per tensor, where `f` is a float
/// function of each element alone (see [`elementwise`]; MobileNetV3's hard-swish gates are
/// `HardSigmoid`: 28 in MobileNetV3-Small), into one [`names::Q_TABLE`]
/// lookup. `x` has 256 values: the chain's 256 results are computed here with the f32
/// operations the unfused chain runs (lookout's dequantization, `f` as tract computes it,
/// lookout's quantization), so the lookup gives the same bytes. The DequantizeLinear stays
/// where something else reads it. Returns the count.
pub(super) fn fold_qdq_tables(g: &mut pb::GraphProto) -> usize {
    let mut tables = Vec::new();
    let folds: Vec<(usize, usize, pb::NodeProto)> = {
        let ix = Index::new(g);
        (0..g.node.len())
            .filter_map(|k| {
                let node = &g.node[k];
                let f = elementwise(node)?;
                let d = ix.dq(g, node.input.first()?)?;
                if ix.init(&d.input[0]).is_some() || !ix.per_tensor_8bit(d) {
                    return None;
                }
                let qk = sole_quantize(g, &ix, node.output.first()?)?;
                let q = &g.node[qk];
                let scalar = |name: &str| Some(values(ix.init(name)?)?[0] as f32);
                let (x_scale, x_zero) = (scalar(&d.input[1])?, scalar(&d.input[2])?);
                let x_signed = ix.init(&d.input[2])?.data_type == DataType::Int8 as i32;
                let y_zero = ix.init(&q.input[2])?;
                let y_signed = y_zero.data_type == DataType::Int8 as i32;
                let quant = crate::quant::Quant::eight_bit(
                    scalar(&q.input[1])?,
                    scalar(&q.input[2])? as i32,
                    y_signed,
                );
                let raw: Vec<u8> = (0..=255u8)
                    .map(|bits| {
                        let x = if x_signed {
                            bits as i8 as f32
                        } else {
                            bits as f32
                        };
                        let y = f((x - x_zero) * x_scale);
                        if y_signed {
                            quant.one::<i8>(y) as u8
                        } else {
                            quant.one::<u8>(y)
                        }
                    })
                    .collect();
                let name = format!("{}.table", node_name(node));
                tables.push(pb::TensorProto {
                    name: name.clone(),
                    dims: vec![256],
                    data_type: y_zero.data_type,
                    raw_data: raw,
                    ..Default::default()
                });
                let table = pb::NodeProto {
                    name: node_name(node),
                    op_type: names::Q_TABLE.into(),
                    input: vec![d.input[0].clone(), name],
                    output: vec![q.output[0].clone()],
                    ..Default::default()
                };
                Some((k, qk, table))
            })
            .collect()
    };
    g.initializer.extend(tables);
    replace_absorbing(g, folds)
}

/// The float function of a node that works on each element of its one input alone, as tract
/// computes it, for the operators [`fold_qdq_tables`] folds: `HardSigmoid` (tract wires it
/// as a multiply, an add, a min and a max, each rounded in f32).
fn elementwise(node: &pb::NodeProto) -> Option<impl Fn(f32) -> f32> {
    if node.op_type != "HardSigmoid" || !node.domain.is_empty() || node.input.len() != 1 {
        return None;
    }
    let attr = |name: &str, default: f32| {
        node.attribute
            .iter()
            .find(|a| a.name == name)
            .map_or(default, |a| a.f)
    };
    let (alpha, beta) = (attr("alpha", 0.2), attr("beta", 0.5));
    Some(move |x: f32| (alpha * x + beta).clamp(0.0, 1.0))
}

/// Plans one Gemm fold (see [`fold_qdq_gemms`]): the Gemm's index, the QuantizeLinear's, the
/// node replacing the Gemm, and a float bias initializer where one was computed.
type GemmFold = (usize, usize, pb::NodeProto, Option<pb::TensorProto>);

pub(super) fn plan_gemm(g: &pb::GraphProto, ix: &Index, k: usize) -> Option<GemmFold> {
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
        op_type: names::Q_GEMM.into(),
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
/// QuantizeLinear` (the classifier of a QDQ model) into one [`names::Q_GEMM`]. Returns
/// the count.
pub(super) fn fold_qdq_gemms(g: &mut pb::GraphProto) -> usize {
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

/// Rewrite 1d: every per-tensor QuantizeLinear to 8 bits of a computed tensor or a float32
/// graph input into [`names::Q_QUANTIZE`]: the quantized model's input,
/// and what the float operations between quantized ones produce (MobileNetV3's hard-swish
/// and squeeze-excitation: 66 of them, half its int8 run on tract's scalar pass). Returns the
/// count.
pub(super) fn quantize_floats(g: &mut pb::GraphProto) -> usize {
    let float_inputs = crate::rewrite::contrib::inputs_of_type(g, DataType::Float);
    let graph_inputs: Vec<String> = g.input.iter().map(|i| i.name.clone()).collect();
    retype(g, names::Q_QUANTIZE, |n, x| {
        n.op_type == "QuantizeLinear" && (!graph_inputs.contains(x) || float_inputs.contains(x))
    })
}

/// Gives every standard-domain, per-tensor 8-bit (De)QuantizeLinear node whose first input is
/// not an initializer and that `keep(node, input)` accepts the op type `op_type` (the
/// operands stay, the attributes go). Returns the count.
fn retype(
    g: &mut pb::GraphProto,
    op_type: &str,
    keep: impl Fn(&pb::NodeProto, &String) -> bool,
) -> usize {
    let ix = Index::new(g);
    let found: Vec<usize> = (0..g.node.len())
        .filter(|&k| {
            let n = &g.node[k];
            n.domain.is_empty()
                && ix.per_tensor_8bit(n)
                && n.input
                    .first()
                    .is_some_and(|x| ix.init(x).is_none() && keep(n, x))
        })
        .collect();
    drop(ix);
    for &k in &found {
        g.node[k].op_type = op_type.into();
        g.node[k].attribute.clear();
    }
    found.len()
}

/// Rewrite 1e: every per-tensor DequantizeLinear of a computed 8-bit tensor (a constant's
/// is folded by tract, or by rewrite 3) into [`names::Q_DEQUANTIZE`]:
/// what feeds the float operations between quantized ones (MobileNetV3-Small: 68, a third of
/// its int8 run on tract's scalar pass). Runs after the folds, which consume the
/// DequantizeLinear nodes of the chains they replace. Returns the count.
pub(super) fn dequantize_computed(g: &mut pb::GraphProto) -> usize {
    retype(g, names::Q_DEQUANTIZE, |n, _| {
        n.op_type == "DequantizeLinear"
    })
}

/// Rewrite 3: DequantizeLinear of a constant read only by Gemm/MatMul becomes a float
/// initializer. Returns the count.
pub(super) fn dequantize_matmul_weights(g: &mut pb::GraphProto) -> usize {
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
