//! [`Session`]: one worker's handle on a shared [`Model`]: its own tract state and buffers.
//! A session decodes a frame (a JPEG's resize starting on the rows already decoded),
//! preprocesses it into the model's input tensor, runs the model and turns the output into
//! [`Scores`]; it invites idle workers to help with the run (the engine's team).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_engine::team;
use tract_onnx::prelude::*;

use super::{postprocess, preprocess, Model, ModelError, OutputKind};
use crate::frame::{decode_rgb, jpeg_data, Frame, FrameError, JpegRows, MinSize, RgbBuf};

/// Errors while classifying one frame: counted and skipped by the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("cannot decode frame")]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The frame's source or region names a model the worker has no session of.
    #[error("no model named {0:?} runs in this configuration")]
    NoModel(String),
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
    pub(super) model: Arc<Model>,
    pub(super) state: TypedSimpleState,
    pub(super) pre: preprocess::Preprocessor,
    /// Decode buffer of a model that takes one frame at a time, and of `prepare_frame`.
    pub(super) rgb: RgbBuf,
    /// Decode buffers of `classify_frames` for a model with a fixed batch, one per frame.
    pub(super) rgbs: Vec<RgbBuf>,
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
    /// Decodes `frame` to RGB as [`Session::classify_frame`] does before resizing: a JPEG at
    /// the smallest DCT scale the model's preprocessing allows (for a caller that edits the
    /// pixels, e.g. `lookout train`'s flipped copies, and then classifies them).
    pub fn decode(&self, frame: &Frame, out: &mut RgbBuf) -> Result<(), FrameError> {
        let sizer = self.pre.decode_sizer();
        let need = move |w: u32, h: u32| sizer.min_decode_size(w, h);
        decode_rgb(frame, Some(&need), out)
    }

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

    /// Classifies one frame and returns the input tensor it was fed, the same
    /// preprocessing as [`Self::classify_frame`] (`lookout classify --dump-input`).
    pub fn classify_frame_with_input(
        &mut self,
        frame: &Frame,
    ) -> Result<(Scores, Tensor), ClassifyError> {
        let t0 = Instant::now();
        let tensor = self.prepare_frame(frame)?;
        let fed = tensor.clone();
        let mut scores = self
            .scores(tensor, 1, t0.elapsed())
            .map_err(ModelError::Infer)?;
        let s = scores.pop().expect("one result per image");
        Ok((s, fed))
    }

    /// Runs the model on an input tensor as it is; returns the first output, flattened, as f32.
    pub fn run_raw(&mut self, tensor: Tensor) -> Result<Vec<f32>, ModelError> {
        self.run_all(tensor)?
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::Infer("the model gave no output".into()))
    }

    /// Runs the model on an input tensor as it is; returns every output, flattened, as f32
    /// (`lookout quantize` reads a model's intermediate tensors this way).
    pub fn run_all(&mut self, tensor: Tensor) -> Result<Vec<Vec<f32>>, ModelError> {
        team::invite();
        let outputs = self
            .state
            .run(tvec![tensor.into()])
            .map_err(|e| ModelError::Infer(e.into()))?;
        outputs
            .iter()
            .map(|o| {
                let out = o
                    .cast_to::<f32>()
                    .map_err(|e| ModelError::Infer(e.into()))?;
                let view = out
                    .to_plain_array_view::<f32>()
                    .map_err(|e| ModelError::Infer(e.into()))?;
                Ok(view.iter().copied().collect())
            })
            .collect()
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
    pub(super) fn infer(
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
