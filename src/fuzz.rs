//! Entry points for fuzzing: each takes arbitrary bytes and must never panic, hang or allocate
//! without bound, and checks the invariants its parser promises. They are driven by `cargo fuzz`
//! (`fuzz/`, libFuzzer) and, on every `cargo test`, by `tests/fuzz.rs` (the committed corpus
//! plus deterministic mutations of it).
//!
//! | target | parser |
//! |---|---|
//! | [`frame`] | pixel conversion and decoding of every source format (RGB, GRAY, YUYV, NV12, MJPEG, encoded files) |
//! | [`jpeg_stream`] | the JPEG stream splitter behind `pipe` MJPEG sources |
//! | [`multipart`] | the `multipart/x-mixed-replace` parser and URL/content-type parsing of `http_mjpeg` |
//! | [`config`] | the TOML configuration: parsing and validation |
//! | [`labels`] | label lists from files and ONNX metadata |

use crate::frame::{decode_rgb, Frame, PixelFormat, RgbBuf};
use crate::source::http_mjpeg::{boundary_of, parse_url, MultipartSplitter, Part};
use crate::source::mjpeg::{JpegSplitter, Piece};

/// Byte 0 selects the format, bytes 1..5 the size (two little-endian u16, reduced to at most
/// 512x512), byte 5 whether to decode at reduced scale; the rest is the frame data.
pub fn frame(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let format = match data[0] % 6 {
        0 => PixelFormat::Rgb24,
        1 => PixelFormat::Gray8,
        2 => PixelFormat::Yuyv422,
        3 => PixelFormat::Nv12,
        4 => PixelFormat::Mjpeg,
        _ => PixelFormat::Encoded,
    };
    let w = u16::from_le_bytes([data[1], data[2]]) as u32 % 513;
    let h = u16::from_le_bytes([data[3], data[4]]) as u32 % 513;
    let scaled = data[5] & 1 == 1;
    let mut body = data[6..].to_vec();
    // Raw formats: make the size right most of the time, so conversion (not only the size
    // check) is exercised.
    if let Some(len) = format.frame_len(w, h) {
        if data[5] & 2 == 0 {
            body.resize(len, 0x80);
        }
    }
    let frame = Frame::new(format, w, h, body);
    let mut out = RgbBuf::default();
    let quarter = |fw: u32, fh: u32| (fw / 4, fh / 4);
    let min_size: Option<&crate::frame::MinSize> = if scaled { Some(&quarter) } else { None };
    let whole = decode_rgb(&frame, min_size, &mut out);
    if whole.is_ok() {
        assert_eq!(
            out.data.len(),
            out.width as usize * out.height as usize * 3,
            "decoded buffer matches its size"
        );
        assert!(
            out.width > 0 && out.height > 0,
            "decoded images are not empty"
        );
    }
    // The daemon decodes a JPEG frame 16 rows at a time (`Session::classify_jpeg`): the same
    // outcome and, when it succeeds, the same bytes.
    if let Some(data) = crate::frame::jpeg_data(&frame) {
        let rows = in_rows(data, min_size);
        assert_eq!(rows.is_ok(), whole.is_ok(), "{rows:?} / {whole:?}");
        if let Ok(rows) = rows {
            assert!(
                rows == out.data,
                "the row-by-row decode gives the same bytes"
            );
        }
    }
}

/// Decodes `data` 16 rows at a time into a buffer of the decoded size.
fn in_rows(
    data: &[u8],
    min_size: Option<&crate::frame::MinSize>,
) -> Result<Vec<u8>, crate::frame::FrameError> {
    let mut jpeg = crate::frame::JpegRows::start(data, min_size)?;
    let (w, h) = jpeg.size();
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    for rows in buf.chunks_mut(16 * w as usize * 3) {
        jpeg.read(rows)?;
    }
    jpeg.finish()?;
    Ok(buf)
}

/// Byte 0 sets the read size (1..=256); the rest is fed in reads of that size.
pub fn jpeg_stream(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = step as usize + 1;
    let mut s = JpegSplitter::new(4096);
    let mut pieces_bytes = 0usize;
    for chunk in stream.chunks(step) {
        s.push(chunk);
        while let Some(p) = s.next_piece() {
            match p {
                Piece::Jpeg(img) => {
                    assert!(img.starts_with(&[0xFF, 0xD8]), "an image starts at SOI");
                    assert!(img.len() <= 4096 + step, "the size limit holds");
                    pieces_bytes += img.len();
                }
                Piece::Corrupt(b) => pieces_bytes += b.len(),
                Piece::Oversize(_) => {}
            }
        }
        assert!(s.buffered() <= 4096 + 2 * step + 8, "memory stays bounded");
    }
    assert!(pieces_bytes <= stream.len(), "no bytes are invented");
}

/// The first line is a content type; the second a URL; the rest a multipart body fed in reads
/// of (first byte of the body + 1) bytes.
pub fn multipart(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let content_type = lines.next().unwrap_or("");
    let url = lines.next().unwrap_or("");
    let _ = parse_url(url);
    let boundary = boundary_of(content_type).unwrap_or_else(|| "frame".into());
    let body_at = data
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(1)
        .map_or(data.len(), |(i, _)| i + 1);
    let body = &data[body_at..];
    let step = body.first().map_or(1, |&b| b as usize + 1);
    let mut s = MultipartSplitter::new(&boundary, 4096);
    for chunk in body.chunks(step) {
        s.push(chunk);
        while let Some(p) = s.next_part() {
            if let Part::Body(b) = p {
                assert!(b.len() <= 4096 + step, "the part limit holds");
            }
        }
        assert!(
            s.buffered() <= 4096 + 16 * 1024 + 2 * step + boundary.len() + 8,
            "memory stays bounded"
        );
    }
}

/// The bytes as a configuration file.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match crate::config::Config::parse(&text, crate::config::Origin::File("fuzz.toml".into())) {
        Ok(c) => assert!(c.validate().is_empty(), "a parsed config is valid"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty(), "errors say something");
        }
    }
}

/// The bytes as a labels file and as an ONNX metadata value.
pub fn labels(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = crate::model::labels::parse_labels_file(&text);
    assert!(lines.len() <= text.lines().count());
    if let Some(list) = crate::model::labels::parse_label_list(&text) {
        assert!(list.len() <= text.len(), "no more labels than bytes");
    }
}
