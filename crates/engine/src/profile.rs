//! Per-operator profile of one model: where inference time goes, node by node and per operator
//! type, measured by timing each node of tract's optimised plan as a state runs it
//! (`lookout bench --profile`). Reporting only: nothing here changes how a model runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tract_onnx::prelude::*;

/// Time of one operator type, averaged per run.
#[derive(Debug, Clone, Serialize)]
pub struct OpTypeTime {
    /// tract's name for the operator in the optimised plan (e.g. `OptMatMul`, `DepthWise`,
    /// `lookout.QDepthwiseConv`).
    pub op: String,
    /// Nodes of this type in the plan.
    pub nodes: usize,
    /// Milliseconds per run, all nodes of this type together.
    pub ms: f64,
    /// Share of the summed node times.
    pub share: f64,
}

/// One node of the plan, averaged per run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeTime {
    pub node: String,
    pub op: String,
    /// tract's description of the node's operator (kernels, shapes, fused operations).
    pub info: String,
    pub ms: f64,
}

/// A model's profile: per operator type (slowest first) and the slowest nodes.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub runs: usize,
    /// Sum of node times per run, ms (the model-only latency less tract's bookkeeping).
    pub total_ms: f64,
    pub by_op: Vec<OpTypeTime>,
    /// The 15 slowest nodes.
    pub slowest: Vec<NodeTime>,
}

/// Runs `tensor` through `state`'s plan `warmup + runs` times, timing every node on the last
/// `runs`.
pub fn profile(
    state: &mut TypedSimpleState,
    tensor: &Tensor,
    warmup: usize,
    runs: usize,
) -> TractResult<Profile> {
    let runs = runs.max(1);
    let mut per_node: BTreeMap<usize, (String, String, String, Duration)> = BTreeMap::new();
    for i in 0..warmup + runs {
        let timed = i >= warmup;
        state.run_plan_with_eval(tvec![tensor.clone().into()], |ctx, state, node, inputs| {
            let t0 = Instant::now();
            let out = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
            if timed {
                let entry = per_node.entry(node.id).or_insert_with(|| {
                    let info = node.op().info().unwrap_or_default().join("; ");
                    (
                        node.name.clone(),
                        node.op().name().to_string(),
                        info,
                        Duration::ZERO,
                    )
                });
                entry.3 += t0.elapsed();
            }
            out
        })?;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / runs as f64;
    let total: Duration = per_node.values().map(|(_, _, _, d)| *d).sum();
    let mut by_op: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for (_, op, _, d) in per_node.values() {
        let e = by_op.entry(op.clone()).or_default();
        e.0 += 1;
        e.1 += *d;
    }
    let mut by_op: Vec<OpTypeTime> = by_op
        .into_iter()
        .map(|(op, (nodes, d))| OpTypeTime {
            op,
            nodes,
            ms: ms(d),
            share: if total.is_zero() {
                0.0
            } else {
                d.as_secs_f64() / total.as_secs_f64()
            },
        })
        .collect();
    by_op.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let mut slowest: Vec<NodeTime> = per_node
        .into_values()
        .map(|(node, op, info, d)| NodeTime {
            node,
            op,
            info,
            ms: ms(d),
        })
        .collect();
    slowest.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    slowest.truncate(15);
    Ok(Profile {
        runs,
        total_ms: ms(total),
        by_op,
        slowest,
    })
}

/// The profile as a readable table.
pub fn render(p: &Profile) -> String {
    let mut s = format!(
        "Per-operator profile ({} runs, {:.2} ms per run in nodes)\n  {:<34} {:>5} {:>9} {:>6}\n",
        p.runs, p.total_ms, "operator", "nodes", "ms/run", "share"
    );
    for o in &p.by_op {
        s += &format!(
            "  {:<34} {:>5} {:>9.3} {:>5.1}%\n",
            o.op,
            o.nodes,
            o.ms,
            o.share * 100.0
        );
    }
    s += "  slowest nodes:\n";
    for n in &p.slowest {
        s += &format!("    {:>8.3} ms  {:<28} {}\n", n.ms, n.op, n.node);
        if !n.info.is_empty() {
            s += &format!("                 {}\n", n.info);
        }
    }
    s
}
