//! The fp32 graph, edited: BatchNormalization folded into the convolution before it, the
//! tensors to calibrate found, and the QDQ model written: each convolution's input and output
//! activations as `QuantizeLinear -> DequantizeLinear` (uint8, per tensor), its weights as int8
//! (per output channel, symmetric) behind a `DequantizeLinear`, its bias as int32 at
//! `x_scale * w_scale`. A Relu, or a Clip from 0, right after a convolution is absorbed by
//! the output's quantization (its range starts at 0 and uint8 clamps there), as onnxruntime
//! does. This is the pattern lookout's engine runs on its 8-bit kernels (and onnxruntime fuses
//! into QLinearConv); every other operator stays in float and is reported.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

pub use super::proto::quantized_ops;
use super::proto::{
    attr_f, drop_unused_initializers, float_tensor, floats, i32_tensor, i8_tensor, inits,
    is_graph_output, node, node_name, readers, u8_tensor,
};

/// Operator types whose presence means the model is already quantized.
/// Folds every `Conv -> BatchNormalization` (the Conv's only reader, constant operands) into
/// the Conv's weights and bias. Returns how many were folded.
pub fn fold_batch_norms(g: &mut pb::GraphProto) -> usize {
    let mut folds = Vec::new();
    {
        let ix = inits(g);
        let rd = readers(g);
        for (k, bn) in g.node.iter().enumerate() {
            if bn.op_type != "BatchNormalization" || bn.input.len() < 5 || bn.output.len() != 1 {
                continue;
            }
            let Some(ck) = g
                .node
                .iter()
                .position(|n| n.output.first() == bn.input.first())
            else {
                continue;
            };
            let conv = &g.node[ck];
            if conv.op_type != "Conv"
                || rd.get(conv.output[0].as_str()).map_or(0, Vec::len) != 1
                || is_graph_output(g, &conv.output[0])
            {
                continue;
            }
            let get = |i: usize| {
                bn.input
                    .get(i)
                    .and_then(|n| ix.get(n.as_str()))
                    .and_then(|t| floats(t))
            };
            let (Some(gamma), Some(beta), Some(mean), Some(var)) = (get(1), get(2), get(3), get(4))
            else {
                continue;
            };
            let Some(w) = conv.input.get(1).and_then(|n| ix.get(n.as_str())) else {
                continue;
            };
            let Some(wv) = floats(w) else { continue };
            let m = w.dims.first().copied().unwrap_or(0) as usize;
            if m == 0 || [&gamma, &beta, &mean, &var].iter().any(|v| v.len() != m) {
                continue;
            }
            let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
                Some(b) => match ix.get(b.as_str()).and_then(|t| floats(t)) {
                    Some(v) if v.len() == m => v,
                    _ => continue,
                },
                None => vec![0.0; m],
            };
            let eps = attr_f(bn, "epsilon").unwrap_or(1e-5);
            let per = wv.len() / m;
            let mut nw = wv.clone();
            let mut nb = vec![0f32; m];
            for c in 0..m {
                let f = gamma[c] / (var[c] + eps).sqrt();
                for v in &mut nw[c * per..(c + 1) * per] {
                    *v *= f;
                }
                nb[c] = (bias[c] - mean[c]) * f + beta[c];
            }
            let base = if conv.name.is_empty() {
                conv.output[0].clone()
            } else {
                conv.name.clone()
            };
            folds.push((k, ck, w.dims.clone(), nw, nb, base, bn.output[0].clone()));
        }
    }
    let count = folds.len();
    let mut remove = HashSet::new();
    for (bk, ck, dims, w, b, base, out) in folds {
        let wn = format!("{base}/lookout.folded_weight");
        let bname = format!("{base}/lookout.folded_bias");
        g.initializer.push(float_tensor(&wn, &dims, &w));
        g.initializer.push(float_tensor(&bname, &[dims[0]], &b));
        let conv = &mut g.node[ck];
        conv.input.truncate(1);
        conv.input.push(wn);
        conv.input.push(bname);
        conv.output[0] = out;
        remove.insert(bk);
    }
    let mut k = 0;
    g.node.retain(|_| {
        k += 1;
        !remove.contains(&(k - 1))
    });
    drop_unused_initializers(g);
    count
}

/// One convolution to quantize.
#[derive(Debug, Clone)]
pub struct ConvPlan {
    /// The Conv node's name (or its output's, when unnamed).
    pub name: String,
    /// Its input activation.
    pub input: String,
    /// The tensor quantized after it: its output, or the output of the Relu/Clip it absorbs.
    pub output: String,
    /// Whether that Relu/Clip (from 0) is absorbed.
    pub absorbs: Option<String>,
}

/// What the quantizer does with a graph.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub convs: Vec<ConvPlan>,
    /// Every activation whose range is needed, in graph order.
    pub tensors: Vec<String>,
    /// Operator types left in float, with their counts (all but the quantized convolutions
    /// and the activations they absorb).
    pub float_ops: Vec<(String, usize)>,
    /// Convolutions left in float on request (`--keep-float`) or because they cannot be
    /// quantized here, with why.
    pub kept: Vec<(String, String)>,
}

/// The lower and upper bound of a Clip, when constant.
fn clip_bounds(ix: &HashMap<&str, &pb::TensorProto>, n: &pb::NodeProto) -> Option<(f32, f32)> {
    let from_input = |i: usize| -> Option<Option<f32>> {
        match n.input.get(i).filter(|s| !s.is_empty()) {
            None => Some(None),
            Some(name) => ix
                .get(name.as_str())
                .and_then(|t| floats(t))
                .and_then(|v| v.first().copied())
                .map(Some),
        }
    };
    let lo = attr_f(n, "min").or(from_input(1)?);
    let hi = attr_f(n, "max").or(from_input(2)?);
    Some((lo.unwrap_or(f32::MIN), hi.unwrap_or(f32::MAX)))
}

/// Finds the convolutions to quantize and the tensors to calibrate. `keep`: node names (or
/// output names) to leave in float.
pub fn plan(g: &pb::GraphProto, keep: &[String]) -> Plan {
    let ix = inits(g);
    let rd = readers(g);
    let mut plan = Plan::default();
    let mut absorbed: HashSet<usize> = HashSet::new();
    let mut quantized: HashSet<usize> = HashSet::new();
    for (k, n) in g.node.iter().enumerate() {
        if n.op_type != "Conv" || !n.domain.is_empty() {
            continue;
        }
        let name = node_name(n);
        if keep
            .iter()
            .any(|x| *x == name || n.output.first() == Some(x))
        {
            plan.kept.push((name, "--keep-float".into()));
            continue;
        }
        let weight = n.input.get(1).and_then(|w| ix.get(w.as_str()));
        let Some(w) = weight.filter(|w| w.data_type == DataType::Float as i32 && w.dims.len() == 4)
        else {
            plan.kept.push((
                name,
                "its weights are not a constant 2-D float filter".into(),
            ));
            continue;
        };
        let bias_ok = match n.input.get(2).filter(|b| !b.is_empty()) {
            None => true,
            Some(b) => ix
                .get(b.as_str())
                .is_some_and(|t| floats(t).is_some_and(|v| v.len() as i64 == w.dims[0])),
        };
        if !bias_ok {
            plan.kept.push((
                name,
                "its bias is not a constant float vector of one value per filter".into(),
            ));
            continue;
        }
        if ix.contains_key(n.input[0].as_str()) {
            plan.kept
                .push((name, "its input is a constant, not an activation".into()));
            continue;
        }
        let out = &n.output[0];
        // A Relu or Clip(0, ..) as the only reader is absorbed.
        let mut output = out.clone();
        let mut absorbs = None;
        if let Some(r) = rd
            .get(out.as_str())
            .filter(|r| r.len() == 1 && !is_graph_output(g, out))
        {
            let a = &g.node[r[0]];
            let from_zero = match a.op_type.as_str() {
                "Relu" => true,
                "Clip" => clip_bounds(&ix, a).is_some_and(|(lo, _)| lo == 0.0),
                _ => false,
            };
            if from_zero && a.domain.is_empty() && !is_graph_output(g, &a.output[0]) {
                output = a.output[0].clone();
                absorbs = Some(a.op_type.clone());
                absorbed.insert(r[0]);
            }
        }
        quantized.insert(k);
        for t in [&n.input[0], &output] {
            if !plan.tensors.contains(t) {
                plan.tensors.push(t.clone());
            }
        }
        plan.convs.push(ConvPlan {
            name,
            input: n.input[0].clone(),
            output,
            absorbs,
        });
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for (k, n) in g.node.iter().enumerate() {
        if quantized.contains(&k) || absorbed.contains(&k) {
            continue;
        }
        match counts.iter_mut().find(|(op, _)| *op == n.op_type) {
            Some(c) => c.1 += 1,
            None => counts.push((n.op_type.clone(), 1)),
        }
    }
    plan.float_ops = counts;
    plan
}

/// A uint8 activation quantization: scale and zero point for the range `[lo, hi]` (widened
/// to hold 0, so zero is exact; a range starting at 0 has zero point 0).
pub fn activation_qparams(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    if !(hi - lo).is_normal() {
        return (1.0, 0);
    }
    let scale = (hi - lo) / 255.0;
    let zero = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zero)
}

/// Symmetric int8 weights, one scale per output channel (`per_channel`) or one for all:
/// `q = round(w / s)` in -127..=127 with `s = max|w| / 127`.
pub fn quantize_weights(w: &[f32], channels: usize, per_channel: bool) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / channels.max(1);
    let scale_of = |v: &[f32]| {
        let m = v.iter().fold(0f32, |a, &x| a.max(x.abs()));
        if m > 0.0 && m.is_finite() {
            m / 127.0
        } else {
            1.0
        }
    };
    let scales: Vec<f32> = if per_channel {
        (0..channels)
            .map(|c| scale_of(&w[c * per..(c + 1) * per]))
            .collect()
    } else {
        vec![scale_of(w)]
    };
    let q = w
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = scales[if per_channel { i / per } else { 0 }];
            (v / s).round_ties_even().clamp(-127.0, 127.0) as i8
        })
        .collect();
    (q, scales)
}

/// Writes the QDQ graph: `ranges` holds `(lo, hi)` for every tensor of `plan.tensors`.
/// `per_channel`: per output channel weight scales (needs opset 13's `axis`).
pub fn write_qdq(
    g: &mut pb::GraphProto,
    plan: &Plan,
    ranges: &HashMap<String, (f32, f32)>,
    per_channel: bool,
) {
    let mut qdq_of: HashMap<String, (String, f32)> = HashMap::new();
    let mut new_nodes: Vec<(usize, pb::NodeProto)> = Vec::new();
    let mut new_inits: Vec<pb::TensorProto> = Vec::new();
    let producer: HashMap<String, usize> = g
        .node
        .iter()
        .enumerate()
        .flat_map(|(k, n)| n.output.iter().map(move |o| (o.clone(), k)))
        .collect();
    // One Q -> DQ pair per activation, placed after its producer (the graph's inputs: first).
    for t in &plan.tensors {
        let (lo, hi) = ranges.get(t).copied().unwrap_or((0.0, 1.0));
        let (scale, zero) = activation_qparams(lo, hi);
        let (sn, zn) = (
            format!("{t}/lookout.scale"),
            format!("{t}/lookout.zero_point"),
        );
        new_inits.push(float_tensor(&sn, &[], &[scale]));
        new_inits.push(u8_tensor(&zn, &[], &[zero]));
        let (qn, dqn) = (
            format!("{t}/lookout.quantized"),
            format!("{t}/lookout.dequantized"),
        );
        let at = producer.get(t).map_or(0, |&k| k + 1);
        new_nodes.push((
            at,
            node(
                "QuantizeLinear",
                format!("{t}/lookout.quantize"),
                vec![t.clone(), sn.clone(), zn.clone()],
                vec![qn.clone()],
            ),
        ));
        new_nodes.push((
            at,
            node(
                "DequantizeLinear",
                format!("{t}/lookout.dequantize"),
                vec![qn, sn, zn],
                vec![dqn.clone()],
            ),
        ));
        qdq_of.insert(t.clone(), (dqn, scale));
    }
    let ix: HashMap<String, pb::TensorProto> = inits(g)
        .into_iter()
        .map(|(k, t)| (k.to_owned(), t.clone()))
        .collect();
    for c in &plan.convs {
        let Some(k) = g
            .node
            .iter()
            .position(|n| n.op_type == "Conv" && node_name(n) == c.name)
        else {
            continue;
        };
        let (x_dq, x_scale) = qdq_of[&c.input].clone();
        let n = &g.node[k];
        let w = &ix[&n.input[1]];
        let wv = floats(w).unwrap_or_default();
        let m = w.dims[0] as usize;
        let (wq, ws) = quantize_weights(&wv, m, per_channel);
        let wname = &n.input[1];
        let (wqn, wsn, wzn, wdq) = (
            format!("{wname}/lookout.quantized"),
            format!("{wname}/lookout.scale"),
            format!("{wname}/lookout.zero_point"),
            format!("{wname}/lookout.dequantized"),
        );
        new_inits.push(i8_tensor(&wqn, &w.dims, &wq));
        let sdims: Vec<i64> = if per_channel { vec![m as i64] } else { vec![] };
        new_inits.push(float_tensor(&wsn, &sdims, &ws));
        new_inits.push(i8_tensor(&wzn, &sdims, &vec![0; ws.len()]));
        let mut wdq_node = node(
            "DequantizeLinear",
            format!("{wname}/lookout.dequantize"),
            vec![wqn, wsn, wzn],
            vec![wdq.clone()],
        );
        if per_channel {
            wdq_node.attribute.push(pb::AttributeProto {
                name: "axis".into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: 0,
                ..Default::default()
            });
        }
        let mut inputs = vec![x_dq, wdq];
        if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
            let bv = floats(&ix[b]).unwrap_or_default();
            let scales: Vec<f32> = (0..m)
                .map(|i| x_scale * ws[if per_channel { i } else { 0 }])
                .collect();
            let q: Vec<i32> = bv
                .iter()
                .zip(&scales)
                .map(|(&v, &s)| {
                    (f64::from(v) / f64::from(s))
                        .round_ties_even()
                        .clamp(i32::MIN as f64, i32::MAX as f64) as i32
                })
                .collect();
            let (bqn, bsn, bzn, bdq) = (
                format!("{b}/lookout.quantized"),
                format!("{b}/lookout.scale"),
                format!("{b}/lookout.zero_point"),
                format!("{b}/lookout.dequantized"),
            );
            new_inits.push(i32_tensor(&bqn, &[m as i64], &q));
            let bdims: Vec<i64> = if per_channel { vec![m as i64] } else { vec![] };
            let bscales: Vec<f32> = if per_channel {
                scales.clone()
            } else {
                vec![scales[0]]
            };
            new_inits.push(float_tensor(&bsn, &bdims, &bscales));
            new_inits.push(i32_tensor(&bzn, &bdims, &vec![0; bscales.len()]));
            let mut bdq_node = node(
                "DequantizeLinear",
                format!("{b}/lookout.dequantize"),
                vec![bqn, bsn, bzn],
                vec![bdq.clone()],
            );
            if per_channel {
                bdq_node.attribute = wdq_node.attribute.clone();
            }
            new_nodes.push((k, bdq_node));
            inputs.push(bdq);
        }
        new_nodes.push((k, wdq_node));
        // With an absorbed Relu/Clip the Conv writes that activation's output itself and the
        // activation goes: uint8 from zero point 0 clamps at 0, as it did.
        let n = &mut g.node[k];
        n.input = inputs;
        if c.absorbs.is_some() {
            n.output[0] = c.output.clone();
        }
    }
    // The absorbed Relu/Clip nodes: the ones whose output the Conv now writes.
    let convs_out: HashSet<&String> = plan
        .convs
        .iter()
        .filter(|c| c.absorbs.is_some())
        .map(|c| &c.output)
        .collect();
    let absorbed_nodes: HashSet<usize> = g
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            (n.op_type == "Relu" || n.op_type == "Clip")
                && n.output.first().is_some_and(|o| convs_out.contains(o))
        })
        .map(|(k, _)| k)
        .collect();
    // Every reader of a quantized activation (other than its own QuantizeLinear) reads its
    // dequantized copy.
    for n in &mut g.node {
        for i in &mut n.input {
            if let Some((dq, _)) = qdq_of.get(i.as_str()) {
                *i = dq.clone();
            }
        }
    }
    // Insert the new nodes after their producers (in reverse so indices stay valid), then
    // restore the QuantizeLinear inputs the loop above redirected.
    new_nodes.sort_by_key(|(at, _)| *at);
    let mut nodes: Vec<pb::NodeProto> = Vec::with_capacity(g.node.len() + new_nodes.len());
    let mut pending = new_nodes.into_iter().peekable();
    for (k, n) in std::mem::take(&mut g.node).into_iter().enumerate() {
        while let Some((_, nn)) = pending.next_if(|(at, _)| *at == k) {
            nodes.push(nn);
        }
        if !absorbed_nodes.contains(&k) {
            nodes.push(n);
        }
    }
    nodes.extend(pending.map(|(_, n)| n));
    g.node = nodes;
    g.initializer.extend(new_inits);
    drop_unused_initializers(g);
    // Graph outputs keep their float tensors (a quantized tensor may be one).
    sort_topologically(g);
}

/// Orders the nodes so every node comes after the producers of its inputs (ONNX requires it;
/// the insertions above place nodes near, not always after, what they read).
fn sort_topologically(g: &mut pb::GraphProto) {
    let mut available: HashSet<String> = g.input.iter().map(|i| i.name.clone()).collect();
    available.extend(g.initializer.iter().map(|t| t.name.clone()));
    available.insert(String::new());
    let mut left: Vec<pb::NodeProto> = std::mem::take(&mut g.node);
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let before = left.len();
        let mut rest = Vec::new();
        for n in left {
            if n.input.iter().all(|i| available.contains(i)) {
                available.extend(n.output.iter().cloned());
                out.push(n);
            } else {
                rest.push(n);
            }
        }
        if rest.len() == before {
            // A cycle or a missing input: keep the order, tract will say what is wrong.
            out.extend(rest);
            break;
        }
        left = rest;
    }
    g.node = out;
}

#[cfg(test)]
mod tests;
