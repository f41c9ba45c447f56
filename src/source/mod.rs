//! Frame sources: where frames come from.
//!
//! A source runs on the capture thread only, behind the [`FrameSource`] trait; it delivers frames
//! as they come (raw pixels or JPEG bytes) and never decodes them. `synthetic` renders scenes for
//! the bundled model with their true label, `files` reads images from disk, `pipe` reads the
//! output of a program (ffmpeg for RTSP and video files, rpicam-vid, GStreamer), `http_mjpeg`
//! reads `multipart/x-mixed-replace` streams (IP cameras, ESP32-CAM) and `camera` reads V4L2
//! devices through nokhwa. Live sources read on a thread of their own ([`feed`]) so a stall is
//! noticed and shutdown never waits on a read. Reconnection with back-off is the capture thread's
//! job ([`crate::pipeline`]), not each source's: a source reports a stall or a lost stream as an
//! `Err` from `next_frame`.

pub mod camera;
pub(crate) mod feed;
pub mod files;
pub mod http_mjpeg;
pub mod list;
pub mod mjpeg;
pub mod pipe;
pub mod regions;
pub mod scene;
pub mod synthetic;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::frame::Frame;
use crate::metrics::InputStats;
use crate::problems::Problems;
use crate::stop::StopToken;

/// A producer of frames.
///
/// Lifecycle, all on the capture thread: `open` once before the first frame (an `Err` there is a
/// fatal startup error); `next_frame` in a loop; after an `Err` from `next_frame` the capture
/// thread calls `close`, waits with capped exponential back-off and calls `open` again, forever,
/// until stopped; `close` once at the end.
pub trait FrameSource: Send {
    /// Short description for logs and events, e.g. `synthetic` or `files:/data/leaves`.
    fn describe(&self) -> String;

    /// Live sources (cameras, streams, paced synthetic/files) produce frames whether or not the
    /// workers keep up, so the oldest queued frame is dropped when they fall behind. A source that
    /// is not live (files or synthetic with `fps = 0`) waits for room instead: every frame is
    /// processed.
    fn live(&self) -> bool;

    /// Where to count what the source throws away before making a frame (oversized or
    /// unreadable frames, garbage bytes): called once, before the first `open`. A source that
    /// throws nothing away (synthetic, files, camera) ignores it.
    fn count_into(&mut self, _stats: Arc<InputStats>) {}

    /// Opens, or reopens after an error.
    fn open(&mut self) -> Result<(), SourceError>;

    /// Blocks until the next frame (including any pacing), waking on `stop`. `Ok(None)`: the
    /// input has ended (or `stop` was set) and the pipeline shuts down. `Err`: the source is
    /// broken and will be closed and reopened.
    fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, SourceError>;

    /// Releases the device, process or files.
    fn close(&mut self) {}
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
    #[error("cannot encode synthetic frame")]
    Encode(#[source] image::ImageError),
    #[error("{what}: no frame for {secs:.1} s (stalled; see stall_timeout_secs)")]
    Stalled { what: String, secs: f64 },
    #[error("{program} exited ({status}); its last messages: {stderr}")]
    Exited {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: stream ended")]
    StreamEnded { url: String },
    #[error("camera {device}: {message}")]
    Camera { device: String, message: String },
}

/// `[source]`: where frames come from; `type` selects the source.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    /// Rendered scenes of parts on a line (ok / scratch / dent / missing) for the bundled model,
    /// with their true label; needs no camera.
    Synthetic(synthetic::SyntheticConfig),
    /// Image files: a directory (recursively, in name order), one file, or a glob pattern.
    Files(files::FilesConfig),
    /// The standard output of a program (ffmpeg, rpicam-vid, gst-launch-1.0 ...): MJPEG or raw
    /// frames; restarted with back-off when it exits or stalls.
    Pipe(pipe::PipeConfig),
    /// An HTTP `multipart/x-mixed-replace` MJPEG stream (IP cameras, ESP32-CAM); reconnected
    /// with back-off when it stalls or drops.
    #[serde(rename = "http_mjpeg")]
    HttpMjpeg(http_mjpeg::HttpMjpegConfig),
    /// A V4L2 camera (USB webcam, Pi camera through its V4L2 driver) via nokhwa.
    Camera(camera::CameraConfig),
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Synthetic(synthetic::SyntheticConfig::default())
    }
}

impl SourceConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        match self {
            SourceConfig::Synthetic(c) => c.validate(key, p),
            SourceConfig::Files(c) => c.validate(key, p),
            SourceConfig::Pipe(c) => c.validate(key, p),
            SourceConfig::HttpMjpeg(c) => c.validate(key, p),
            SourceConfig::Camera(c) => c.validate(key, p),
        }
    }

    /// The frame size when the configuration fixes it (synthetic frames, raw `pipe` formats),
    /// for validating regions; `None` when only the frames will tell.
    pub fn frame_size(&self) -> Option<(u32, u32)> {
        match self {
            SourceConfig::Synthetic(c) => Some((c.width, c.height)),
            SourceConfig::Pipe(c) if c.width > 0 && c.height > 0 => Some((c.width, c.height)),
            _ => None,
        }
    }

    /// Builds the source. Nothing is opened yet.
    pub fn build(&self) -> Box<dyn FrameSource> {
        match self {
            SourceConfig::Synthetic(c) => Box::new(synthetic::SyntheticSource::new(c.clone())),
            SourceConfig::Files(c) => Box::new(files::FilesSource::new(c.clone())),
            SourceConfig::Pipe(c) => Box::new(pipe::PipeSource::new(c.clone())),
            SourceConfig::HttpMjpeg(c) => Box::new(http_mjpeg::HttpMjpegSource::new(c.clone())),
            SourceConfig::Camera(c) => camera::build(c.clone()),
        }
    }
}

/// Validates an `fps` key: 0 (unpaced) or a positive rate up to 1000.
pub(crate) fn validate_fps(key: &str, fps: f64, p: &mut Problems) {
    if !(fps.is_finite() && (0.0..=1000.0).contains(&fps)) {
        p.push(
            format!("{key}.fps"),
            format!(
                "expected 0 (as fast as the workers take frames) or a rate up to 1000, got {fps}"
            ),
        );
    }
}

/// Paces a source at a fixed rate without drift.
#[derive(Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(fps: f64) -> Pacer {
        Pacer {
            interval: (fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps)),
            next: None,
        }
    }

    /// Waits for the next slot. Returns `true` if stopped meanwhile.
    pub fn wait(&mut self, stop: &StopToken) -> bool {
        let Some(interval) = self.interval else {
            return stop.is_stopped();
        };
        let now = Instant::now();
        let next = *self.next.get_or_insert(now);
        let stopped = stop.sleep_until(next);
        // Late by more than a frame (a slow consumer, a suspended machine): restart the clock
        // rather than bursting to catch up.
        let after = next + interval;
        self.next = Some(if after < Instant::now() {
            Instant::now() + interval
        } else {
            after
        });
        stopped
    }
}
