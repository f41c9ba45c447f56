//! The `camera` source without the `camera` feature: opening fails with a message saying
//! how to build with it; `lookout cameras` says the same.

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
