//! The classifier: an ONNX model loaded through tract, shared by every worker.
//!
//! [`Model::load`] reads the file, checks that tract knows every operator (naming the node of
//! the first it does not), reads the input's layout (NCHW/NHWC), size and dtype from the model
//! (or `input_shape` where the model leaves them open), finds the labels (labels file, ONNX
//! metadata, or `class_<i>`), and compiles one optimised plan. Each worker opens its own
//! [`Session`] on the shared plan; a session owns its tract state and its scratch buffers.
//! Preprocessing is in [`preprocess`], softmax and top-k in [`postprocess`]. This module knows
//! nothing of threads, sources or sinks.

mod config;
pub mod crop;
mod error;
pub mod labels;
mod load;
pub use load::CARD_ACCURACY_KEY;
pub mod npy;
mod output;

pub mod postprocess;
pub mod preprocess;
pub mod profile;
pub mod resample;
mod session;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tract_onnx::prelude::*;

use lookout_engine::contrib;
pub use lookout_engine::{onnx, Kernels};

pub use config::{ModelConfig, OutputKind};

/// The name of `[model]` among the named models (`[models.NAME]`, see [`crate::models`]): the
/// model of every source and region that names none.
pub const DEFAULT_NAME: &str = "default";
pub use error::{ModelError, UnsupportedOp};
pub use preprocess::{
    ChannelOrder, InputType, Layout, Preprocess, PreprocessConfig, Resampler, ResizeMode,
};
pub use session::{ClassifyError, Scores, Session};

use crate::frame::RgbBuf;
use std::path::PathBuf;

/// The bundled default model (see `models/MODEL_CARD.md`), used when `model.path` is not set.
pub const BUILTIN_MODEL: &[u8] = include_bytes!("../../models/default.onnx");
/// Name shown for the bundled model.
pub const BUILTIN_NAME: &str = "<bundled default model>";

/// The model's input as lookout feeds it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub layout: Layout,
    pub dtype: InputType,
    /// Batch size the model requires (1 unless the model fixes another).
    pub batch: usize,
    /// Whether the tensor has a batch axis at all.
    pub has_batch_axis: bool,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputSpec {
    /// The full tensor shape, in the model's layout.
    pub fn shape(&self) -> Vec<usize> {
        let mut s = match self.layout {
            Layout::Nchw => vec![self.channels, self.height, self.width],
            Layout::Nhwc => vec![self.height, self.width, self.channels],
        };
        if self.has_batch_axis {
            s.insert(0, self.batch);
        }
        s
    }
}

/// The quantization scheme found in the graph, for `lookout check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    Float,
    QdqPerTensor,
    QdqPerChannel,
    QOperator,
    QOperatorPerChannel,
}

impl Quantization {
    pub fn describe(self) -> &'static str {
        match self {
            Quantization::Float => "none (float)",
            Quantization::QdqPerTensor => "int8 QDQ, per-tensor",
            Quantization::QdqPerChannel => "int8 QDQ, per-channel",
            Quantization::QOperator => "int8 QOperator (QLinear* operators), per-tensor",
            Quantization::QOperatorPerChannel => {
                "int8 QOperator (QLinear* operators), per-channel weights"
            }
        }
    }
}

/// Where the labels came from.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSource {
    File(PathBuf),
    Metadata(String),
    Generated,
}

impl std::fmt::Display for LabelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelSource::File(p) => write!(f, "labels file {}", p.display()),
            LabelSource::Metadata(k) => write!(f, "ONNX metadata property {k:?}"),
            LabelSource::Generated => f.write_str("generated names class_<i>"),
        }
    }
}

/// A loaded, optimised classifier. Shared (`Arc`) by all workers; immutable.
#[derive(Debug)]
pub struct Model {
    /// Display name: the path, or [`BUILTIN_NAME`].
    pub name: String,
    /// The optimised plan; each [`Session`] holds its own state over it.
    plan: Arc<TypedSimplePlan>,
    pub input: InputSpec,
    pub labels: Vec<String>,
    pub labels_from: LabelSource,
    pub output: OutputKind,
    /// Why [`Self::output`] is what it is (`model.output`, or the graph's last node).
    pub output_why: String,
    pub preprocess: Preprocess,
    pub quantization: Quantization,
    /// Operator types in the ONNX graph and how often each occurs.
    pub op_counts: BTreeMap<String, usize>,
    /// onnxruntime contrib operators rewritten into standard ones ([`contrib`]).
    pub translations: Vec<contrib::Translation>,
    pub opset: i64,
    /// Whose kernels run the convolutions, for `check` and `bench`.
    pub kernels: String,
    pub load_time: Duration,
    /// The validation accuracy `lookout train` wrote into the model's metadata (its model
    /// card's figure), when it has one.
    pub card_accuracy: Option<f64>,
}

impl Model {
    /// Number of classes the model scores.
    pub fn classes(&self) -> usize {
        self.labels.len()
    }

    /// A per-worker session: its own tract state and buffers over the shared plan.
    pub fn session(self: &Arc<Self>) -> Result<Session, ModelError> {
        let state = TypedSimpleState::new(&self.plan).map_err(|e| ModelError::Infer(e.into()))?;
        Ok(Session {
            model: Arc::clone(self),
            state,
            pre: preprocess::Preprocessor::new(self.preprocess, self.input.clone()),
            rgb: RgbBuf::default(),
            rgbs: Vec::new(),
        })
    }
}
