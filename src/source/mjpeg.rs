//! Splitting a byte stream of concatenated JPEG images (an MJPEG stream) into frames.
//!
//! Programs such as `ffmpeg -f mjpeg -`, `rpicam-vid --codec mjpeg -o -` or GStreamer's
//! `jpegenc ! fdsink` write JPEG images back to back. [`JpegSplitter`] finds each image by walking
//! its marker segments (so an EXIF thumbnail with its own start/end markers inside an APP1
//! segment does not end the frame early) and scanning entropy-coded data for the next marker.
//! Bytes before a start-of-image marker are skipped as garbage; an image cut short by the next
//! start-of-image is still handed on, so the worker that fails to decode it counts it; an image
//! growing past the size limit is dropped. Memory is bounded by the limit. Decoding is left to
//! the workers ([`crate::frame`]).

/// What the splitter found.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A complete JPEG image, start to end marker.
    Jpeg(Vec<u8>),
    /// A broken image (cut short, or a malformed marker): handed on so the worker fails and
    /// counts it.
    Corrupt(Vec<u8>),
    /// An image larger than the limit was dropped; this many bytes were discarded.
    Oversize(usize),
}

/// Incremental JPEG stream splitter: [`JpegSplitter::push`] bytes as they arrive, then take
/// pieces with [`JpegSplitter::next_piece`] until it returns `None`.
#[derive(Debug)]
pub struct JpegSplitter {
    buf: Vec<u8>,
    max_frame: usize,
    /// Whether `buf` starts at a start-of-image marker (an image in progress).
    in_image: bool,
    /// Resume point of the marker walk within `buf`.
    pos: usize,
    /// Whether `pos` is inside entropy-coded data (after a start-of-scan header).
    in_entropy: bool,
    /// Garbage bytes skipped (outside any image) since the owner last took this count.
    pub skipped: u64,
}

const SOI: [u8; 2] = [0xFF, 0xD8];

impl JpegSplitter {
    /// `max_frame`: the largest image accepted, in bytes.
    pub fn new(max_frame: usize) -> JpegSplitter {
        JpegSplitter {
            buf: Vec::new(),
            max_frame: max_frame.max(1024),
            in_image: false,
            pos: 0,
            in_entropy: false,
            skipped: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held (at most about the frame limit plus one read).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next piece, or `None` when more bytes are needed.
    pub fn next_piece(&mut self) -> Option<Piece> {
        if !self.in_image {
            // Resynchronise on a start-of-image marker followed by another marker.
            match find(&self.buf, &[0xFF, 0xD8, 0xFF]) {
                Some(i) => {
                    self.skipped += i as u64;
                    self.buf.drain(..i);
                    self.in_image = true;
                    self.pos = 2;
                    self.in_entropy = false;
                }
                None => {
                    // Keep a possible partial marker at the end.
                    let keep = self.buf.len().min(2);
                    let drop = self.buf.len() - keep;
                    self.skipped += drop as u64;
                    self.buf.drain(..drop);
                    return None;
                }
            }
        }
        match self.walk() {
            Walk::Complete(end) => {
                let rest = self.buf.split_off(end);
                let image = std::mem::replace(&mut self.buf, rest);
                self.in_image = false;
                Some(Piece::Jpeg(image))
            }
            Walk::Truncated(at) | Walk::Invalid(at) => {
                // `at` is where the next image may begin (a new start marker) or where the
                // structure broke; resynchronise from there, or from an earlier start of image
                // within the broken one: an image cut inside a marker segment has the next
                // image's start read as that segment's payload, and that image would be lost.
                let at = at.max(2);
                let at = find(&self.buf[2..at], &[0xFF, 0xD8, 0xFF]).map_or(at, |i| i + 2);
                let rest = self.buf.split_off(at);
                let broken = std::mem::replace(&mut self.buf, rest);
                self.in_image = false;
                Some(Piece::Corrupt(broken))
            }
            Walk::Incomplete => {
                if self.buf.len() > self.max_frame {
                    let n = self.buf.len();
                    // Drop all but the start marker's first byte, and look for the next image.
                    self.buf.drain(..2);
                    self.in_image = false;
                    return Some(Piece::Oversize(n));
                }
                None
            }
        }
    }

    /// Walks marker segments from `self.pos`.
    fn walk(&mut self) -> Walk {
        let b = &self.buf;
        loop {
            if self.in_entropy {
                let Some(i) = b[self.pos..].iter().position(|&x| x == 0xFF) else {
                    self.pos = b.len();
                    return Walk::Incomplete;
                };
                let p = self.pos + i;
                let Some(&m) = b.get(p + 1) else {
                    self.pos = p;
                    return Walk::Incomplete;
                };
                match m {
                    // Stuffed 0xFF, restart markers, fill bytes: still entropy-coded data.
                    0x00 | 0xD0..=0xD7 => self.pos = p + 2,
                    0xFF => self.pos = p + 1,
                    _ => {
                        self.in_entropy = false;
                        self.pos = p;
                    }
                }
            } else {
                let p = self.pos;
                if p + 2 > b.len() {
                    return Walk::Incomplete;
                }
                if b[p] != 0xFF {
                    return Walk::Invalid(p);
                }
                let m = b[p + 1];
                match m {
                    0xFF => self.pos = p + 1,
                    0xD9 => return Walk::Complete(p + 2),
                    0xD8 => return Walk::Truncated(p),
                    0x01 | 0xD0..=0xD7 => self.pos = p + 2,
                    _ => {
                        if p + 4 > b.len() {
                            return Walk::Incomplete;
                        }
                        let len = u16::from_be_bytes([b[p + 2], b[p + 3]]) as usize;
                        if len < 2 {
                            return Walk::Invalid(p);
                        }
                        let end = p + 2 + len;
                        if end > b.len() {
                            // Wait for the whole segment, unless it cannot fit in a frame.
                            if end > self.max_frame {
                                return Walk::Invalid(p);
                            }
                            return Walk::Incomplete;
                        }
                        self.pos = end;
                        if m == 0xDA {
                            self.in_entropy = true;
                        }
                    }
                }
            }
        }
    }
}

enum Walk {
    Complete(usize),
    Truncated(usize),
    Invalid(usize),
    Incomplete,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `data` starts like a JPEG image.
pub fn is_jpeg(data: &[u8]) -> bool {
    data.starts_with(&SOI)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, shade: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x as u8).wrapping_mul(7), (y as u8).wrapping_mul(5), shade])
        });
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 80)
            .encode_image(&img)
            .expect("encode");
        buf
    }

    /// A JPEG with an APP1 segment holding a complete "thumbnail" JPEG (its own SOI/EOI).
    fn with_thumbnail(main: &[u8], thumb: &[u8]) -> Vec<u8> {
        let mut seg = vec![0xFF, 0xE1];
        seg.extend_from_slice(&((thumb.len() + 2) as u16).to_be_bytes());
        seg.extend_from_slice(thumb);
        let mut out = main[..2].to_vec();
        out.extend_from_slice(&seg);
        out.extend_from_slice(&main[2..]);
        out
    }

    fn split_all(stream: &[u8], chunk: usize, max: usize) -> (Vec<Piece>, u64) {
        let mut s = JpegSplitter::new(max);
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            s.push(c);
            while let Some(p) = s.next_piece() {
                out.push(p);
            }
            assert!(s.buffered() <= max.max(1024) + chunk + 2, "buffer bounded");
        }
        (out, s.skipped)
    }

    #[test]
    fn splits_back_to_back_images_in_any_chunking() {
        let a = jpeg(64, 48, 10);
        let b = jpeg(80, 60, 200);
        let c = with_thumbnail(&jpeg(32, 32, 90), &jpeg(8, 8, 1));
        let mut stream = b"garbage before".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(&b);
        stream.extend_from_slice(&c);
        for chunk in [1, 3, 17, 4096, stream.len()] {
            let (pieces, skipped) = split_all(&stream, chunk, 1 << 20);
            assert_eq!(
                pieces,
                vec![
                    Piece::Jpeg(a.clone()),
                    Piece::Jpeg(b.clone()),
                    Piece::Jpeg(c.clone())
                ],
                "chunk {chunk}"
            );
            assert_eq!(skipped, 16, "chunk {chunk}");
        }
    }

    #[test]
    fn truncated_image_is_handed_on_as_corrupt_and_the_next_one_survives() {
        let a = jpeg(64, 48, 10);
        let b = jpeg(64, 48, 99);
        let mut stream = a[..a.len() / 2].to_vec();
        stream.extend_from_slice(&b);
        let (pieces, _) = split_all(&stream, 100, 1 << 20);
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        assert!(matches!(&pieces[0], Piece::Corrupt(d) if d.len() == a.len() / 2));
        assert_eq!(pieces[1], Piece::Jpeg(b));
    }

    #[test]
    fn an_image_cut_inside_its_header_does_not_take_the_next_one_with_it() {
        let a = jpeg(64, 48, 10);
        let b = jpeg(64, 48, 99);
        let c = jpeg(32, 32, 7);
        // Cut a few bytes into a quantisation table: the rest of that segment's length reads
        // into `b`, past its start marker.
        let dqt = find(&a, &[0xFF, 0xDB]).expect("DQT");
        let len = u16::from_be_bytes([a[dqt + 2], a[dqt + 3]]) as usize;
        assert!(len > 20, "a DQT segment of {len} bytes");
        let cut = dqt + 10;
        let mut stream = a[..cut].to_vec();
        stream.extend_from_slice(&b);
        stream.extend_from_slice(&c);
        for chunk in [1, 64, stream.len()] {
            let (pieces, _) = split_all(&stream, chunk, 1 << 20);
            assert_eq!(pieces.len(), 3, "chunk {chunk}: {pieces:?}");
            assert!(
                matches!(&pieces[0], Piece::Corrupt(d) if d.len() == cut),
                "chunk {chunk}"
            );
            assert_eq!(pieces[1], Piece::Jpeg(b.clone()), "chunk {chunk}");
            assert_eq!(pieces[2], Piece::Jpeg(c.clone()), "chunk {chunk}");
        }
    }

    #[test]
    fn oversize_images_are_dropped_with_bounded_memory() {
        let big = jpeg(256, 256, 5);
        let small = jpeg(16, 16, 5);
        assert!(big.len() > 2048);
        let mut stream = big.clone();
        stream.extend_from_slice(&small);
        let (pieces, _) = split_all(&stream, 512, 2048);
        assert!(
            matches!(pieces.first(), Some(Piece::Oversize(_))),
            "{pieces:?}"
        );
        assert_eq!(pieces.last(), Some(&Piece::Jpeg(small)));
    }

    #[test]
    fn pure_garbage_yields_nothing() {
        let (pieces, skipped) = split_all(&[0x55; 10_000], 333, 4096);
        assert!(pieces.is_empty());
        assert!(skipped >= 9_990);
    }
}
