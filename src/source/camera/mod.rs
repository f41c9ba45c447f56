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
mod native;

#[cfg(not(feature = "camera"))]
mod stub;

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
