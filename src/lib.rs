//! `lookout`: an edge computer-vision inference daemon.
//!
//! A capture thread pulls frames from a [`source::FrameSource`], a pool of workers decodes,
//! preprocesses and classifies them with an ONNX model run by tract ([`model`]), a dispatcher
//! turns scores into events with per-class [`rules`], and each [`sink`] delivers events on its own
//! thread. This crate is the library behind the `lookout` binary; the binary only parses the
//! command line and prints errors.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, parsed (`deny_unknown_fields`), validated without I/O, with errors
//!   that name the file and the key path. Each component's config struct documents its keys.
//! - [`frame`]: the [`frame::Frame`] type and pixel formats (RGB, GRAY, YUYV, NV12, MJPEG, encoded
//!   files), and their conversion to RGB. Conversion happens in the workers, never on capture.
//! - [`source`]: the [`source::FrameSource`] trait and the sources: `synthetic` (rendered scenes
//!   for the bundled model, with their true label), `files` (images on disk), `pipe` (a
//!   program's output: ffmpeg for RTSP, rpicam-vid, GStreamer), `http_mjpeg` (IP cameras) and
//!   `camera` (V4L2 through nokhwa, crate feature `camera`).
//! - [`model`]: loading an ONNX classifier through tract, detecting its input layout, size and
//!   dtype, labels, preprocessing and postprocessing (softmax, top-k).
//! - [`rules`]: per-class thresholds, N-of-M frames and cooldown, turning scores into events.
//! - [`event`]: the one JSON event shared by every sink.
//! - [`sink`]: the [`sink::Sink`] trait and the sinks (`log`, `jsonl`, `mqtt`, `webhook`,
//!   `command`, `gpio`, `snapshot`, and an in-memory recording sink for tests and embedding).
//! - [`pipeline`]: the threads and bounded queues joining all of the above; shutdown by stopping
//!   the source and letting each stage drain when its input disconnects.
//! - [`metrics`]: counters and latency histograms shared by every stage.
//! - [`daemon`]: signal handling and the `run` entry point used by the binary.
//! - [`health`]: whether the pipeline makes progress (feeds the watchdog).
//! - [`notify`]: systemd readiness, watchdog and stopping notifications.
//! - [`http`]: the embedded HTTP server (live view, `/healthz`, `/metrics`, JSON API), fed by
//!   [`live`] (latest frame, score timeline, recent events).
//! - [`cli`]: the `check`, `classify` and `synth` commands' logic, testable without the binary.
//! - [`fuzz`]: entry points for fuzzing the parsers (`fuzz/`, `tests/fuzz.rs`).
//! - [`bench`]: `lookout bench`, model, preprocessing and pipeline figures beside a peer baseline.

pub mod bench;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod event;
pub mod frame;
pub mod fuzz;
pub mod health;
pub mod http;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod problems;
pub mod retry;
pub mod rules;
pub mod sink;
pub mod source;
pub mod stop;

/// The reference configuration, compiled in: `lookout run` without `--config` runs this.
pub const DEFAULT_CONFIG: &str = include_str!("../config/lookout.toml");
