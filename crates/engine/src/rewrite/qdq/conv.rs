//! Rewrite 2 (convolutions onto lookout's kernels) and rewrite 1's convolution fold: the
//! QDQ chain around a Conv becomes one QLinearConv (see the parent module).

use super::*;

/// One folded convolution: the node replacing the Conv, the QuantizeLinear it absorbs, and a
/// requantized bias initializer where one was needed.
pub(super) struct Fold {
    conv: usize,
    quant: usize,
    node: pb::NodeProto,
    bias: Option<pb::TensorProto>,
}

pub(super) fn plan_fold(g: &pb::GraphProto, ix: &Index, k: usize) -> Option<Fold> {
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
pub(super) fn fold_qdq_convs(g: &mut pb::GraphProto) -> usize {
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

/// Whether `node` (Conv or QLinearConv, weights at `w_input`) is depthwise with constant
/// operands: group == filters, one input channel per filter, 2-D, explicit padding.
pub(super) fn is_depthwise(ix: &Index, node: &pb::NodeProto, w_input: usize) -> bool {
    let Some(w) = node.input.get(w_input).and_then(|w| ix.init(w)) else {
        return false;
    };
    w.dims.len() == 4
        && w.dims[1] == 1
        && w.dims[0] > 1
        && names::takes_depthwise_filter(w.dims[2] as usize, w.dims[3] as usize)
        && attr_i(node, "group") == Some(w.dims[0])
        && explicit_pads_and_constant_operands(ix, node)
}

/// How many convolutions [`onto_kernels`] put on each of lookout's kernels.
pub(super) struct Kernels {
    /// QLinearConv, depthwise or group 1.
    pub(super) quantized: usize,
    /// Float depthwise Conv.
    pub(super) depthwise: usize,
    /// Float group-1 Conv.
    pub(super) float: usize,
}

/// Rewrite 2: convolutions onto lookout's kernels.
pub(super) fn onto_kernels(g: &mut pb::GraphProto) -> Kernels {
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
        g.node[k].op_type = names::Q_DEPTHWISE.into();
    }
    for &k in &qconv {
        g.node[k].op_type = names::Q_CONV.into();
    }
    for &k in &float {
        g.node[k].op_type = names::F_DEPTHWISE.into();
    }
    for &k in &fconv {
        g.node[k].op_type = names::F_CONV.into();
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
/// convolution with constant operands and explicit padding (what [`names::F_CONV`] and
/// [`names::Q_CONV`] compute); a QLinearConv's weights and zero points must also be 8-bit.
pub(super) fn is_group1_2d(ix: &Index, node: &pb::NodeProto, w_input: usize) -> bool {
    let Some(w) = node.input.get(w_input).and_then(|w| ix.init(w)) else {
        return false;
    };
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
        && explicit_pads_and_constant_operands(ix, node)
        && quantized_ok
}

pub(super) fn float_attr(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

/// A Relu, or a Clip with constant bounds, that is the only reader of `y`: (node, min, max).
pub(super) fn fusable_clip(g: &pb::GraphProto, ix: &Index, y: &str) -> Option<(usize, f32, f32)> {
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
pub(super) fn constant_scalar<'g>(
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

/// What both kernels' checks need: pads given explicitly (no `auto_pad`), and every input after
/// the activations absent or an initializer (weights, zero points, scales, bias baked in).
fn explicit_pads_and_constant_operands(ix: &Index, node: &pb::NodeProto) -> bool {
    matches!(attr_s(node, "auto_pad"), None | Some(b"NOTSET") | Some(b""))
        && node
            .input
            .iter()
            .skip(1)
            .all(|i| i.is_empty() || ix.init(i).is_some())
}
