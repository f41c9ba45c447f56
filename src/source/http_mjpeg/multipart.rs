//! Splitting a `multipart/x-mixed-replace` HTTP body into its JPEG parts: the boundary from
//! the Content-Type, each part's headers, with or without Content-Length, in any chunking, with
//! oversized parts skipped so the stream resumes at the next boundary, and the bytes that made
//! no part counted.

use crate::metrics::Rejected;

/// The boundary named in a `multipart/x-mixed-replace; boundary=...` content type, without the
/// leading `--` some cameras include in it.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    let mime = parts.next()?.trim().to_ascii_lowercase();
    if !mime.starts_with("multipart/") {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        let v = v.strip_prefix("--").unwrap_or(v);
        (!v.is_empty()).then(|| v.to_owned())
    })
}

/// What the splitter found.
#[derive(Debug, PartialEq, Eq)]
pub enum Part {
    /// A part's body.
    Body(Vec<u8>),
    /// A part larger than the limit, or with unreadable headers, was skipped: why, and what.
    Skipped(Rejected, String),
    /// The closing boundary: the server ends the stream.
    End,
}

/// Incremental `multipart/x-mixed-replace` splitter: push body bytes as they arrive, then take
/// parts until `None`. Memory is bounded by the part limit plus one read.
#[derive(Debug)]
pub struct MultipartSplitter {
    /// `--boundary`.
    delimiter: Vec<u8>,
    /// `\n--boundary`: a delimiter at the start of a line, where an oversized part that claims
    /// more than it sends is cut short.
    delimiter_line: Vec<u8>,
    /// Bytes that made no part (preambles, garbage between parts, skipped parts) since the owner
    /// last took this count.
    pub skipped: u64,
    buf: Vec<u8>,
    max_part: usize,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the next delimiter.
    Seek,
    /// After a delimiter line: reading part headers.
    Headers,
    /// Reading a body of known length.
    Body(usize),
    /// Reading a body up to the next delimiter.
    BodyToBoundary,
    /// Skipping an oversized body of declared length: `n` more bytes, or up to the next
    /// delimiter line if that comes first (the length may lie).
    Discard(usize),
}

const MAX_HEADERS: usize = 16 * 1024;

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl MultipartSplitter {
    pub fn new(boundary: &str, max_part: usize) -> MultipartSplitter {
        MultipartSplitter {
            delimiter: format!("--{boundary}").into_bytes(),
            delimiter_line: format!("\n--{boundary}").into_bytes(),
            skipped: 0,
            buf: Vec::new(),
            max_part: max_part.max(1024),
            state: State::Seek,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn next_part(&mut self) -> Option<Part> {
        loop {
            match self.state {
                State::Seek => {
                    let d = self.delimiter.len();
                    let Some(i) = find(&self.buf, &self.delimiter) else {
                        // Keep what could be the start of a delimiter.
                        let keep = self.buf.len().min(d - 1);
                        self.skip(self.buf.len() - keep);
                        return None;
                    };
                    // Need the two bytes after it: "--" (closing) or a line end.
                    if self.buf.len() < i + d + 2 {
                        self.skip(i);
                        return None;
                    }
                    self.skipped += i as u64;
                    if &self.buf[i + d..i + d + 2] == b"--" {
                        self.buf.drain(..i + d + 2);
                        return Some(Part::End);
                    }
                    self.buf.drain(..i + d);
                    self.state = State::Headers;
                }
                State::Headers => {
                    // Headers end at an empty line; the delimiter line's own end comes first.
                    let end = find(&self.buf, b"\r\n\r\n")
                        .map(|i| (i, 4))
                        .into_iter()
                        .chain(find(&self.buf, b"\n\n").map(|i| (i, 2)))
                        .min_by_key(|(i, _)| *i);
                    let Some((i, n)) = end else {
                        if self.buf.len() > MAX_HEADERS {
                            self.state = State::Seek;
                            return Some(Part::Skipped(
                                Rejected::Malformed,
                                format!("part headers longer than {MAX_HEADERS} bytes"),
                            ));
                        }
                        return None;
                    };
                    let headers = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                    self.buf.drain(..i + n);
                    let length = headers.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())
                            .flatten()
                    });
                    self.state = match length {
                        Some(n) if n > self.max_part => {
                            self.state = State::Discard(n);
                            return Some(Part::Skipped(
                                Rejected::Oversized,
                                format!(
                                    "part of {n} bytes (its Content-Length) is over the {} byte limit",
                                    self.max_part
                                ),
                            ));
                        }
                        Some(n) => State::Body(n),
                        None => State::BodyToBoundary,
                    };
                }
                State::Body(n) => {
                    if self.buf.len() < n {
                        return None;
                    }
                    let rest = self.buf.split_off(n);
                    let body = std::mem::replace(&mut self.buf, rest);
                    self.state = State::Seek;
                    return Some(Part::Body(body));
                }
                State::Discard(n) => {
                    // A delimiter never occurs inside a part (RFC 2046), so one at the start of
                    // a line ends the part whatever its Content-Length claimed: a lying length
                    // (1 GB announced, a few bytes sent) costs no part after it.
                    if let Some(i) = find(&self.buf, &self.delimiter_line) {
                        self.skip((i + 1).min(n));
                        self.state = State::Seek;
                        continue;
                    }
                    // Keep what could be the start of a delimiter line.
                    let keep = self.buf.len().min(self.delimiter_line.len() - 1);
                    let k = (self.buf.len() - keep).min(n);
                    self.skip(k);
                    if k < n {
                        self.state = State::Discard(n - k);
                        return None;
                    }
                    self.state = State::Seek;
                }
                State::BodyToBoundary => {
                    let Some(i) = find(&self.buf, &self.delimiter) else {
                        if self.buf.len() > self.max_part {
                            self.skip(self.buf.len());
                            self.state = State::Seek;
                            return Some(Part::Skipped(
                                Rejected::Oversized,
                                format!(
                                    "part without Content-Length over the {} byte limit",
                                    self.max_part
                                ),
                            ));
                        }
                        return None;
                    };
                    let mut end = i;
                    if self.buf[..end].ends_with(b"\r\n") {
                        end -= 2;
                    } else if self.buf[..end].ends_with(b"\n") {
                        end -= 1;
                    }
                    let body = self.buf[..end].to_vec();
                    self.buf.drain(..i);
                    self.state = State::Seek;
                    return Some(Part::Body(body));
                }
            }
        }
    }

    /// Drops the first `n` buffered bytes, counting them as skipped.
    fn skip(&mut self, n: usize) {
        self.skipped += n as u64;
        self.buf.drain(..n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_is_read_from_the_content_type() {
        let cases = [
            ("multipart/x-mixed-replace; boundary=frame", Some("frame")),
            (
                "multipart/x-mixed-replace;boundary=\"--myboundary\"",
                Some("myboundary"),
            ),
            (
                "Multipart/X-Mixed-Replace; charset=x; Boundary=123456789000000000000987654321",
                Some("123456789000000000000987654321"),
            ),
            ("image/jpeg", None),
            ("multipart/x-mixed-replace", None),
        ];
        for (ct, want) in cases {
            assert_eq!(boundary_of(ct).as_deref(), want, "{ct}");
        }
    }

    fn stream(parts: &[(&[u8], bool)]) -> Vec<u8> {
        let mut s = b"preamble\r\n".to_vec();
        for (body, with_length) in parts {
            s.extend_from_slice(b"--frame\r\nContent-Type: image/jpeg\r\n");
            if *with_length {
                s.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            }
            s.extend_from_slice(b"\r\n");
            s.extend_from_slice(body);
            s.extend_from_slice(b"\r\n");
        }
        s.extend_from_slice(b"--frame--\r\n");
        s
    }

    #[test]
    fn parts_with_and_without_length_in_any_chunking() {
        let a: &[u8] = b"\xFF\xD8first--frame-lookalike\xFF\xD9";
        let b: &[u8] = b"\xFF\xD8second\xFF\xD9";
        let data = stream(&[(a, true), (b, false), (b"", true)]);
        for chunk in [1, 2, 7, 64, data.len()] {
            let mut s = MultipartSplitter::new("frame", 4096);
            let mut got = Vec::new();
            for c in data.chunks(chunk) {
                s.push(c);
                while let Some(p) = s.next_part() {
                    got.push(p);
                }
            }
            assert_eq!(
                got,
                vec![
                    Part::Body(a.to_vec()),
                    Part::Body(b.to_vec()),
                    Part::Body(Vec::new()),
                    Part::End
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn oversized_parts_are_skipped_and_the_stream_resumes() {
        let big = vec![7u8; 5000];
        let small: &[u8] = b"\xFF\xD8ok\xFF\xD9";
        let data = stream(&[(&big, true), (&big, false), (small, true)]);
        let mut s = MultipartSplitter::new("frame", 1024);
        let mut got = Vec::new();
        for c in data.chunks(100) {
            s.push(c);
            while let Some(p) = s.next_part() {
                got.push(p);
            }
            assert!(s.buffered() <= 1024 + 100 + 16, "bounded: {}", s.buffered());
        }
        assert!(
            matches!(got[0], Part::Skipped(Rejected::Oversized, _))
                && matches!(got[1], Part::Skipped(Rejected::Oversized, _)),
            "{got:?}"
        );
        assert_eq!(got[2..], [Part::Body(small.to_vec()), Part::End]);
        // Everything but the small part's body and the framing was skipped, and counted.
        assert!(s.skipped >= 2 * 5000, "{}", s.skipped);
    }

    #[test]
    fn a_part_claiming_a_gigabyte_ends_at_the_next_delimiter_line() {
        let small: &[u8] = b"\xFF\xD8ok\xFF\xD9";
        let mut data =
            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000000\r\n\r\n".to_vec();
        // What it sends instead: 100 KB, which holds a boundary lookalike mid-line.
        data.extend((0..100_000u32).map(|i| (i % 251) as u8));
        data.extend_from_slice(b"x--frame\r\n");
        data.extend_from_slice(&stream(&[(small, true), (small, false)])[b"preamble\r\n".len()..]);
        for chunk in [1, 7, 4096, data.len()] {
            let mut s = MultipartSplitter::new("frame", 1024);
            let mut got = Vec::new();
            for c in data.chunks(chunk) {
                s.push(c);
                while let Some(p) = s.next_part() {
                    got.push(p);
                }
                assert!(
                    s.buffered() <= 1024 + chunk + 16,
                    "bounded: {}",
                    s.buffered()
                );
            }
            assert!(
                matches!(&got[0], Part::Skipped(Rejected::Oversized, why) if why.contains("1000000000")),
                "chunk {chunk}: {got:?}"
            );
            assert_eq!(
                got[1..],
                [
                    Part::Body(small.to_vec()),
                    Part::Body(small.to_vec()),
                    Part::End
                ],
                "chunk {chunk}"
            );
            assert!(s.skipped >= 100_000, "chunk {chunk}: {}", s.skipped);
        }
    }

    #[test]
    fn an_honest_oversized_part_is_skipped_by_its_length_without_a_line_break() {
        // A camera that puts the next delimiter right after the body, with no line end.
        let big = vec![0x42u8; 3000];
        let small: &[u8] = b"\xFF\xD8ok\xFF\xD9";
        let mut data = format!("--frame\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
        data.extend_from_slice(&big);
        data.extend_from_slice(
            format!("--frame\r\nContent-Length: {}\r\n\r\n", small.len()).as_bytes(),
        );
        data.extend_from_slice(small);
        data.extend_from_slice(b"--frame--");
        let mut s = MultipartSplitter::new("frame", 1024);
        let mut got = Vec::new();
        for c in data.chunks(100) {
            s.push(c);
            while let Some(p) = s.next_part() {
                got.push(p);
            }
        }
        assert!(
            matches!(got[0], Part::Skipped(Rejected::Oversized, _)),
            "{got:?}"
        );
        assert_eq!(got[1..], [Part::Body(small.to_vec()), Part::End]);
    }

    #[test]
    fn endless_part_headers_are_skipped_as_malformed() {
        let mut data = b"--frame\r\nX-Junk: ".to_vec();
        data.extend(std::iter::repeat_n(b'a', MAX_HEADERS + 10));
        let mut s = MultipartSplitter::new("frame", 1 << 20);
        s.push(&data);
        assert!(matches!(
            s.next_part(),
            Some(Part::Skipped(Rejected::Malformed, _))
        ));
    }
}
