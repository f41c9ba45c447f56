//! [`ModelError`]: why a model could not be loaded or run, naming the file and what to do.

use std::path::PathBuf;

use lookout_engine::contrib;

/// Why a model could not be used. All are startup errors except `Infer`.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: check `model.path`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{model} is not a valid ONNX file (truncated, corrupt, or another format)")]
    Decode {
        model: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{model} uses operators that tract cannot run:\n{}\n{hint}", list_ops(.ops))]
    Unsupported {
        model: String,
        ops: Vec<UnsupportedOp>,
        hint: String,
    },
    #[error("{model}: cannot translate onnxruntime contrib operators:\n{}\n{}", list_refusals(.refused), QDQ_HINT)]
    Contrib {
        model: String,
        refused: Vec<contrib::Refusal>,
    },
    #[error("{model} has {count} inputs ({names}); lookout needs an image classifier with exactly one input")]
    Inputs {
        model: String,
        count: usize,
        names: String,
    },
    #[error("{model}: input {name:?} has shape {shape}: {why}")]
    InputShape {
        model: String,
        name: String,
        shape: String,
        why: String,
    },
    #[error("{model}: input type {dtype:?} is not supported (expected float32, uint8 or int8)")]
    InputType { model: String, dtype: String },
    #[error("{model}: tract could not prepare the model")]
    Tract {
        model: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{model}: output shape {shape} is not a classifier output ([N, C] or [C])")]
    OutputShape { model: String, shape: String },
    #[error("cannot read labels file {path}: check `model.labels`")]
    Labels {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{labels_from} has {labels} labels but {model} outputs {classes} classes: they must match"
    )]
    LabelCount {
        model: String,
        labels_from: String,
        labels: usize,
        classes: usize,
    },
    #[error("preprocessing does not fit the model: {0}")]
    Preprocess(String),
    #[error("inference failed")]
    Infer(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An operator tract has no implementation for.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsupportedOp {
    pub op_type: String,
    pub domain: String,
    /// The first node using it.
    pub node: String,
    /// How many nodes use it.
    pub count: usize,
}

fn list_refusals(refused: &[contrib::Refusal]) -> String {
    refused
        .iter()
        .map(|r| format!("  - {} at node {:?}: {}", r.op_type, r.node, r.why))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What to do about a quantized operator lookout cannot run.
pub(super) const QDQ_HINT: &str = "Re-export the model in QDQ format, which every engine runs: \
     onnxruntime.quantization.quantize_static(model_fp32, model_int8, calibration_reader, \
     quant_format=QuantFormat.QDQ), or use the float model.";

fn list_ops(ops: &[UnsupportedOp]) -> String {
    ops.iter()
        .map(|o| {
            let domain = if o.domain.is_empty() {
                String::new()
            } else {
                format!(" (domain {})", o.domain)
            };
            let more = if o.count > 1 {
                format!(" and {} more", o.count - 1)
            } else {
                String::new()
            };
            format!("  - {}{domain} at node {:?}{more}", o.op_type, o.node)
        })
        .collect::<Vec<_>>()
        .join("\n")
}
