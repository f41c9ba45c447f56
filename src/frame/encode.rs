//! JPEG encoding of an RGB image (snapshots, the live view's latest frame), with libjpeg-turbo
//! through mozjpeg at its fastest settings.

use super::RgbBuf;

/// Encodes packed RGB as a baseline JPEG with libjpeg-turbo's fast settings.
pub fn encode_jpeg(rgb: &RgbBuf, quality: u8) -> std::io::Result<Vec<u8>> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_fastest_defaults();
        c.set_size(rgb.width as usize, rgb.height as usize);
        c.set_quality(quality as f32);
        let mut started = c.start_compress(Vec::with_capacity(rgb.data.len() / 8))?;
        started.write_scanlines(&rgb.data)?;
        started.finish()
    }));
    result.unwrap_or_else(|_| Err(std::io::Error::other("libjpeg failed to encode the image")))
}
