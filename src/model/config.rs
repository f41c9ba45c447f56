//! `[model]`: which ONNX file, its labels, and how frames become its input.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Kernels, PreprocessConfig};
use crate::problems::Problems;

/// `[model]`: the classifier and how to feed it. (Interface contract: keys change only additively.)
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Path of the `.onnx` file. Not set: the bundled default model (parts on a line: ok,
    /// scratch, dent, missing).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Labels file, one label per line in output order. Not set: the model's ONNX metadata
    /// (`labels`, `names`, `classes`, `class_names`, PaddleOCR's `character` or Hugging Face's
    /// `id2label`), else `class_<i>`.
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// "logits": softmax is applied to the output; "probabilities": the output is used as is.
    /// Not set: "probabilities" when the graph ends in a Softmax node (or one named like it),
    /// else "logits"; `lookout check` says which and why.
    #[serde(default)]
    pub output: Option<OutputKind>,
    /// Input shape, only where the model leaves dimensions open, e.g. [1, 3, 224, 224].
    #[serde(default)]
    pub input_shape: Option<Vec<usize>>,
    /// How frames become input tensors.
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    /// Whose convolution kernels run the model: "lookout" (integer kernels for quantized
    /// convolutions, fast depthwise convolutions; see `docs/engine.md`) or "tract" (tract's
    /// own, for comparison).
    #[serde(default)]
    pub kernels: Kernels,
}

/// What the model's output holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    #[default]
    Logits,
    Probabilities,
}

impl ModelConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if let Some(shape) = &self.input_shape {
            if !(shape.len() == 3 || shape.len() == 4) || shape.iter().any(|&d| d == 0 || d > 16384)
            {
                p.push(
                    format!("{key}.input_shape"),
                    format!("expected 4 (or 3) positive dimensions like [1, 3, 224, 224], got {shape:?}"),
                );
            }
        }
        self.preprocess.validate(&format!("{key}.preprocess"), p);
    }

    /// A model config for a bare `--model FILE [--labels FILE]`.
    pub fn for_path(path: PathBuf, labels: Option<PathBuf>) -> ModelConfig {
        ModelConfig {
            path: Some(path),
            labels,
            ..ModelConfig::default()
        }
    }
}
