//! Frames as sources deliver them, and their conversion to packed RGB.
//!
//! A [`Frame`] carries the bytes exactly as the source produced them (raw RGB/GRAY/YUYV/NV12, a
//! JPEG, or an encoded image file) with its size, sequence number and capture time. Sources never
//! convert: the workers call [`decode_rgb`], so a frame that is dropped is never decoded. JPEGs are
//! decoded at reduced scale (1/2, 1/4, 1/8) when the caller says how large the image needs to be,
//! or only in the window a caller's crops need ([`jpeg_window`]).
//! Colour conversion uses BT.601 limited range, as V4L2 cameras deliver it.

mod encode;
pub mod image_file;
pub mod jpeg_window;
pub mod rect;

pub use encode::encode_jpeg;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// How a frame's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 8-bit R, G, B; `width * height * 3` bytes.
    Rgb24,
    /// 8-bit luma; `width * height` bytes.
    Gray8,
    /// Packed 4:2:2 Y0 U Y1 V; `width * height * 2` bytes, even width.
    Yuyv422,
    /// 4:2:0, a Y plane then interleaved U/V; `width * height * 3 / 2` bytes, even width and height.
    Nv12,
    /// One JPEG image (a frame of an MJPEG stream); `width`/`height` may be 0 (read from it).
    Mjpeg,
    /// An image file in any format the `image` crate reads (PNG, BMP, PNM, JPEG ...).
    Encoded,
}

impl PixelFormat {
    /// Bytes a raw frame of this size must have; `None` for compressed formats.
    pub fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let px = width as usize * height as usize;
        match self {
            PixelFormat::Rgb24 => Some(px * 3),
            PixelFormat::Gray8 => Some(px),
            PixelFormat::Yuyv422 => Some(px * 2),
            PixelFormat::Nv12 => Some(px * 3 / 2),
            PixelFormat::Mjpeg | PixelFormat::Encoded => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Gray8 => "gray",
            PixelFormat::Yuyv422 => "yuyv422",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::Mjpeg => "mjpeg",
            PixelFormat::Encoded => "encoded",
        }
    }
}

/// One captured frame, as the source produced it.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Capture order, from 0, assigned by the capture thread; gaps mean dropped frames.
    pub seq: u64,
    /// Wall-clock capture time (for events).
    pub captured_at: SystemTime,
    /// Monotonic capture time (for latency).
    pub captured: Instant,
    /// Size in pixels; 0 when only the encoded data knows it (`Mjpeg`, `Encoded`).
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub data: Vec<u8>,
    /// Where the frame came from when it is a file (its path), for messages and events.
    pub origin: Option<Arc<str>>,
    /// The true label when the source knows it (synthetic scenes, labelled folders).
    pub truth: Option<Arc<str>>,
}

impl Frame {
    /// A frame captured now; `seq` is set by the capture thread.
    pub fn new(format: PixelFormat, width: u32, height: u32, data: Vec<u8>) -> Frame {
        Frame {
            seq: 0,
            captured_at: SystemTime::now(),
            captured: Instant::now(),
            width,
            height,
            format,
            data,
            origin: None,
            truth: None,
        }
    }
}

/// A decoded frame: packed RGB, `width * height * 3` bytes.
#[derive(Debug, Clone, Default)]
pub struct RgbBuf {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Why a frame could not be converted. Run-time errors: the frame is counted and skipped.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{format} frame {width}x{height} should have {expected} bytes, got {got} (truncated or wrong size/format in the source config)")]
    Size {
        format: &'static str,
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
    #[error("{format} frame size {width}x{height} is not allowed: {why}")]
    Geometry {
        format: &'static str,
        width: u32,
        height: u32,
        why: &'static str,
    },
    #[error("corrupt JPEG: {0}")]
    Jpeg(String),
    #[error("not a readable image")]
    Image(#[source] image::ImageError),
    #[error("image is {width}x{height}: too large (limit {limit} pixels)")]
    TooLarge { width: u32, height: u32, limit: u64 },
}

/// Largest frame we decode, in pixels (a 8K frame is 33 Mpx); guards memory against bad headers.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Converts `frame` to RGB in `out` (its buffer is reused).
///
/// `min_size`: given the full size of the image, the smallest size the decoded image may have for
/// the caller's purpose; a JPEG is decoded at the smallest DCT scale (1, 1/2, 1/4, 1/8) that stays
/// at least that large on both axes. `None` decodes at full size.
pub fn decode_rgb(
    frame: &Frame,
    min_size: Option<&MinSize>,
    out: &mut RgbBuf,
) -> Result<(), FrameError> {
    let (w, h) = (frame.width, frame.height);
    if let Some(expected) = frame.format.frame_len(w, h) {
        if frame.data.len() != expected {
            return Err(FrameError::Size {
                format: frame.format.name(),
                width: w,
                height: h,
                expected,
                got: frame.data.len(),
            });
        }
        if w == 0 || h == 0 || w as u64 * h as u64 > MAX_PIXELS {
            return Err(FrameError::Geometry {
                format: frame.format.name(),
                width: w,
                height: h,
                why: "empty or larger than the decode limit",
            });
        }
    }
    match frame.format {
        PixelFormat::Rgb24 => {
            set(out, w, h);
            out.data.copy_from_slice(&frame.data);
        }
        PixelFormat::Gray8 => {
            set(out, w, h);
            gray_to_rgb(&frame.data, &mut out.data);
        }
        PixelFormat::Yuyv422 => {
            if w % 2 != 0 {
                return Err(FrameError::Geometry {
                    format: "yuyv422",
                    width: w,
                    height: h,
                    why: "width must be even",
                });
            }
            set(out, w, h);
            yuyv_to_rgb(&frame.data, &mut out.data);
        }
        PixelFormat::Nv12 => {
            if w % 2 != 0 || h % 2 != 0 {
                return Err(FrameError::Geometry {
                    format: "nv12",
                    width: w,
                    height: h,
                    why: "width and height must be even",
                });
            }
            set(out, w, h);
            nv12_to_rgb(&frame.data, w as usize, h as usize, &mut out.data);
        }
        PixelFormat::Mjpeg => decode_jpeg(&frame.data, min_size, out)?,
        PixelFormat::Encoded => {
            if frame.data.starts_with(&[0xFF, 0xD8]) {
                decode_jpeg(&frame.data, min_size, out)?
            } else {
                decode_other(&frame.data, out)?
            }
        }
    }
    Ok(())
}

fn set(out: &mut RgbBuf, w: u32, h: u32) {
    out.width = w;
    out.height = h;
    out.data.resize(w as usize * h as usize * 3, 0);
}

/// Given an image's full size, the smallest decoded size the caller can use.
pub type MinSize = dyn Fn(u32, u32) -> (u32, u32);

/// Size of a JPEG dimension decoded at `eighths`/8 scale (libjpeg's `jdiv_round_up`).
fn jpeg_scaled(len: u32, eighths: u32) -> u32 {
    (len * eighths).saturating_sub(1) / 8 + 1
}

/// Whether `data` ends with the JPEG end-of-image marker (trailing zero padding allowed), the
/// cheap check that catches frames cut short in a stream. libjpeg itself would fill the missing
/// part with grey and only warn.
fn has_eoi(data: &[u8]) -> bool {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    end >= 4 && data[end - 2..end] == [0xFF, 0xD9]
}

/// Decodes a JPEG with libjpeg-turbo (the decoder behind Pillow), at reduced DCT scale when
/// `min_size` allows.
pub fn decode_jpeg(
    data: &[u8],
    min_size: Option<&MinSize>,
    out: &mut RgbBuf,
) -> Result<(), FrameError> {
    let mut jpeg = JpegRows::start(data, min_size)?;
    let (w, h) = jpeg.size();
    // Every byte is written by the decoder: no clearing when the size stays.
    out.data.resize(w as usize * h as usize * 3, 0);
    jpeg.read(&mut out.data)?;
    jpeg.finish()?;
    out.width = w;
    out.height = h;
    Ok(())
}

/// The data of a frame that holds a JPEG image (`mjpeg`, or an encoded image in JPEG).
pub fn jpeg_data(frame: &Frame) -> Option<&[u8]> {
    match frame.format {
        PixelFormat::Mjpeg => Some(&frame.data),
        PixelFormat::Encoded if frame.data.starts_with(&[0xFF, 0xD8]) => Some(&frame.data),
        _ => None,
    }
}

/// A JPEG being decoded to RGB by libjpeg-turbo, rows top to bottom: [`decode_jpeg`] in steps,
/// for a caller that uses the first rows while the next are decoded.
pub struct JpegRows<'a> {
    jpeg: mozjpeg::decompress::DecompressStarted<&'a [u8]>,
    width: u32,
    height: u32,
}

impl<'a> JpegRows<'a> {
    /// Reads the header and starts the decode, at the smallest DCT scale (1, 1/2, 1/4) whose
    /// size stays at least `min_size` of the full size on both axes (full size without it).
    pub fn start(data: &'a [u8], min_size: Option<&MinSize>) -> Result<Self, FrameError> {
        if data.len() < 4 || data[..2] != [0xFF, 0xD8] {
            return Err(FrameError::Jpeg("no JPEG start-of-image marker".into()));
        }
        if !has_eoi(data) {
            return Err(FrameError::Jpeg("truncated: no end-of-image marker".into()));
        }
        libjpeg(|| {
            let mut d = mozjpeg::Decompress::new_mem(data).map_err(jpeg_io)?;
            let (fw, fh) = (d.width() as u32, d.height() as u32);
            if fw as u64 * fh as u64 > MAX_PIXELS {
                return Err(FrameError::TooLarge {
                    width: fw,
                    height: fh,
                    limit: MAX_PIXELS,
                });
            }
            if let Some(need) = min_size {
                let (mw, mh) = need(fw, fh);
                if let Some(e) = [1u8, 2, 4]
                    .into_iter()
                    .find(|&e| jpeg_scaled(fw, e as u32) >= mw && jpeg_scaled(fh, e as u32) >= mh)
                {
                    d.scale(e);
                }
            }
            let jpeg = d.rgb().map_err(jpeg_io)?;
            let (width, height) = (jpeg.width() as u32, jpeg.height() as u32);
            Ok(JpegRows {
                jpeg,
                width,
                height,
            })
        })
    }

    /// The decoded image's size (at the chosen scale).
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Decodes the next rows into `rows` (RGB, whole rows of the decoded width).
    pub fn read(&mut self, rows: &mut [u8]) -> Result<(), FrameError> {
        libjpeg(|| {
            self.jpeg
                .read_scanlines_into(rows)
                .map(|_| ())
                .map_err(jpeg_io)
        })
    }

    /// Ends the decode (every row must have been read).
    pub fn finish(self) -> Result<(), FrameError> {
        let jpeg = self.jpeg;
        libjpeg(|| jpeg.finish().map_err(jpeg_io))
    }
}

fn jpeg_io(e: std::io::Error) -> FrameError {
    FrameError::Jpeg(e.to_string())
}

/// Runs a step of a libjpeg decode. The mozjpeg wrapper reports libjpeg's fatal errors by
/// unwinding (without invoking the panic hook); they are caught here and become the frame's
/// error. (The decoder is then only dropped, which libjpeg allows in any state.)
fn libjpeg<T>(step: impl FnOnce() -> Result<T, FrameError>) -> Result<T, FrameError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            Err(FrameError::Jpeg(msg))
        }
    }
}

fn decode_other(data: &[u8], out: &mut RgbBuf) -> Result<(), FrameError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| FrameError::Image(image::ImageError::IoError(e)))?;
    let (w, h) = reader.into_dimensions().map_err(FrameError::Image)?;
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(FrameError::TooLarge {
            width: w,
            height: h,
            limit: MAX_PIXELS,
        });
    }
    let img = image::load_from_memory(data)
        .map_err(FrameError::Image)?
        .into_rgb8();
    out.width = img.width();
    out.height = img.height();
    out.data = img.into_raw();
    Ok(())
}

fn gray_to_rgb(gray: &[u8], rgb: &mut [u8]) {
    for (px, &y) in rgb.chunks_exact_mut(3).zip(gray) {
        px.copy_from_slice(&[y, y, y]);
    }
}

/// BT.601 limited-range YCbCr -> RGB in 16.16 fixed point (the coefficients V4L2 documents).
#[inline]
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (y as i32 - 16).max(0) * 76_309; // 1.164383 * 65536
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    let r = (c + 104_597 * e + 32_768) >> 16; // 1.596027
    let g = (c - 25_675 * d - 53_279 * e + 32_768) >> 16; // 0.391762, 0.812968
    let b = (c + 132_201 * d + 32_768) >> 16; // 2.017232
    [
        r.clamp(0, 255) as u8,
        g.clamp(0, 255) as u8,
        b.clamp(0, 255) as u8,
    ]
}

fn yuyv_to_rgb(yuyv: &[u8], rgb: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        let done = unsafe { yuyv_to_rgb_avx2(yuyv, rgb) };
        yuyv_to_rgb_plain(&yuyv[done * 4..], &mut rgb[done * 6..]);
        return;
    }
    yuyv_to_rgb_plain(yuyv, rgb);
}

/// Eight YUYV pairs (16 pixels) per iteration in 32-bit lanes, with [`yuv_to_rgb`]'s fixed-point
/// arithmetic and clamping: the same bytes. Returns the pairs converted; the rest (at least the
/// last 8 pairs, whose 16-byte stores would pass the end) is left to the plain loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn yuyv_to_rgb_avx2(yuyv: &[u8], rgb: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let pairs = (yuyv.len() / 4).min(rgb.len() / 6);
    // The last block's final 16-byte store ends 4 bytes past its 48: keep one block spare.
    let blocks = pairs.saturating_sub(8) / 8;
    let byte = _mm256_set1_epi32(0xFF);
    let (zero, max) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
    let k = |v: i32| _mm256_set1_epi32(v);
    let clamp = |x: __m256i| _mm256_min_epi32(_mm256_max_epi32(x, zero), max);
    // Per 128-bit lane: [A0 B0 A1 B1] (4 bytes each, B's top two unused) -> 12 packed bytes.
    let squeeze = _mm256_setr_epi8(
        0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, -1, -1, -1, -1, 0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12,
        13, -1, -1, -1, -1,
    );
    for b in 0..blocks {
        // SAFETY: block b reads yuyv[32b..32b+32] and writes rgb[48b..48b+52]; b < blocks keeps
        // both inside (one spare block of 48 output bytes, checked by `blocks`).
        let w = _mm256_loadu_si256(yuyv.as_ptr().add(b * 32) as *const __m256i);
        let y0 = _mm256_and_si256(w, byte);
        let u = _mm256_and_si256(_mm256_srli_epi32::<8>(w), byte);
        let y1 = _mm256_and_si256(_mm256_srli_epi32::<16>(w), byte);
        let v = _mm256_srli_epi32::<24>(w);
        let luma = |y: __m256i| {
            _mm256_mullo_epi32(
                _mm256_max_epi32(_mm256_sub_epi32(y, k(16)), zero),
                k(76_309),
            )
        };
        let (c0, c1) = (luma(y0), luma(y1));
        let d = _mm256_sub_epi32(u, k(128));
        let e = _mm256_sub_epi32(v, k(128));
        let re = _mm256_add_epi32(_mm256_mullo_epi32(e, k(104_597)), k(32_768));
        let ge = _mm256_add_epi32(
            _mm256_sub_epi32(
                _mm256_mullo_epi32(d, k(-25_675)),
                _mm256_mullo_epi32(e, k(53_279)),
            ),
            k(32_768),
        );
        let be = _mm256_add_epi32(_mm256_mullo_epi32(d, k(132_201)), k(32_768));
        let ch = |c: __m256i, t: __m256i| clamp(_mm256_srai_epi32::<16>(_mm256_add_epi32(c, t)));
        let (r0, g0, b0) = (ch(c0, re), ch(c0, ge), ch(c0, be));
        let (r1, g1, b1) = (ch(c1, re), ch(c1, ge), ch(c1, be));
        // A = R0 G0 B0 R1, B = G1 B1: one pair's six bytes.
        let a = _mm256_or_si256(
            _mm256_or_si256(r0, _mm256_slli_epi32::<8>(g0)),
            _mm256_or_si256(_mm256_slli_epi32::<16>(b0), _mm256_slli_epi32::<24>(r1)),
        );
        let bb = _mm256_or_si256(g1, _mm256_slli_epi32::<8>(b1));
        let lo = _mm256_shuffle_epi8(_mm256_unpacklo_epi32(a, bb), squeeze); // pairs 0 1 | 4 5
        let hi = _mm256_shuffle_epi8(_mm256_unpackhi_epi32(a, bb), squeeze); // pairs 2 3 | 6 7
        let out = rgb.as_mut_ptr().add(b * 48);
        _mm_storeu_si128(out as *mut __m128i, _mm256_castsi256_si128(lo));
        _mm_storeu_si128(out.add(12) as *mut __m128i, _mm256_castsi256_si128(hi));
        _mm_storeu_si128(
            out.add(24) as *mut __m128i,
            _mm256_extracti128_si256::<1>(lo),
        );
        _mm_storeu_si128(
            out.add(36) as *mut __m128i,
            _mm256_extracti128_si256::<1>(hi),
        );
    }
    blocks * 8
}

fn yuyv_to_rgb_plain(yuyv: &[u8], rgb: &mut [u8]) {
    for (src, dst) in yuyv.chunks_exact(4).zip(rgb.chunks_exact_mut(6)) {
        let (y0, u, y1, v) = (src[0], src[1], src[2], src[3]);
        dst[..3].copy_from_slice(&yuv_to_rgb(y0, u, v));
        dst[3..].copy_from_slice(&yuv_to_rgb(y1, u, v));
    }
}

fn nv12_to_rgb(nv12: &[u8], w: usize, h: usize, rgb: &mut [u8]) {
    let (luma, chroma) = nv12.split_at(w * h);
    for row in 0..h {
        let uv_row = &chroma[(row / 2) * w..(row / 2) * w + w];
        let y_row = &luma[row * w..row * w + w];
        let out_row = &mut rgb[row * w * 3..(row + 1) * w * 3];
        for col in 0..w {
            let uv = (col / 2) * 2;
            out_row[col * 3..col * 3 + 3].copy_from_slice(&yuv_to_rgb(
                y_row[col],
                uv_row[uv],
                uv_row[uv + 1],
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(format: PixelFormat, w: u32, h: u32, data: Vec<u8>) -> Frame {
        Frame::new(format, w, h, data)
    }

    fn decode(f: &Frame) -> Result<RgbBuf, FrameError> {
        let mut out = RgbBuf::default();
        decode_rgb(f, None, &mut out).map(|_| out)
    }

    #[test]
    fn bt601_reference_colours() {
        // (Y, U, V) -> RGB, reference values from the BT.601 limited-range equations.
        let cases = [
            ((16, 128, 128), [0, 0, 0]),
            ((235, 128, 128), [255, 255, 255]),
            ((126, 128, 128), [128, 128, 128]),
            ((81, 90, 240), [255, 0, 0]),
            ((145, 54, 34), [0, 255, 0]),
            ((41, 240, 110), [0, 0, 255]),
        ];
        for ((y, u, v), want) in cases {
            let got = yuv_to_rgb(y, u, v);
            for c in 0..3 {
                assert!(
                    (got[c] as i32 - want[c]).abs() <= 1,
                    "yuv({y},{u},{v}) -> {got:?}, want {want:?}"
                );
            }
        }
    }

    /// The AVX2 conversion gives the plain one's bytes for every (Y, U, V), at every length
    /// (the tail and short frames go through the plain loop).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_yuyv_matches_the_plain_conversion_everywhere() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: only the plain conversion exists here");
            return;
        }
        let mut yuyv = Vec::with_capacity(256 * 256 * 256 * 4);
        for y in 0..=255u8 {
            for u in 0..=255u8 {
                for v in 0..=255u8 {
                    yuyv.extend_from_slice(&[y, u, y ^ 0x5A, v]);
                }
            }
        }
        let mut fast = vec![0u8; yuyv.len() / 4 * 6];
        let mut plain = vec![1u8; fast.len()];
        yuyv_to_rgb(&yuyv, &mut fast);
        yuyv_to_rgb_plain(&yuyv, &mut plain);
        assert!(
            fast == plain,
            "AVX2 YUYV conversion differs from the plain one"
        );
        for pairs in [0usize, 1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 100] {
            let src = &yuyv[12_345 * 4..(12_345 + pairs) * 4];
            let mut fast = vec![0u8; pairs * 6];
            let mut plain = vec![1u8; pairs * 6];
            yuyv_to_rgb(src, &mut fast);
            yuyv_to_rgb_plain(src, &mut plain);
            assert_eq!(fast, plain, "{pairs} pairs");
        }
    }

    #[test]
    fn yuyv_pairs_share_chroma() {
        let f = frame(PixelFormat::Yuyv422, 2, 1, vec![16, 90, 235, 240]);
        let rgb = decode(&f).expect("valid yuyv").data;
        assert_eq!(rgb[..3], yuv_to_rgb(16, 90, 240));
        assert_eq!(rgb[3..], yuv_to_rgb(235, 90, 240));
    }

    #[test]
    fn nv12_uses_one_chroma_pair_per_2x2_block() {
        // 4x2: Y plane 8 bytes, then one row of 4 interleaved U/V bytes (2 pairs).
        let mut data = vec![16, 16, 235, 235, 16, 16, 235, 235];
        data.extend_from_slice(&[128, 128, 54, 34]);
        let f = frame(PixelFormat::Nv12, 4, 2, data);
        let rgb = decode(&f).expect("valid nv12").data;
        assert_eq!(&rgb[0..3], &[0, 0, 0]);
        assert_eq!(rgb[6..9], yuv_to_rgb(235, 54, 34));
        assert_eq!(rgb[12..15], [0, 0, 0]); // second row, first pixel: same block as (0,0)
    }

    #[test]
    fn gray_is_replicated() {
        let rgb = decode(&frame(PixelFormat::Gray8, 2, 1, vec![7, 200]))
            .expect("gray")
            .data;
        assert_eq!(rgb, vec![7, 7, 7, 200, 200, 200]);
    }

    #[test]
    fn wrong_sizes_are_errors_not_panics() {
        let cases = [
            frame(PixelFormat::Rgb24, 4, 4, vec![0; 47]),
            frame(PixelFormat::Yuyv422, 3, 2, vec![0; 12]),
            frame(PixelFormat::Nv12, 4, 3, vec![0; 18]),
            frame(PixelFormat::Gray8, 0, 0, vec![]),
            frame(PixelFormat::Mjpeg, 0, 0, vec![0xFF, 0xD8, 0xFF]),
            frame(PixelFormat::Mjpeg, 0, 0, vec![]),
            frame(PixelFormat::Encoded, 0, 0, b"not an image at all".to_vec()),
        ];
        for f in &cases {
            assert!(
                decode(f).is_err(),
                "{:?} {}x{} should be refused",
                f.format,
                f.width,
                f.height
            );
        }
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
            .encode_image(&img)
            .expect("encode test jpeg");
        buf
    }

    #[test]
    fn jpeg_decodes_at_reduced_scale_when_allowed() {
        let f = frame(PixelFormat::Mjpeg, 0, 0, jpeg(640, 480));
        let mut out = RgbBuf::default();
        decode_rgb(&f, Some(&|_, _| (150, 100)), &mut out).expect("scaled decode");
        assert_eq!((out.width, out.height), (160, 120));
        decode_rgb(&f, Some(&|_, _| (150, 121)), &mut out).expect("both axes must be large enough");
        assert_eq!((out.width, out.height), (320, 240));
        decode_rgb(&f, None, &mut out).expect("full decode");
        assert_eq!((out.width, out.height), (640, 480));
        decode_rgb(&f, Some(&|_, _| (1000, 1000)), &mut out).expect("no upscale");
        assert_eq!((out.width, out.height), (640, 480));
    }

    #[test]
    fn truncated_jpeg_is_an_error() {
        let mut data = jpeg(64, 64);
        data.truncate(data.len() / 2);
        assert!(decode(&frame(PixelFormat::Mjpeg, 0, 0, data)).is_err());
    }
}
