//! `lookout`: an edge computer-vision inference daemon.
//!
//! A capture thread per source pulls frames from a [`source::FrameSource`], a pool of workers
//! shared by every source decodes,
//! preprocesses and classifies them with an ONNX model ([`model`], run by the engine crate
//! `lookout_engine`: tract plus lookout's kernels), a dispatcher turns scores into events with
//! per-class [`rules`], and each [`sink`] delivers events on its own thread. This crate is the
//! library behind the `lookout` binary; the binary only parses the command line and prints
//! errors.
//!
//! # Layout
//!
//! Configuration:
//! - [`config`]: the TOML file, parsed (`deny_unknown_fields`), validated without I/O, with errors
//!   that name the file and the key path. Each component's config struct documents its keys.
//! - [`problems`]: the validation problems every component's `validate()` collects.
//!
//! Frames in:
//! - [`frame`]: the [`frame::Frame`] type and pixel formats (RGB, GRAY, YUYV, NV12, MJPEG, encoded
//!   files), their conversion to RGB (in the workers, never on capture), a JPEG's rows decoded as
//!   the resize reads them, `jpeg_window` a JPEG decoded only in the window its regions need
//!   (libjpeg-turbo's skip and crop), and JPEG encoding (snapshots, the live view); `image_file`, which files are read as images.
//! - [`source`]: the [`source::FrameSource`] trait and the sources: `synthetic` (rendered scenes
//!   for the bundled model, with their true label), `files` (images on disk), `pipe` (a
//!   program's output: ffmpeg for RTSP, rpicam-vid, GStreamer), `http_mjpeg` (IP cameras) and
//!   `camera` (V4L2 through nokhwa, crate feature `camera`); `feed` is the reader thread the
//!   live ones share, `mjpeg` splits a byte stream into JPEG frames; `list` is the `[[sources]]`
//!   list (names, the `[source]` shorthand) and `regions` its regions and grids.
//!
//! Classifying:
//! - [`model`]: loading an ONNX classifier (the engine's rewrites, then tract's optimiser),
//!   detecting its input layout, size and dtype, labels, quantization, whether the output is
//!   already probabilities (`output`); per-worker sessions; preprocessing (`preprocess/`:
//!   geometry, presets, the tensor writer; `resample/`: the Pillow-exact bilinear and bicubic
//!   resampler, `resample/nearest` Pillow's NEAREST, `resample/opencv` OpenCV's `cv2.resize`
//!   modes) and postprocessing (softmax, top-k); input tensors as `.npy` (`npy`, for
//!   `classify --dump-input`); the per-node profile; `crop`, a frame's regions classified as
//!   their own crops.
//! - [`models`]: the configuration's models, `[model]` ("default") and `[models.NAME]`: which
//!   sources and regions use each, each one in use loaded once, rule labels checked against
//!   the models of what each rule watches.
//!
//! Scores out:
//! - [`rules`]: per-class thresholds, N-of-M frames and cooldown, per source and region,
//!   turning scores into events.
//! - [`drift`]: per source and region, the label distribution of a rolling window against a
//!   reference (the first frames or the model card) by PSI, and the mean top-1 score
//!   (`stats`), the `[drift]` table (`config`), and `kind = "drift"` rules (`alarm`).
//! - [`collect`]: the frames worth labelling (unsure, close, sampled per label, events) kept
//!   as an image-folder dataset with a manifest, bounded, near duplicates dropped by a
//!   perceptual hash (`phash`), on a thread of its own fed without blocking by the dispatcher
//!   (`config`: `[collect]`; `dataset`: the folder, manifest, bounds, relabelling; `import`:
//!   `lookout dataset import`). The page that labels them is `http::collect`.
//! - [`event`]: the one JSON event shared by every sink.
//! - [`sink`]: the [`sink::Sink`] trait and the sinks (`log`, `jsonl`, `mqtt`, `webhook`,
//!   `command`, `gpio`, `modbus`, `snapshot`, and an in-memory recording sink for tests and
//!   embedding); `process_group` signals a command's process group and tells whether anything
//!   in it still runs; `modbus/` is split into its keys (`config`), the device link over TCP or RTU
//!   (`link`, tokio-modbus) and the actuator loop (`run`, reusing gpio's pulse/follow timing).
//!
//! Running it:
//! - [`pipeline`]: the threads and bounded queues joining all of the above, one file per stage
//!   (capture, worker, dispatch, deliver) plus start and reload, and `fair`, the frame queue
//!   with one lane per source taken from round-robin; shutdown by stopping the sources and
//!   letting each stage drain when its input disconnects.
//! - [`stop`]: the one shutdown signal.
//! - [`retry`]: capped back-off with jitter and the one-line error chain, for every retry.
//! - [`metrics`]: counters and latency histograms shared by every stage (`metrics/models`: the
//!   model-run time per model), the device-link counters a sink with its own connection
//!   (modbus) hands to the pipeline, and the input counters (frames rejected, bytes skipped)
//!   the pipeline hands to a source's reader thread.
//! - [`daemon`]: signal handling, configuration reload and the `run` entry point.
//! - [`deploy`]: a model uploaded over HTTP (`POST /api/model`) checked and installed over the
//!   file its `path` names, the previous one kept beside it (and put back if the reload fails).
//! - [`health`]: whether the pipeline makes progress (feeds the watchdog).
//! - [`notify`]: systemd readiness, watchdog and stopping notifications.
//! - [`memory`]: process-wide allocator settings (one malloc arena).
//! - [`http`]: the embedded HTTP server (live view, `/healthz`, `/metrics`, JSON API), fed by
//!   [`live`] (per source: latest frame, top-k of the frame or of each region, score timeline,
//!   recent events; `live::source` holds one source's state); bounded connections on a small
//!   tokio runtime of its own (`http::conn` reads requests with httparse, `http::limits` holds
//!   the bounds and the server's counters, `http::request` the parsed request, `http::sources`
//!   `/api/live` with each source's health).
//!
//! Shared helpers:
//! - [`digest`]: sha256 in hex (the training cache, model cards, the collect manifest).
//! - [`progress`]: the progress line of `train` and `quantize` on a terminal.
//!
//! Commands and tools:
//! - [`cli`]: the `check`, `classify` and `synth` commands' logic, testable without the binary.
//! - [`train`]: `lookout train`, a classifier head trained on the device on a backbone's
//!   features: `data` (the labelled folders, the split), `graph` (finding the feature tensor,
//!   cutting the ONNX graph, adding the Gemm head), `embed` (the images through the engine on
//!   all cores, the embedding cache), `logistic` (the regression), `card` (`NEW.card.json`).
//! - [`quantize`]: `lookout quantize`, an int8 QDQ model from an fp32 one and a folder of
//!   images: `graph` (BatchNormalization folding, the plan, the QDQ graph; `proto`, the
//!   protobuf pieces it reads and writes), `calibrate` (the
//!   images and their split, activation ranges on lookout's engine), `report` (agreement on
//!   held-out images, `OUT.quant.json`).
//! - [`bench`]: `lookout bench`, model, preprocessing and pipeline figures beside a peer baseline;
//!   several sources through the one pool (`--sources`) and one frame's regions (`--regions`).
//! - [`fuzz`]: entry points for fuzzing the parsers (`fuzz/`, `tests/fuzz.rs`).

pub mod bench;
pub mod cli;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod digest;
pub mod drift;
pub mod event;
pub mod frame;
pub mod fuzz;
pub mod health;
pub mod http;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod models;
pub mod notify;
pub mod pipeline;
pub mod problems;
pub mod progress;
pub mod quantize;
pub mod retry;
pub mod rules;
pub mod sink;
pub mod source;
pub mod stop;
pub mod train;

/// The reference configuration, compiled in: `lookout run` without `--config` runs this.
pub const DEFAULT_CONFIG: &str = include_str!("../config/lookout.toml");
