//! The `camera` source: V4L2 cameras (USB webcams, CSI cameras with a V4L2 driver) through nokhwa,
//! and the `lookout cameras` listing.
//!
//! The device is chosen by index, by `/dev/videoN` path (or a `/dev/v4l/by-id/...` link to one),
//! or by name. The format is negotiated by [`negotiate`], a pure function over what the camera
//! offers (format, width, height, rate): the closest size at or above the one asked for, then
//! the rate, then the format preference ("auto": MJPEG for large frames, where USB bandwidth
//! makes raw frames slow, YUYV otherwise). What was chosen is logged. The camera is opened and
//! read on a producer thread ([`super::feed`]) and frames go out as the raw bytes the camera
//! produced, with their [`PixelFormat`]; the workers decode them. A camera that stops delivering
//! (unplugged, driver hang) stalls: the capture thread closes it and reopens with back-off.
//! nokhwa is behind the crate feature `camera` (on by default); without it the config still
//! parses, and opening the source says how to get camera support.

use std::io::Write;

use serde::Deserialize;

use super::pipe::{default_stall, validate_stall};
use super::{FrameSource, SourceError};
use crate::frame::PixelFormat;
use crate::problems::Problems;

/// Which camera: an index, a device path, or a name as `lookout cameras` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DeviceSelector {
    /// `device = 0`: the N-th video device (`/dev/video0`).
    Index(u32),
    /// `device = "/dev/video2"`, `"/dev/v4l/by-id/usb-..."`, or a name such as `"HD Pro Webcam C920"`.
    Name(String),
}

impl Default for DeviceSelector {
    fn default() -> Self {
        DeviceSelector::Index(0)
    }
}

impl std::fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSelector::Index(i) => write!(f, "{i}"),
            DeviceSelector::Name(n) => f.write_str(n),
        }
    }
}

/// Pixel format preference for a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FormatPreference {
    /// MJPEG for frames larger than 640x480, YUYV otherwise; whatever is offered if not those.
    #[default]
    Auto,
    Mjpeg,
    Yuyv,
    Nv12,
    Gray,
    Rgb,
}

/// `type = "camera"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Index (0 = /dev/video0), device path, or name as `lookout cameras` prints it. Default 0.
    #[serde(default)]
    pub device: DeviceSelector,
    /// Wanted width in pixels; the closest size the camera offers at or above it is used.
    /// Default 640.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Wanted height in pixels. Default 480.
    #[serde(default = "default_height")]
    pub height: u32,
    /// Wanted frames per second; the closest rate at or above it is used. Default 30.
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// "auto" | "mjpeg" | "yuyv" | "nv12" | "gray" | "rgb". Default "auto".
    #[serde(default)]
    pub format: FormatPreference,
    /// Seconds without a frame (or to open the camera) before it is closed and reopened.
    /// Default 10.
    #[serde(default = "default_stall")]
    pub stall_timeout_secs: f64,
}

fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}
fn default_fps() -> u32 {
    30
}

impl CameraConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if let DeviceSelector::Name(n) = &self.device {
            if n.trim().is_empty() {
                p.push(format!("{key}.device"), "expected an index, a /dev/videoN path or a camera name (see `lookout cameras`)");
            }
        }
        p.range(&format!("{key}.width"), self.width, 16, 8192);
        p.range(&format!("{key}.height"), self.height, 16, 8192);
        p.range(&format!("{key}.fps"), self.fps, 1, 1000);
        validate_stall(key, self.stall_timeout_secs, p);
    }

    pub fn want(&self) -> Want {
        Want {
            width: self.width,
            height: self.height,
            fps: self.fps,
            format: self.format,
        }
    }
}

/// One mode a camera offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl std::fmt::Display for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}x{} @{} fps",
            self.format.name(),
            self.width,
            self.height,
            self.fps
        )
    }
}

/// What the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: FormatPreference,
}

/// Frames larger than this (in pixels) prefer MJPEG under "auto".
pub const LARGE_FRAME_PIXELS: u64 = 640 * 480;

/// The mode to use among `offers`, or `None` when none has an acceptable format.
///
/// Order of concerns: the format must be allowed by the preference; then the size (exact, else
/// the smallest that covers the wanted size on both axes, else the largest below it); then the
/// rate (at or above the wanted rate, closest first); then, under "auto", the format: MJPEG
/// first for large frames, YUYV first otherwise, then NV12, RGB, GRAY.
pub fn negotiate(offers: &[Offer], want: &Want) -> Option<Offer> {
    let wanted_area = want.width as u64 * want.height as u64;
    let large = wanted_area > LARGE_FRAME_PIXELS;
    offers
        .iter()
        .filter(|o| allows(want.format, o.format) && o.width > 0 && o.height > 0)
        .min_by_key(|o| {
            let area = o.width as u64 * o.height as u64;
            let size_class = if (o.width, o.height) == (want.width, want.height) {
                0
            } else if o.width >= want.width && o.height >= want.height {
                1
            } else {
                2
            };
            // Covering sizes: the smallest first; smaller sizes: the largest first.
            let size_cost = if size_class == 2 {
                u64::MAX - area
            } else {
                area.abs_diff(wanted_area)
            };
            let fps_class = u8::from(o.fps < want.fps);
            let fps_cost = o.fps.abs_diff(want.fps);
            (
                size_class,
                size_cost,
                fps_class,
                fps_cost,
                format_rank(o.format, large),
            )
        })
        .copied()
}

fn allows(pref: FormatPreference, f: PixelFormat) -> bool {
    match pref {
        FormatPreference::Auto => !matches!(f, PixelFormat::Encoded),
        FormatPreference::Mjpeg => f == PixelFormat::Mjpeg,
        FormatPreference::Yuyv => f == PixelFormat::Yuyv422,
        FormatPreference::Nv12 => f == PixelFormat::Nv12,
        FormatPreference::Gray => f == PixelFormat::Gray8,
        FormatPreference::Rgb => f == PixelFormat::Rgb24,
    }
}

fn format_rank(f: PixelFormat, large: bool) -> u8 {
    match (f, large) {
        (PixelFormat::Mjpeg, true) | (PixelFormat::Yuyv422, false) => 0,
        (PixelFormat::Yuyv422, true) | (PixelFormat::Nv12, false) => 1,
        (PixelFormat::Nv12, true) | (PixelFormat::Mjpeg, false) => 2,
        (PixelFormat::Rgb24, _) => 3,
        (PixelFormat::Gray8, _) => 4,
        (PixelFormat::Encoded, _) => 5,
    }
}

/// The index in `/dev/videoN` of a device path (following links such as `/dev/v4l/by-id/...`).
pub fn video_index(path: &str) -> Option<u32> {
    let real = std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_owned());
    real.strip_prefix("/dev/video").and_then(|n| n.parse().ok())
}

/// Builds the source for `cfg`.
pub fn build(cfg: CameraConfig) -> Box<dyn FrameSource> {
    Box::new(CameraSource::new(cfg))
}

#[cfg(feature = "camera")]
pub use native::{list, CameraSource};

#[cfg(not(feature = "camera"))]
pub use stub::{list, CameraSource};

#[cfg(feature = "camera")]
mod native {
    use super::*;
    use crate::frame::Frame;
    use crate::source::feed::{Feed, FeedTx, Next};
    use crate::stop::StopToken;
    use crossbeam_channel::bounded;
    use nokhwa::utils::{
        ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    };
    use nokhwa::Camera;
    use std::time::Duration;

    /// Formats lookout can decode; nokhwa is asked only for these.
    const DECODABLE: &[FrameFormat] = &[
        FrameFormat::MJPEG,
        FrameFormat::YUYV,
        FrameFormat::NV12,
        FrameFormat::GRAY,
        FrameFormat::RAWRGB,
    ];

    fn pixel_format(f: FrameFormat) -> Option<PixelFormat> {
        match f {
            FrameFormat::MJPEG => Some(PixelFormat::Mjpeg),
            FrameFormat::YUYV => Some(PixelFormat::Yuyv422),
            FrameFormat::NV12 => Some(PixelFormat::Nv12),
            FrameFormat::GRAY => Some(PixelFormat::Gray8),
            FrameFormat::RAWRGB => Some(PixelFormat::Rgb24),
            FrameFormat::RAWBGR => None,
        }
    }

    fn frame_format(f: PixelFormat) -> FrameFormat {
        match f {
            PixelFormat::Yuyv422 => FrameFormat::YUYV,
            PixelFormat::Nv12 => FrameFormat::NV12,
            PixelFormat::Gray8 => FrameFormat::GRAY,
            PixelFormat::Rgb24 => FrameFormat::RAWRGB,
            PixelFormat::Mjpeg | PixelFormat::Encoded => FrameFormat::MJPEG,
        }
    }

    fn camera_error(device: &DeviceSelector, message: &str, e: nokhwa::NokhwaError) -> SourceError {
        SourceError::Camera {
            device: device.to_string(),
            message: format!("{message}: {e}"),
        }
    }

    /// The V4L2 index for `device`.
    fn resolve(device: &DeviceSelector) -> Result<u32, SourceError> {
        match device {
            DeviceSelector::Index(i) => Ok(*i),
            DeviceSelector::Name(n) => {
                if let Ok(i) = n.trim().parse() {
                    return Ok(i);
                }
                if n.starts_with('/') {
                    return video_index(n).ok_or_else(|| SourceError::Camera {
                        device: n.clone(),
                        message: "not a /dev/videoN device (or a link to one)".into(),
                    });
                }
                let cameras = nokhwa::query(ApiBackend::Auto)
                    .map_err(|e| camera_error(device, "cannot list cameras", e))?;
                let found = cameras.iter().find(|c| c.human_name() == *n).or_else(|| {
                    cameras
                        .iter()
                        .find(|c| c.human_name().to_lowercase().contains(&n.to_lowercase()))
                });
                match found {
                    Some(c) => c
                        .index()
                        .as_index()
                        .map_err(|e| camera_error(device, "unusable camera index", e)),
                    None => Err(SourceError::Camera {
                        device: n.clone(),
                        message: format!(
                            "no camera with this name among {} found; run `lookout cameras`",
                            cameras.len()
                        ),
                    }),
                }
            }
        }
    }

    fn offers(cam: &mut Camera) -> Result<Vec<Offer>, nokhwa::NokhwaError> {
        Ok(cam
            .compatible_camera_formats()?
            .into_iter()
            .filter_map(|f| {
                Some(Offer {
                    format: pixel_format(f.format())?,
                    width: f.width(),
                    height: f.height(),
                    fps: f.frame_rate(),
                })
            })
            .collect())
    }

    /// Opens the camera and negotiates its format.
    fn open_camera(cfg: &CameraConfig) -> Result<(Camera, Offer, Vec<Offer>), SourceError> {
        let index = resolve(&cfg.device)?;
        let dev = &cfg.device;
        let any = RequestedFormat::with_formats(RequestedFormatType::None, DECODABLE);
        let mut cam = Camera::new(CameraIndex::Index(index), any)
            .map_err(|e| camera_error(dev, "cannot open", e))?;
        let offered = offers(&mut cam).map_err(|e| camera_error(dev, "cannot list formats", e))?;
        let chosen = negotiate(&offered, &cfg.want()).ok_or_else(|| SourceError::Camera {
            device: dev.to_string(),
            message: format!(
                "offers no mode lookout can use with format = {:?} (offered: {})",
                cfg.format,
                offered
                    .iter()
                    .map(Offer::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        let ff = frame_format(chosen.format);
        let exact = CameraFormat::new_from(chosen.width, chosen.height, ff, chosen.fps);
        cam.set_camera_requset(RequestedFormat::with_formats(
            RequestedFormatType::Exact(exact),
            &[ff],
        ))
        .map_err(|e| camera_error(dev, &format!("cannot set {chosen}"), e))?;
        cam.open_stream()
            .map_err(|e| camera_error(dev, "cannot start streaming", e))?;
        Ok((cam, chosen, offered))
    }

    /// The producer: opens the camera, reports the outcome on `ready_tx`, then reads frames.
    fn run(
        cfg: CameraConfig,
        ready_tx: crossbeam_channel::Sender<Result<(Offer, usize), SourceError>>,
        tx: FeedTx,
    ) {
        let (mut cam, chosen) = match open_camera(&cfg) {
            Ok((cam, chosen, offered)) => {
                if ready_tx.send(Ok((chosen, offered.len()))).is_err() {
                    return;
                }
                (cam, chosen)
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        while !tx.quitting() {
            let item = match cam.frame_raw() {
                Ok(data) => Ok(Frame::new(
                    chosen.format,
                    chosen.width,
                    chosen.height,
                    data.into_owned(),
                )),
                Err(e) => Err(camera_error(&cfg.device, "cannot read a frame", e)),
            };
            let failed = item.is_err();
            if !tx.send(item) || failed {
                break;
            }
        }
        let _ = cam.stop_stream();
    }

    pub struct CameraSource {
        cfg: CameraConfig,
        feed: Option<Feed>,
    }

    impl CameraSource {
        pub fn new(cfg: CameraConfig) -> CameraSource {
            CameraSource { cfg, feed: None }
        }
    }

    impl FrameSource for CameraSource {
        fn describe(&self) -> String {
            format!("camera:{}", self.cfg.device)
        }

        fn live(&self) -> bool {
            true
        }

        fn open(&mut self) -> Result<(), SourceError> {
            self.close();
            // The outcome of opening: producer -> this call; one message, then dropped.
            let (ready_tx, ready_rx) = bounded(1);
            let cfg = self.cfg.clone();
            let mut feed = Feed::spawn("camera-reader", move |tx| run(cfg, ready_tx, tx))?;
            let wait = Duration::from_secs_f64(self.cfg.stall_timeout_secs);
            match ready_rx.recv_timeout(wait) {
                Ok(Ok((chosen, offered))) => {
                    log::info!(
                        "Camera opened. device={} format={} width={} height={} fps={} modes_offered={offered} wanted={}x{}@{}/{:?}",
                        self.cfg.device,
                        chosen.format.name(),
                        chosen.width,
                        chosen.height,
                        chosen.fps,
                        self.cfg.width,
                        self.cfg.height,
                        self.cfg.fps,
                        self.cfg.format
                    );
                    self.feed = Some(feed);
                    Ok(())
                }
                Ok(Err(e)) => {
                    feed.close(Duration::from_millis(500));
                    Err(e)
                }
                Err(_) => {
                    feed.close(Duration::from_millis(100));
                    Err(SourceError::Camera {
                        device: self.cfg.device.to_string(),
                        message: format!("did not open within {:.1} s", wait.as_secs_f64()),
                    })
                }
            }
        }

        fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, SourceError> {
            let stall = Duration::from_secs_f64(self.cfg.stall_timeout_secs);
            let what = self.describe();
            let Some(feed) = self.feed.as_mut() else {
                return Err(SourceError::Camera {
                    device: self.cfg.device.to_string(),
                    message: "not open".into(),
                });
            };
            match feed.next(stop, stall) {
                Next::Frame(f) => Ok(Some(f)),
                Next::Stopped => Ok(None),
                Next::Failed(e) => Err(e),
                Next::Stalled(waited) => Err(SourceError::Stalled {
                    what,
                    secs: waited.as_secs_f64(),
                }),
                Next::Ended => Err(SourceError::Camera {
                    device: self.cfg.device.to_string(),
                    message: "stopped delivering frames".into(),
                }),
            }
        }

        fn close(&mut self) {
            if let Some(mut feed) = self.feed.take() {
                feed.close(Duration::from_secs(1));
            }
        }
    }

    /// `lookout cameras`: every camera with the modes it offers. Returns how many were found.
    pub fn list(out: &mut dyn Write) -> Result<usize, SourceError> {
        let cameras = nokhwa::query(ApiBackend::Auto)
            .map_err(|e| camera_error(&DeviceSelector::Index(0), "cannot list cameras", e))?;
        if cameras.is_empty() {
            let _ = writeln!(
                out,
                "No cameras found (no V4L2 video devices, /dev/video*). Check that the camera is connected \
                 and its driver loaded (`ls /dev/video*`), and that this user may open it (the `video` group). \
                 For RTSP/IP cameras use a `pipe` source with ffmpeg or an `http_mjpeg` source; see config/examples/."
            );
            return Ok(0);
        }
        for info in &cameras {
            let index = info.index().clone();
            let _ = writeln!(
                out,
                "camera {}: {:?} ({})",
                index,
                info.human_name(),
                info.description()
            );
            let any = RequestedFormat::with_formats(RequestedFormatType::None, DECODABLE);
            match Camera::new(index, any).and_then(|mut cam| offers(&mut cam)) {
                Ok(mut modes) => {
                    modes.sort_by_key(|o| {
                        (
                            o.format.name(),
                            std::cmp::Reverse(o.width as u64 * o.height as u64),
                            std::cmp::Reverse(o.fps),
                        )
                    });
                    let mut i = 0;
                    while i < modes.len() {
                        let (f, w, h) = (modes[i].format, modes[i].width, modes[i].height);
                        let mut rates = Vec::new();
                        while i < modes.len()
                            && (modes[i].format, modes[i].width, modes[i].height) == (f, w, h)
                        {
                            rates.push(modes[i].fps.to_string());
                            i += 1;
                        }
                        let _ =
                            writeln!(out, "  {:<8} {w}x{h} @ {} fps", f.name(), rates.join(", "));
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "  (cannot open it to list its formats: {e})");
                }
            }
        }
        Ok(cameras.len())
    }
}

#[cfg(not(feature = "camera"))]
mod stub {
    use super::*;
    use crate::frame::Frame;
    use crate::stop::StopToken;

    const NO_CAMERA: &str = "this lookout was built without camera support: rebuild with the `camera` feature (on by default)";

    pub struct CameraSource {
        cfg: CameraConfig,
    }

    impl CameraSource {
        pub fn new(cfg: CameraConfig) -> CameraSource {
            CameraSource { cfg }
        }
    }

    impl FrameSource for CameraSource {
        fn describe(&self) -> String {
            format!("camera:{}", self.cfg.device)
        }
        fn live(&self) -> bool {
            true
        }
        fn open(&mut self) -> Result<(), SourceError> {
            Err(SourceError::Camera {
                device: self.cfg.device.to_string(),
                message: NO_CAMERA.into(),
            })
        }
        fn next_frame(&mut self, _stop: &StopToken) -> Result<Option<Frame>, SourceError> {
            self.open().map(|_| None)
        }
    }

    /// `lookout cameras` without camera support.
    pub fn list(out: &mut dyn Write) -> Result<usize, SourceError> {
        let _ = writeln!(out, "No cameras can be listed: {NO_CAMERA}.");
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(format: PixelFormat, width: u32, height: u32, fps: u32) -> Offer {
        Offer {
            format,
            width,
            height,
            fps,
        }
    }

    fn want(width: u32, height: u32, fps: u32, format: FormatPreference) -> Want {
        Want {
            width,
            height,
            fps,
            format,
        }
    }

    /// A typical USB webcam (C920-like): YUYV is slow at large sizes, MJPEG is fast everywhere.
    fn webcam() -> Vec<Offer> {
        use PixelFormat::{Mjpeg, Yuyv422};
        vec![
            o(Yuyv422, 640, 480, 30),
            o(Yuyv422, 640, 480, 15),
            o(Yuyv422, 1280, 720, 10),
            o(Yuyv422, 1920, 1080, 5),
            o(Yuyv422, 320, 240, 30),
            o(Mjpeg, 640, 480, 30),
            o(Mjpeg, 1280, 720, 30),
            o(Mjpeg, 1920, 1080, 30),
            o(Mjpeg, 320, 240, 30),
        ]
    }

    #[test]
    fn negotiation_table() {
        use FormatPreference::{Auto, Gray, Yuyv};
        use PixelFormat::{Gray8, Mjpeg, Nv12, Yuyv422};
        let pi_csi = vec![
            o(Nv12, 640, 480, 60),
            o(Yuyv422, 640, 480, 30),
            o(Gray8, 640, 480, 90),
            o(Mjpeg, 1920, 1080, 30),
        ];
        let cases: Vec<(&str, Vec<Offer>, Want, Option<Offer>)> = vec![
            (
                "small frames prefer YUYV",
                webcam(),
                want(640, 480, 30, Auto),
                Some(o(Yuyv422, 640, 480, 30)),
            ),
            (
                "large frames prefer MJPEG",
                webcam(),
                want(1280, 720, 30, Auto),
                Some(o(Mjpeg, 1280, 720, 30)),
            ),
            (
                "rate beats format preference",
                webcam(),
                want(1920, 1080, 30, Auto),
                Some(o(Mjpeg, 1920, 1080, 30)),
            ),
            (
                "explicit format",
                webcam(),
                want(640, 480, 30, FormatPreference::Mjpeg),
                Some(o(Mjpeg, 640, 480, 30)),
            ),
            (
                "explicit YUYV even when slow",
                webcam(),
                want(1280, 720, 30, Yuyv),
                Some(o(Yuyv422, 1280, 720, 10)),
            ),
            (
                "smallest size covering the request",
                webcam(),
                want(800, 600, 30, Auto),
                Some(o(Mjpeg, 1280, 720, 30)),
            ),
            (
                "largest size below when none covers",
                webcam(),
                want(4000, 3000, 30, Auto),
                Some(o(Mjpeg, 1920, 1080, 30)),
            ),
            (
                "closest rate at or above",
                webcam(),
                want(640, 480, 20, Yuyv),
                Some(o(Yuyv422, 640, 480, 30)),
            ),
            (
                "closest rate below when none reaches",
                webcam(),
                want(1280, 720, 60, Yuyv),
                Some(o(Yuyv422, 1280, 720, 10)),
            ),
            (
                "NV12 where offered",
                pi_csi.clone(),
                want(640, 480, 30, FormatPreference::Nv12),
                Some(o(Nv12, 640, 480, 60)),
            ),
            (
                "GRAY where asked",
                pi_csi.clone(),
                want(640, 480, 30, Gray),
                Some(o(Gray8, 640, 480, 90)),
            ),
            (
                "auto small: YUYV at the exact rate",
                pi_csi.clone(),
                want(640, 480, 30, Auto),
                Some(o(Yuyv422, 640, 480, 30)),
            ),
            (
                "format not offered",
                webcam(),
                want(640, 480, 30, FormatPreference::Nv12),
                None,
            ),
            ("nothing offered", vec![], want(640, 480, 30, Auto), None),
            (
                "zero-size modes ignored",
                vec![o(Yuyv422, 0, 0, 30)],
                want(640, 480, 30, Auto),
                None,
            ),
        ];
        for (name, offers, w, expected) in cases {
            assert_eq!(negotiate(&offers, &w), expected, "{name}");
        }
    }

    #[test]
    fn device_selectors_parse_from_toml() {
        #[derive(Deserialize)]
        struct T {
            device: DeviceSelector,
        }
        let parse = |s: &str| toml::from_str::<T>(s).expect("parses").device;
        assert_eq!(parse("device = 2"), DeviceSelector::Index(2));
        assert_eq!(
            parse("device = \"/dev/video1\""),
            DeviceSelector::Name("/dev/video1".into())
        );
        assert_eq!(video_index("/dev/video7"), Some(7));
        assert_eq!(video_index("/dev/sda"), None);
    }

    #[test]
    fn validation_reports_bad_values() {
        let cfg: CameraConfig =
            toml::from_str("device = \"\"\nwidth = 0\nfps = 0\nstall_timeout_secs = 0")
                .expect("parses");
        let mut p = Problems::default();
        cfg.validate("source", &mut p);
        let keys: Vec<&str> = p.0.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "source.device",
                "source.width",
                "source.fps",
                "source.stall_timeout_secs"
            ]
        );
    }
}
