//! The classifier: an ONNX model loaded through tract, shared by every worker.
//!
//! [`Model::load`] reads the file, checks that tract knows every operator (naming the node of
//! the first it does not), reads the input's layout (NCHW/NHWC), size and dtype from the model
//! (or `input_shape` where the model leaves them open), finds the labels (labels file, ONNX
//! metadata, or `class_<i>`), and compiles one optimised plan. Each worker opens its own
//! [`Session`] on the shared plan; a session owns its tract state and its scratch buffers.
//! Preprocessing is in [`preprocess`], softmax and top-k in [`postprocess`]. This module knows
//! nothing of threads, sources or sinks.

pub mod contrib;
pub mod depthwise;
#[cfg(target_arch = "x86_64")]
pub mod depthwise8;
pub mod fastops;
pub mod fconv;
pub mod labels;
pub mod postprocess;
pub mod preprocess;
pub mod profile;
pub mod qdot;
pub mod qdq;
pub mod qelementwise;
pub mod qgemm;
pub mod qgemv;
pub mod qunary;
pub mod resample;
pub mod softmax;
pub mod team;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tract_onnx::pb;
use tract_onnx::prelude::tract_data::internal::DimLike;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::config::Problems;
use crate::frame::{decode_rgb, jpeg_data, Frame, FrameError, JpegRows, MinSize, RgbBuf};
pub use preprocess::{
    ChannelOrder, InputType, Layout, Preprocess, PreprocessConfig, Resampler, ResizeMode,
};

/// The bundled default model (see `models/MODEL_CARD.md`), used when `model.path` is not set.
pub const BUILTIN_MODEL: &[u8] = include_bytes!("../../models/default.onnx");
/// Name shown for the bundled model.
pub const BUILTIN_NAME: &str = "<bundled default model>";

/// `[model]`: the classifier and how to feed it. (Interface contract: keys change only additively.)
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Path of the `.onnx` file. Not set: the bundled default model (parts on a line: ok,
    /// scratch, dent, missing).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Labels file, one label per line in output order. Not set: the model's ONNX metadata
    /// (`labels`, `names`, `classes` or `class_names`), else `class_<i>`.
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// "logits": softmax is applied to the output; "probabilities": the output is used as is.
    #[serde(default)]
    pub output: OutputKind,
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

/// `model.kernels`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    #[default]
    Lookout,
    Tract,
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
const QDQ_HINT: &str = "Re-export the model in QDQ format, which every engine runs: \
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
}

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
        let onnx = onnx();
        let mut proto = onnx
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(|e| ModelError::Decode {
                model: name.clone(),
                source: e.into(),
            })?;
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
        let mut translations =
            contrib::rewrite(&mut proto).map_err(|refused| ModelError::Contrib {
                model: name.clone(),
                refused,
            })?;
        if cfg.kernels == Kernels::Lookout {
            if let Some(graph) = proto.graph.as_mut() {
                translations.extend(qdq::rewrite(graph));
            }
        }
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
            output: cfg.output,
            preprocess,
            quantization,
            op_counts,
            translations,
            opset,
            kernels: match cfg.kernels {
                Kernels::Tract => "tract's own (model.kernels = \"tract\")".to_owned(),
                Kernels::Lookout => format!(
                    "lookout's for convolutions ({}), tract's for the rest",
                    depthwise::Isa::detect().name()
                ),
            },
            load_time: started.elapsed(),
        })
    }

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

/// Errors while classifying one frame: counted and skipped by the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("cannot decode frame")]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// What one classification produced.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    /// The model's output for this frame, flattened, before any softmax.
    pub raw: Vec<f32>,
    /// Probabilities (softmax of `raw` for logits models).
    pub probs: Vec<f32>,
    pub decode: Duration,
    pub preprocess: Duration,
    pub infer: Duration,
}

/// One worker's handle on the model. Not shared: each worker thread owns one.
pub struct Session {
    model: Arc<Model>,
    state: TypedSimpleState,
    pre: preprocess::Preprocessor,
    /// Decode buffer of a model that takes one frame at a time, and of `prepare_frame`.
    rgb: RgbBuf,
    /// Decode buffers of `classify_frames` for a model with a fixed batch, one per frame.
    rgbs: Vec<RgbBuf>,
}

impl Session {
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Frames one model run takes: the model's fixed batch size (1 for most models).
    pub fn batch(&self) -> usize {
        self.model.input.batch.max(1)
    }

    /// Decodes, preprocesses and classifies one frame.
    pub fn classify_frame(&mut self, frame: &Frame) -> Result<Scores, ClassifyError> {
        self.classify_frames(std::slice::from_ref(frame))
            .pop()
            .expect("one result per frame")
    }

    /// Classifies several frames, one result each, in order. A model with a fixed batch takes
    /// up to [`Session::batch`] frames per run; a frame that cannot be decoded fails alone.
    pub fn classify_frames(&mut self, frames: &[Frame]) -> Vec<Result<Scores, ClassifyError>> {
        if self.rgbs.len() < frames.len() {
            self.rgbs.resize_with(frames.len(), RgbBuf::default);
        }
        let mut results: Vec<Option<Result<Scores, ClassifyError>>> =
            Vec::with_capacity(frames.len());
        let mut decoded = Vec::with_capacity(frames.len());
        // Idle workers (`pipeline.assist`) are invited now, before decoding: one takes a while
        // to wake, and is there when the model starts (see `team::invite`).
        team::invite();
        let sizer = self.pre.decode_sizer();
        let need = move |w: u32, h: u32| sizer.min_decode_size(w, h);
        if self.batch() == 1 {
            return frames
                .iter()
                .map(|frame| match jpeg_data(frame) {
                    Some(data) => self.classify_jpeg(data, &need),
                    None => self.decode_and_classify(frame, &need),
                })
                .collect();
        }
        for (i, frame) in frames.iter().enumerate() {
            let t0 = Instant::now();
            match decode_rgb(frame, Some(&need), &mut self.rgbs[i]) {
                Ok(_) => {
                    decoded.push((i, t0.elapsed()));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e.into()))),
            }
        }
        let rgbs = std::mem::take(&mut self.rgbs);
        for chunk in decoded.chunks(self.batch()) {
            let images: Vec<&RgbBuf> = chunk.iter().map(|(i, _)| &rgbs[*i]).collect();
            match self.infer(&images) {
                Ok(scores) => {
                    for ((i, decode), mut s) in chunk.iter().zip(scores) {
                        s.decode = *decode;
                        results[*i] = Some(Ok(s));
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for (i, _) in chunk {
                        results[*i] = Some(Err(ClassifyError::Model(ModelError::Infer(Box::new(
                            SharedError(Arc::clone(&e)),
                        )))));
                    }
                }
            }
        }
        self.rgbs = rgbs;
        results
            .into_iter()
            .map(|r| r.expect("every frame has a result"))
            .collect()
    }

    /// Decodes and classifies one frame (of a model that takes one at a time).
    fn decode_and_classify(
        &mut self,
        frame: &Frame,
        need: &MinSize,
    ) -> Result<Scores, ClassifyError> {
        let t0 = Instant::now();
        decode_rgb(frame, Some(need), &mut self.rgb)?;
        let decode = t0.elapsed();
        let rgb = std::mem::take(&mut self.rgb);
        let scores = self.infer(&[&rgb]);
        self.rgb = rgb;
        let mut scores = scores.map_err(ModelError::Infer)?;
        let mut s = scores.pop().expect("one result per image");
        s.decode = decode;
        Ok(s)
    }

    /// Decodes, preprocesses and classifies one JPEG frame (of a model that takes one at a
    /// time), the resize starting on the rows already decoded when an idle worker helps
    /// ([`preprocess::Preprocessor::run_filled`]). The decode time is the decoder's; the
    /// preprocessing time is what follows it.
    fn classify_jpeg(&mut self, data: &[u8], need: &MinSize) -> Result<Scores, ClassifyError> {
        let t0 = Instant::now();
        let mut jpeg = JpegRows::start(data, Some(need))?;
        let (w, h) = jpeg.size();
        let mut decoded = None;
        let tensor = self.pre.run_filled(&mut self.rgb, w, h, |rows| {
            while rows.left() > 0 {
                // libjpeg-turbo decodes a row of 8x8 or 16x16 blocks at a time.
                rows.write(16, |buf| jpeg.read(buf))?;
            }
            jpeg.finish()?;
            decoded = Some(Instant::now());
            Ok::<_, FrameError>(())
        })?;
        let t1 = Instant::now();
        let decode = decoded.unwrap_or(t1) - t0;
        let mut scores = self
            .scores(tensor, 1, t1 - t0 - decode)
            .map_err(ModelError::Infer)?;
        let mut s = scores.pop().expect("one result per image");
        s.decode = decode;
        Ok(s)
    }

    /// Decodes and preprocesses one frame into an input tensor, without running the model
    /// (for benchmarks of the stages before inference).
    pub fn prepare_frame(&mut self, frame: &Frame) -> Result<Tensor, ClassifyError> {
        let sizer = self.pre.decode_sizer();
        let need = move |w: u32, h: u32| sizer.min_decode_size(w, h);
        decode_rgb(frame, Some(&need), &mut self.rgb)?;
        Ok(self.pre.run(&self.rgb))
    }

    /// Runs the model on an input tensor as it is; returns the first output, flattened, as f32.
    pub fn run_raw(&mut self, tensor: Tensor) -> Result<Vec<f32>, ModelError> {
        team::invite();
        let outputs = self
            .state
            .run(tvec![tensor.into()])
            .map_err(|e| ModelError::Infer(e.into()))?;
        let out = outputs[0]
            .cast_to::<f32>()
            .map_err(|e| ModelError::Infer(e.into()))?;
        let view = out
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Infer(e.into()))?;
        Ok(view.iter().copied().collect())
    }

    /// Runs the model alone on a prepared input tensor; returns the time it took.
    pub fn run_tensor(&mut self, tensor: Tensor) -> Result<Duration, ClassifyError> {
        let t0 = Instant::now();
        team::invite();
        self.state
            .run(tvec![tensor.into()])
            .map_err(|e| ModelError::Infer(e.into()))?;
        Ok(t0.elapsed())
    }

    /// Preprocesses and classifies an RGB image.
    pub fn classify_rgb(&mut self, rgb: &RgbBuf) -> Result<Scores, ClassifyError> {
        let mut scores = self.infer(&[rgb]).map_err(ModelError::Infer)?;
        Ok(scores.pop().expect("one result per image"))
    }

    /// Preprocesses up to a batch of images and runs the model once; one result per image.
    fn infer(
        &mut self,
        images: &[&RgbBuf],
    ) -> Result<Vec<Scores>, Box<dyn std::error::Error + Send + Sync>> {
        // Idle workers (`pipeline.assist`) help with the model (a no-op if already invited).
        team::invite();
        let t0 = Instant::now();
        let tensor = self.pre.run_batch(images);
        self.scores(tensor, images.len(), t0.elapsed())
    }

    /// Runs the model on a prepared input tensor of `images` images; one result per image,
    /// `preprocess` recorded as each one's preprocessing time.
    fn scores(
        &mut self,
        tensor: Tensor,
        images: usize,
        preprocess: Duration,
    ) -> Result<Vec<Scores>, Box<dyn std::error::Error + Send + Sync>> {
        let t1 = Instant::now();
        let outputs = self.state.run(tvec![tensor.into()])?;
        let t2 = Instant::now();
        let out = outputs[0].cast_to::<f32>()?;
        let flat = out.to_plain_array_view::<f32>()?;
        let flat = flat.as_slice().ok_or("model output is not contiguous")?;
        let classes = self.model.classes();
        Ok((0..images)
            .map(|slot| {
                let raw: Vec<f32> = flat[slot * classes..][..classes].to_vec();
                let probs = match self.model.output {
                    OutputKind::Logits => postprocess::softmax(&raw),
                    OutputKind::Probabilities => raw.clone(),
                };
                Scores {
                    raw,
                    probs,
                    decode: Duration::ZERO,
                    preprocess,
                    infer: t2 - t1,
                }
            })
            .collect())
    }
}

/// One inference error shared by every frame of the batch it failed.
#[derive(Debug)]
struct SharedError(Arc<Box<dyn std::error::Error + Send + Sync>>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// tract's ONNX front end with lookout's operators ([`softmax`], [`fastops`]).
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    softmax::register(&mut onnx.op_register);
    fastops::register(&mut onnx.op_register);
    onnx
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
