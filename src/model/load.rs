//! [`Model::load`]: reading an ONNX file, checking its operators and single input, detecting
//! its quantization, rewriting it for the engine's kernels, reading the input's layout, size and
//! dtype, resolving labels and compiling one optimised tract plan.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use tract_onnx::pb;
use tract_onnx::prelude::tract_data::internal::DimLike;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use lookout_engine::contrib;

use super::error::QDQ_HINT;
use super::{
    labels, onnx, InputSpec, InputType, Layout, Model, ModelConfig, ModelError, Quantization,
    UnsupportedOp, BUILTIN_MODEL, BUILTIN_NAME,
};

impl Model {
    /// Loads and compiles the model described by `cfg`.
    pub fn load(cfg: &ModelConfig) -> Result<Model, ModelError> {
        let started = Instant::now();
        let (name, bytes) = match &cfg.path {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
                    path: path.clone(),
                    source,
                })?;
                (path.display().to_string(), bytes)
            }
            None => (BUILTIN_NAME.to_owned(), BUILTIN_MODEL.to_vec()),
        };
        let proto = onnx()
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(|e| ModelError::Decode {
                model: name.clone(),
                source: e.into(),
            })?;
        Model::load_proto(cfg, name, proto, started)
    }

    /// Loads and compiles an ONNX model already decoded (`lookout train`'s cut backbone):
    /// `cfg.path` is still where external data and the preprocessing defaults come from.
    pub fn load_proto(
        cfg: &ModelConfig,
        name: String,
        mut proto: pb::ModelProto,
        started: Instant,
    ) -> Result<Model, ModelError> {
        let onnx = onnx();
        let graph = proto.graph.as_ref().ok_or_else(|| ModelError::Decode {
            model: name.clone(),
            source: "the file holds no graph".into(),
        })?;
        if graph.node.is_empty() {
            return Err(ModelError::Decode {
                model: name,
                source: "the graph has no nodes".into(),
            });
        }
        // Counted before the rewrite: `check` shows the operators of the file as it is.
        let op_counts = count_ops(graph);
        let quantization = detect_quantization(graph);
        let input_name = single_input(graph, &name)?;
        let translations = lookout_engine::rewrite(&mut proto, cfg.kernels).map_err(|refused| {
            ModelError::Contrib {
                model: name.clone(),
                refused,
            }
        })?;
        let graph = proto.graph.as_ref().expect("checked above");
        check_operators(&onnx, graph, &name)?;
        let opset = contrib::onnx_opset(&proto);

        let model_dir = cfg
            .path
            .as_ref()
            .and_then(|p| p.parent())
            .and_then(Path::to_str);
        let tract_err = |e: TractError| ModelError::Tract {
            model: name.clone(),
            source: e.into(),
        };
        let parsed = onnx.parse(&proto, model_dir).map_err(tract_err)?;
        let fact = parsed.model.input_fact(0).map_err(tract_err)?.clone();
        let input = input_spec(&fact, &input_name, cfg.input_shape.as_deref(), &name)?;
        let dt = match input.dtype {
            InputType::F32 => f32::datum_type(),
            InputType::U8 => u8::datum_type(),
            InputType::I8 => i8::datum_type(),
        };
        let optimize = |model: InferenceModel| -> TractResult<TypedModel> {
            model
                .with_input_fact(0, InferenceFact::dt_shape(dt, input.shape()))?
                .into_optimized()
        };
        let typed = match optimize(parsed.model) {
            Ok(t) => t,
            // Exporters often annotate intermediate tensors (value_info) with the symbolic batch
            // dimension, which then cannot unify with the fixed batch lookout feeds. Those
            // annotations are hints: retry without them before giving up.
            Err(first) => {
                let relaxed = self::onnx().with_ignore_value_info(true);
                match relaxed
                    .parse(&proto, model_dir)
                    .and_then(|p| optimize(p.model))
                {
                    Ok(t) => t,
                    Err(_) => return Err(tract_err(first)),
                }
            }
        };
        let out_fact = typed.output_fact(0).map_err(tract_err)?;
        let out_shape: Vec<usize> = out_fact
            .shape
            .as_concrete()
            .map(|s| s.to_vec())
            .ok_or_else(|| ModelError::OutputShape {
                model: name.clone(),
                shape: format!("{:?}", out_fact.shape),
            })?;
        let classes =
            classes_in_output(&out_shape, input.batch).ok_or_else(|| ModelError::OutputShape {
                model: name.clone(),
                shape: format!("{out_shape:?}"),
            })?;
        let plan = typed.into_runnable().map_err(tract_err)?;

        let (labels, labels_from) =
            labels::resolve(cfg.labels.as_deref(), &proto.metadata_props, classes)?;
        if labels.len() != classes {
            return Err(ModelError::LabelCount {
                model: name,
                labels_from: labels_from.to_string(),
                labels: labels.len(),
                classes,
            });
        }
        let (output, output_why) = super::output::resolve(cfg.output, graph_of(&proto));
        let preprocess = cfg
            .preprocess
            .resolve(cfg.path.is_none(), &input)
            .map_err(ModelError::Preprocess)?;
        Ok(Model {
            name,
            plan,
            input,
            labels,
            labels_from,
            output,
            output_why,
            preprocess,
            quantization,
            op_counts,
            translations,
            opset,
            kernels: cfg.kernels.describe(),
            load_time: started.elapsed(),
            card_accuracy: card_accuracy(&proto.metadata_props),
        })
    }
}

/// The metadata property `lookout train` writes with the validation accuracy of its model
/// card, so the figure travels with the file (`POST /api/model`).
pub const CARD_ACCURACY_KEY: &str = "lookout_validation_accuracy";

/// The card's validation accuracy in the model's metadata, when it holds a number in 0..1.
fn card_accuracy(metadata: &[pb::StringStringEntryProto]) -> Option<f64> {
    metadata
        .iter()
        .find(|p| p.key == CARD_ACCURACY_KEY)
        .and_then(|p| p.value.trim().parse::<f64>().ok())
        .filter(|a| (0.0..=1.0).contains(a))
}

fn check_operators(
    onnx: &tract_onnx::Onnx,
    graph: &pb::GraphProto,
    model: &str,
) -> Result<(), ModelError> {
    let mut ops: Vec<UnsupportedOp> = Vec::new();
    for node in &graph.node {
        if !onnx.op_register.0.contains_key(&node.op_type) {
            ops.push(UnsupportedOp {
                op_type: node.op_type.clone(),
                domain: node.domain.clone(),
                node: if node.name.is_empty() {
                    node.output.first().cloned().unwrap_or_default()
                } else {
                    node.name.clone()
                },
                count: 1,
            });
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let is_contrib = ops.iter().any(|o| o.domain == "com.microsoft");
    let hint = if is_contrib {
        format!(
            "These are onnxruntime contrib operators; lookout translates {}. {QDQ_HINT}",
            contrib::TRANSLATED.join(", ")
        )
    } else {
        "Re-export the model with a standard ONNX operator set (opset 9 to 18), or replace these operators.".to_owned()
    };
    // Keep the message readable: each operator type once, at its first node, with a count.
    let mut firsts: Vec<UnsupportedOp> = Vec::new();
    for op in &ops {
        if !firsts.iter().any(|f| f.op_type == op.op_type) {
            let count = ops.iter().filter(|o| o.op_type == op.op_type).count();
            firsts.push(UnsupportedOp {
                count,
                ..op.clone()
            });
        }
    }
    Err(ModelError::Unsupported {
        model: model.to_owned(),
        ops: firsts,
        hint,
    })
}

fn single_input(graph: &pb::GraphProto, model: &str) -> Result<String, ModelError> {
    let init: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !init.contains(n))
        .collect();
    if inputs.len() != 1 {
        return Err(ModelError::Inputs {
            model: model.to_owned(),
            count: inputs.len(),
            names: inputs
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(inputs[0].to_owned())
}

fn count_ops(graph: &pb::GraphProto) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in &graph.node {
        *counts.entry(node.op_type.clone()).or_insert(0) += 1;
    }
    counts
}

fn detect_quantization(graph: &pb::GraphProto) -> Quantization {
    let qop = graph
        .node
        .iter()
        .any(|n| n.op_type.starts_with("QLinear") || n.op_type == "QGemm");
    let dims: std::collections::HashMap<&str, i64> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.dims.iter().product::<i64>()))
        .collect();
    if qop {
        // The weight scale: input 4 of QLinearConv and QGemm, 4 of QLinearMatMul.
        let per_channel = graph
            .node
            .iter()
            .filter(|n| {
                matches!(
                    n.op_type.as_str(),
                    "QLinearConv" | "QLinearMatMul" | "QGemm"
                )
            })
            .filter_map(|n| n.input.get(4))
            .any(|s| dims.get(s.as_str()).copied().unwrap_or(1) > 1);
        return if per_channel {
            Quantization::QOperatorPerChannel
        } else {
            Quantization::QOperator
        };
    }
    let mut qdq = false;
    for n in graph
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear" || n.op_type == "QuantizeLinear")
    {
        qdq = true;
        if let Some(scale) = n.input.get(1) {
            if dims.get(scale.as_str()).copied().unwrap_or(1) > 1 {
                return Quantization::QdqPerChannel;
            }
        }
    }
    if qdq {
        Quantization::QdqPerTensor
    } else {
        Quantization::Float
    }
}

/// Classes per batch item of an output of shape `[N, C]`, `[C]`, or `[N, C, 1, 1]`.
fn classes_in_output(shape: &[usize], batch: usize) -> Option<usize> {
    let total: usize = shape.iter().product();
    let classes = match shape {
        [c] => *c,
        [n, c] if *n == batch => *c,
        [n, c, rest @ ..] if *n == batch && rest.iter().all(|&d| d == 1) => *c,
        _ => return None,
    };
    (classes > 0 && total == classes * if shape.len() == 1 { 1 } else { batch }).then_some(classes)
}

fn input_spec(
    fact: &InferenceFact,
    name: &str,
    configured: Option<&[usize]>,
    model: &str,
) -> Result<InputSpec, ModelError> {
    let dims: Vec<Option<usize>> = fact
        .shape
        .dims()
        .map(|d| d.concretize().and_then(|td| td.to_usize().ok()))
        .collect();
    let shape_str = format!(
        "[{}]",
        dims.iter()
            .map(|d| d.map_or("?".to_owned(), |v| v.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let err = |why: String| ModelError::InputShape {
        model: model.to_owned(),
        name: name.to_owned(),
        shape: shape_str.clone(),
        why,
    };
    let dims: Vec<Option<usize>> = match configured {
        Some(cfg) => {
            if !dims.is_empty() && dims.len() != cfg.len() {
                return Err(err(format!(
                    "model.input_shape {cfg:?} has {} dimensions, the model {}",
                    cfg.len(),
                    dims.len()
                )));
            }
            for (i, (m, c)) in dims.iter().zip(cfg).enumerate() {
                if let Some(m) = m {
                    if m != c {
                        return Err(err(format!("model.input_shape {cfg:?} disagrees with the model at axis {i} ({c} vs {m})")));
                    }
                }
            }
            cfg.iter().map(|&d| Some(d)).collect()
        }
        None => dims,
    };
    let dtype = match fact.datum_type.concretize() {
        None => InputType::F32,
        Some(dt) if dt == f32::datum_type() => InputType::F32,
        Some(dt) if dt == u8::datum_type() => InputType::U8,
        Some(dt) if dt == i8::datum_type() => InputType::I8,
        Some(dt) => {
            return Err(ModelError::InputType {
                model: model.to_owned(),
                dtype: format!("{dt:?}"),
            })
        }
    };
    let (has_batch_axis, batch, rest) = match dims.len() {
        4 => (true, dims[0].unwrap_or(1), &dims[1..]),
        3 => (false, 1, &dims[..]),
        0 => {
            return Err(err(
                "the model does not say; set model.input_shape, e.g. [1, 3, 224, 224]".into(),
            ))
        }
        n => {
            return Err(err(format!(
                "{n} dimensions; an image input has 4 (N, C, H, W or N, H, W, C)"
            )))
        }
    };
    let is_ch = |d: Option<usize>| matches!(d, Some(1) | Some(3));
    let layout = if is_ch(rest[0]) && !is_ch(rest[2]) {
        Layout::Nchw
    } else if is_ch(rest[2]) && !is_ch(rest[0]) {
        Layout::Nhwc
    } else if is_ch(rest[0]) {
        Layout::Nchw
    } else {
        return Err(err(
            "no channel axis of size 1 or 3 in position C of NCHW or NHWC".into(),
        ));
    };
    let (c, h, w) = match layout {
        Layout::Nchw => (rest[0], rest[1], rest[2]),
        Layout::Nhwc => (rest[2], rest[0], rest[1]),
    };
    let (Some(c), Some(h), Some(w)) = (c, h, w) else {
        let example = match layout {
            Layout::Nchw => "[1, 3, 224, 224]",
            Layout::Nhwc => "[1, 224, 224, 3]",
        };
        return Err(err(format!(
            "height or width is left open by the model; set model.input_shape, e.g. {example}"
        )));
    };
    Ok(InputSpec {
        name: name.to_owned(),
        layout,
        dtype,
        batch,
        has_batch_axis,
        channels: c,
        height: h,
        width: w,
    })
}

/// The model's graph (checked to exist when the file was read); an empty one otherwise.
fn graph_of(proto: &pb::ModelProto) -> &pb::GraphProto {
    static EMPTY: std::sync::OnceLock<pb::GraphProto> = std::sync::OnceLock::new();
    proto
        .graph
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(Default::default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_output_shapes() {
        assert_eq!(classes_in_output(&[1, 10], 1), Some(10));
        assert_eq!(classes_in_output(&[10], 1), Some(10));
        assert_eq!(classes_in_output(&[16, 10], 16), Some(10));
        assert_eq!(classes_in_output(&[1, 1000, 1, 1], 1), Some(1000));
        assert_eq!(classes_in_output(&[1, 10, 7, 7], 1), None);
        assert_eq!(classes_in_output(&[2, 10], 1), None);
    }

    fn fact(shape: &[Option<usize>]) -> InferenceFact {
        let dims: TVec<tract_onnx::tract_hir::infer::DimFact> = shape
            .iter()
            .map(|d| match d {
                Some(v) => tract_onnx::tract_hir::infer::GenericFactoid::Only(TDim::from(*v)),
                None => tract_onnx::tract_hir::infer::GenericFactoid::Any,
            })
            .collect();
        InferenceFact::dt(f32::datum_type())
            .with_shape(tract_onnx::tract_hir::infer::ShapeFactoid::closed(dims))
    }

    #[test]
    fn input_layout_and_open_dims() {
        let s =
            input_spec(&fact(&[None, Some(3), Some(96), Some(96)]), "x", None, "m").expect("nchw");
        assert_eq!(
            (s.layout, s.batch, s.channels, s.height, s.width),
            (Layout::Nchw, 1, 3, 96, 96)
        );
        let s = input_spec(
            &fact(&[Some(1), Some(224), Some(224), Some(3)]),
            "x",
            None,
            "m",
        )
        .expect("nhwc");
        assert_eq!((s.layout, s.height), (Layout::Nhwc, 224));
        let s = input_spec(
            &fact(&[Some(16), Some(3), Some(32), Some(32)]),
            "x",
            None,
            "m",
        )
        .expect("batch 16");
        assert_eq!(s.batch, 16);
        let e = input_spec(&fact(&[Some(1), Some(3), None, None]), "x", None, "m")
            .expect_err("open h/w");
        assert!(e.to_string().contains("input_shape"), "{e}");
        let s = input_spec(
            &fact(&[Some(1), Some(3), None, None]),
            "x",
            Some(&[1, 3, 128, 160]),
            "m",
        )
        .expect("configured");
        assert_eq!((s.height, s.width), (128, 160));
        let e = input_spec(
            &fact(&[Some(1), Some(3), Some(96), Some(96)]),
            "x",
            Some(&[1, 3, 64, 64]),
            "m",
        )
        .expect_err("conflict");
        assert!(e.to_string().contains("disagrees"), "{e}");
        assert!(input_spec(&fact(&[Some(1), Some(5), Some(7), Some(9)]), "x", None, "m").is_err());
    }
}
