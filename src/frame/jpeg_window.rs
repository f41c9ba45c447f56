//! A JPEG decoded only where the caller needs it: the rows above a window are skipped
//! (`jpeg_skip_scanlines`), the decode stops after its last row, and only the iMCU columns
//! that hold it are decoded (`jpeg_crop_scanline`), all in libjpeg-turbo through the raw
//! libjpeg API of `mozjpeg-sys` (the `mozjpeg` wrapper does not expose these calls).
//!
//! The pixels are bit-exact with a full decode's: the decoded window is widened by one iMCU on
//! every side that is not the image's edge, so that the chroma upsampling of every pixel the
//! caller uses sees the same neighbours as in a full decode, and the margin is then left out
//! (the tests check this against [`super::decode_jpeg`] for 4:2:0, 4:2:2 and 4:4:4 images).
//! A window that would cover the whole image takes the full decode ([`super::decode_jpeg`]).
//! Which part of the image the caller needs (a frame's regions) is left to the caller
//! ([`crate::model::crop`]).

use std::marker::PhantomData;
use std::os::raw::{c_int, c_ulong};

use mozjpeg_sys as ffi;

use super::{has_eoi, libjpeg, FrameError, RgbBuf, MAX_PIXELS};

/// A rectangle of whole pixels: `x, y, width, height`.
pub type PixelRect = (u32, u32, u32, u32);

/// Where a decoded window lies in the full image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The full image's size.
    pub full: (u32, u32),
    /// The decoded pixels' top-left corner in the full image.
    pub x: u32,
    pub y: u32,
    /// False when the whole image was decoded (the window would have covered it).
    pub partial: bool,
}

/// Decodes at full scale the part of `data` (a JPEG) that holds the rectangle `need` returns
/// for the image's full size, into `out`; says where `out` lies in the image. `out` covers
/// at least that rectangle, with the pixels a full decode gives there.
pub fn decode_jpeg_window(
    data: &[u8],
    need: impl FnOnce(u32, u32) -> PixelRect,
    out: &mut RgbBuf,
) -> Result<Window, FrameError> {
    if data.len() < 4 || data[..2] != [0xFF, 0xD8] {
        return Err(FrameError::Jpeg("no JPEG start-of-image marker".into()));
    }
    if !has_eoi(data) {
        return Err(FrameError::Jpeg("truncated: no end-of-image marker".into()));
    }
    libjpeg(|| {
        let mut d = Raw::new(data)?;
        let full = d.size();
        let (fw, fh) = full;
        if fw as u64 * fh as u64 > MAX_PIXELS {
            return Err(FrameError::TooLarge {
                width: fw,
                height: fh,
                limit: MAX_PIXELS,
            });
        }
        let (rx, ry, rw, rh) = need(fw, fh);
        let (mw, mh) = d.imcu();
        // One iMCU of margin where the window does not reach the image's edge, then aligned
        // to iMCUs (libjpeg would move a crop's left edge to one anyway).
        let x0 = rx.min(fw).saturating_sub(mw) / mw * mw;
        let x1 = rx.saturating_add(rw).saturating_add(mw).min(fw);
        let y0 = ry.min(fh).saturating_sub(mh) / mh * mh;
        let y1 = ry.saturating_add(rh).saturating_add(mh).min(fh);
        if x1 <= x0 || y1 <= y0 || (x0 == 0 && y0 == 0 && x1 == fw && y1 == fh) {
            d.start()?;
            out.data.resize(fw as usize * fh as usize * 3, 0);
            d.read(&mut out.data, fw)?;
            (out.width, out.height) = full;
            return Ok(Window {
                full,
                x: 0,
                y: 0,
                partial: false,
            });
        }
        d.start()?;
        let (x, w) = d.crop(x0, x1 - x0)?;
        d.skip(y0)?;
        let h = y1 - y0;
        out.data.resize(w as usize * h as usize * 3, 0);
        d.read(&mut out.data, w)?;
        (out.width, out.height) = (w, h);
        Ok(Window {
            full,
            x,
            y: y0,
            partial: true,
        })
    })
}

/// One libjpeg decompressor reading `data` from memory, destroyed on drop (in any state,
/// which libjpeg allows: a decode that stops early is only destroyed).
struct Raw<'a> {
    /// Boxed: libjpeg keeps pointers into it (its error manager and source), so it must not
    /// move while it lives.
    cinfo: Box<ffi::jpeg_decompress_struct>,
    /// Pointed to by `cinfo.common.err`; lives as long as `cinfo`.
    _err: Box<ffi::jpeg_error_mgr>,
    /// `cinfo`'s source reads this slice.
    _data: PhantomData<&'a [u8]>,
}

impl<'a> Raw<'a> {
    /// Creates the decompressor and reads the header. libjpeg's fatal errors unwind (see
    /// [`error_exit`]); the caller runs this inside [`libjpeg`].
    fn new(data: &'a [u8]) -> Result<Raw<'a>, FrameError> {
        // SAFETY: both structs are plain C data for which all-zero is the state libjpeg
        // expects before `jpeg_std_error` / `jpeg_create_decompress` fill them in.
        let (mut cinfo, mut err): (Box<ffi::jpeg_decompress_struct>, Box<ffi::jpeg_error_mgr>) =
            unsafe { (Box::new(std::mem::zeroed()), Box::new(std::mem::zeroed())) };
        // SAFETY: `err` is a valid, boxed (non-moving) error manager.
        unsafe { ffi::jpeg_std_error(&mut err) };
        err.error_exit = Some(error_exit);
        err.emit_message = Some(silence);
        cinfo.common.err = &mut *err;
        // SAFETY: `cinfo` is zeroed with its error manager set, as jpeg_create_decompress
        // requires; from here on `Raw`'s drop destroys it.
        unsafe { ffi::jpeg_create_decompress(&mut *cinfo) };
        let mut raw = Raw {
            cinfo,
            _err: err,
            _data: PhantomData,
        };
        // SAFETY: the source reads `data`, which outlives `raw` (`'a`); the length fits.
        unsafe { ffi::jpeg_mem_src(&mut raw.cinfo, data.as_ptr(), data.len() as c_ulong) };
        // SAFETY: a created decompressor with a source; errors unwind to the caller's
        // `libjpeg`. A memory source never suspends, so the result is a header or an error.
        let header = unsafe { ffi::jpeg_read_header(&mut raw.cinfo, 1) };
        if header != 1 {
            return Err(FrameError::Jpeg("no image in the JPEG data".into()));
        }
        raw.cinfo.out_color_space = ffi::J_COLOR_SPACE::JCS_RGB;
        Ok(raw)
    }

    fn size(&self) -> (u32, u32) {
        (self.cinfo.image_width, self.cinfo.image_height)
    }

    /// An iMCU's width and height in pixels at full scale (16 for subsampled chroma, else 8).
    fn imcu(&self) -> (u32, u32) {
        let dct = ffi::DCTSIZE as u32;
        let f = |s: c_int| (s.max(1) as u32) * dct;
        (
            f(self.cinfo.max_h_samp_factor),
            f(self.cinfo.max_v_samp_factor),
        )
    }

    fn start(&mut self) -> Result<(), FrameError> {
        // SAFETY: the header has been read; errors unwind to `libjpeg`.
        if unsafe { ffi::jpeg_start_decompress(&mut self.cinfo) } == 0 {
            return Err(FrameError::Jpeg("the decoder suspended".into()));
        }
        if self.cinfo.output_components != 3 {
            return Err(FrameError::Jpeg("not decoded to three channels".into()));
        }
        Ok(())
    }

    /// Decodes only the columns `x..x + width` (moved left to an iMCU boundary by libjpeg);
    /// returns the decoded columns' start and count.
    fn crop(&mut self, x: u32, width: u32) -> Result<(u32, u32), FrameError> {
        let (mut x, mut width) = (x, width);
        // SAFETY: called after jpeg_start_decompress and before any scanline is read or
        // skipped, with `x + width` inside the image (libjpeg checks it too and errors).
        unsafe { ffi::jpeg_crop_scanline(&mut self.cinfo, &mut x, &mut width) };
        if self.cinfo.output_width != width {
            return Err(FrameError::Jpeg("the crop was not applied".into()));
        }
        Ok((x, width))
    }

    /// Skips the next `rows` scanlines (their entropy data is still read, nothing else done).
    fn skip(&mut self, rows: u32) -> Result<(), FrameError> {
        if rows == 0 {
            return Ok(());
        }
        // SAFETY: started, and the memory source does not suspend (which skipping requires).
        let skipped = unsafe { ffi::jpeg_skip_scanlines(&mut self.cinfo, rows) };
        if skipped != rows {
            return Err(FrameError::Jpeg("fewer rows than the header says".into()));
        }
        Ok(())
    }

    /// Decodes the next scanlines into `rows` (RGB, whole rows `width` pixels wide).
    fn read(&mut self, rows: &mut [u8], width: u32) -> Result<(), FrameError> {
        let stride = width as usize * 3;
        if self.cinfo.output_width != width {
            return Err(FrameError::Jpeg(
                "row width differs from the decoder's".into(),
            ));
        }
        for row in rows.chunks_exact_mut(stride) {
            let mut ptr = row.as_mut_ptr();
            // SAFETY: `row` holds one scanline of `output_width` RGB pixels (checked above),
            // and libjpeg writes one row through the one pointer it is given.
            let n = unsafe { ffi::jpeg_read_scanlines(&mut self.cinfo, &mut ptr, 1) };
            if n != 1 {
                return Err(FrameError::Jpeg("fewer rows than the header says".into()));
            }
        }
        Ok(())
    }
}

impl Drop for Raw<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `Raw::new`; libjpeg allows destroying in any state.
        unsafe { ffi::jpeg_destroy_decompress(&mut self.cinfo) };
    }
}

/// libjpeg's fatal error: its message, unwound to the [`libjpeg`] around the call (as the
/// `mozjpeg` wrapper does, without the panic hook).
extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    // JMSG_LENGTH_MAX in the libjpeg-turbo that mozjpeg-sys builds (vendor/jpeglib.h): the
    // size format_message assumes its buffer has. The binding's `&[u8; 80]` comes from older
    // headers and is too small for it.
    const JMSG_LENGTH_MAX: usize = 200;
    let mut buf = [0u8; JMSG_LENGTH_MAX];
    // SAFETY: `cinfo.err` is the error manager set in `Raw::new`, alive while `cinfo` is.
    let format = unsafe { cinfo.err.as_ref() }.and_then(|e| e.format_message);
    if let Some(format) = format {
        // SAFETY: libjpeg's format_message writes at most JMSG_LENGTH_MAX (200) bytes, with
        // its terminating NUL, into the buffer it is given (snprintf with that bound,
        // jerror.c), and `buf` holds that many. The function takes a plain `char *` in C; the
        // binding declares it `&[u8; 80]`, so it is called through the same ABI with a raw
        // pointer to the larger buffer, which is never read through a reference while written.
        unsafe {
            let f: unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, *mut u8) =
                std::mem::transmute(format);
            f(cinfo, buf.as_mut_ptr());
        }
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let msg = if end == 0 {
        "libjpeg error".to_string()
    } else {
        format!(
            "libjpeg fatal error: {}",
            String::from_utf8_lossy(&buf[..end])
        )
    };
    std::panic::resume_unwind(Box::new(msg));
}

/// Warnings (corrupt data libjpeg works around) are not printed.
extern "C-unwind" fn silence(_cinfo: &mut ffi::jpeg_common_struct, _level: c_int) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode_jpeg;

    /// A textured `w` x `h` image (edges and colour everywhere, so that chroma upsampling
    /// matters), JPEG-encoded by mozjpeg with chroma subsampled `samp` (horizontal, vertical).
    fn jpeg(w: u32, h: u32, samp: (u8, u8)) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
        for y in 0..h {
            for x in 0..w {
                let v = (x * 7 + y * 13) ^ (x * y);
                rgb.extend_from_slice(&[
                    (v % 256) as u8,
                    ((x * 3) % 256) as u8,
                    (y * 5 % 251) as u8,
                ]);
            }
        }
        // mozjpeg's defaults: progressive, so the multi-scan path is covered too.
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_size(w as usize, h as usize);
        c.set_quality(90.0);
        c.set_chroma_sampling_pixel_sizes(samp, samp);
        let mut c = c.start_compress(Vec::new()).expect("start");
        c.write_scanlines(&rgb).expect("rows");
        c.finish().expect("jpeg")
    }

    fn full(data: &[u8]) -> RgbBuf {
        let mut out = RgbBuf::default();
        decode_jpeg(data, None, &mut out).expect("full decode");
        out
    }

    /// `rect` of `img` (a full decode) against the same pixels of the window decode.
    fn assert_same(img: &RgbBuf, win: &RgbBuf, at: Window, rect: PixelRect, what: &str) {
        let (x, y, w, h) = rect;
        assert!(
            at.x <= x && at.y <= y,
            "{what}: window {at:?} misses {rect:?}"
        );
        assert!(
            at.x + win.width >= x + w && at.y + win.height >= y + h,
            "{what}: {at:?}"
        );
        for row in y..y + h {
            let a = (row as usize * img.width as usize + x as usize) * 3;
            let b = ((row - at.y) as usize * win.width as usize + (x - at.x) as usize) * 3;
            let n = w as usize * 3;
            assert!(
                img.data[a..a + n] == win.data[b..b + n],
                "{what}: row {row} of {rect:?} differs from the full decode"
            );
        }
    }

    #[test]
    fn a_window_has_the_full_decodes_pixels() {
        // The `image` crate's baseline 4:2:0 (as cameras send), then progressive ones.
        let baseline = {
            let img = image::RgbImage::from_fn(333, 250, |x, y| {
                image::Rgb([((x * 7) ^ y) as u8, (x * 3) as u8, (y * 5) as u8])
            });
            let mut buf = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90)
                .encode_image(&img)
                .expect("encode");
            buf
        };
        let cases = [
            ("baseline 4:2:0", baseline),
            ("4:2:0", jpeg(333, 250, (2, 2))),
            ("4:2:2", jpeg(333, 250, (2, 1))),
            ("4:4:4", jpeg(333, 250, (1, 1))),
        ];
        for (samp, data) in cases {
            let img = full(&data);
            // Edges on iMCU boundaries (16 and 8 pixels) and off them.
            let rects = [
                (0, 0, 48, 32),
                (16, 16, 32, 32),
                (64, 96, 16, 16),
                (0, 0, 50, 40),
                (283, 210, 50, 40),
                (101, 77, 37, 29),
                (7, 130, 320, 3),
                (170, 0, 1, 250),
                (332, 249, 1, 1),
            ];
            for rect in rects {
                let mut win = RgbBuf::default();
                let at = decode_jpeg_window(&data, |_, _| rect, &mut win).expect("window");
                assert!(at.partial, "{samp} {rect:?} should decode a part");
                assert_eq!(at.full, (333, 250));
                assert_same(&img, &win, at, rect, samp);
            }
        }
    }

    #[test]
    fn a_window_over_the_whole_image_is_a_full_decode() {
        let data = jpeg(96, 64, (2, 2));
        let img = full(&data);
        // The margin reaches every edge: nothing to skip or crop.
        for rect in [(0, 0, 96, 64), (10, 10, 76, 44), (0, 0, 1000, 1000)] {
            let mut win = RgbBuf::default();
            let at = decode_jpeg_window(&data, |_, _| rect, &mut win).expect("decode");
            assert!(!at.partial, "{rect:?}");
            assert_eq!((win.width, win.height, at.x, at.y), (96, 64, 0, 0));
            assert!(win.data == img.data);
        }
    }

    #[test]
    fn bad_jpegs_are_errors() {
        let mut out = RgbBuf::default();
        let mut data = jpeg(64, 64, (2, 2));
        let n = data.len();
        // Entropy data overwritten with a marker libjpeg cannot accept.
        data[n / 2] = 0xFF;
        data[n / 2 + 1] = 0xC4;
        let bad = [vec![0xFF, 0xD8, 0xFF, 0xD9], data, b"not a jpeg".to_vec()];
        for d in bad {
            let r = decode_jpeg_window(&d, |_, _| (0, 0, 8, 8), &mut out);
            assert!(r.is_err(), "{:?}", r.map(|w| w.partial));
        }
    }
}
