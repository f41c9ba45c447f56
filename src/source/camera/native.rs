//! The `camera` source on V4L2 through nokhwa (crate feature `camera`): device resolution,
//! format negotiation with the camera's offers, the capture thread and `lookout cameras`.

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
                    let _ = writeln!(out, "  {:<8} {w}x{h} @ {} fps", f.name(), rates.join(", "));
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  (cannot open it to list its formats: {e})");
            }
        }
    }
    Ok(cameras.len())
}
