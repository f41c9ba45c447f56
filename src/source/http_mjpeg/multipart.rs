//! Splitting a `multipart/x-mixed-replace` HTTP body into its JPEG parts: the boundary from
//! the Content-Type, each part's headers, with or without Content-Length, in any chunking, with
//! oversized parts skipped so the stream resumes at the next boundary.

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
    /// A part larger than the limit (or with unreadable headers) was skipped.
    Skipped(String),
    /// The closing boundary: the server ends the stream.
    End,
}

/// Incremental `multipart/x-mixed-replace` splitter: push body bytes as they arrive, then take
/// parts until `None`. Memory is bounded by the part limit plus one read.
#[derive(Debug)]
pub struct MultipartSplitter {
    /// `--boundary`.
    delimiter: Vec<u8>,
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
    /// Skipping `n` more bytes of an oversized body of known length.
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
                        self.buf.drain(..self.buf.len() - keep);
                        return None;
                    };
                    // Need the two bytes after it: "--" (closing) or a line end.
                    if self.buf.len() < i + d + 2 {
                        self.buf.drain(..i);
                        return None;
                    }
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
                            return Some(Part::Skipped(format!(
                                "part headers longer than {MAX_HEADERS} bytes"
                            )));
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
                            return Some(Part::Skipped(format!(
                                "part of {n} bytes is over the {} byte limit",
                                self.max_part
                            )));
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
                    let k = n.min(self.buf.len());
                    self.buf.drain(..k);
                    if k < n {
                        self.state = State::Discard(n - k);
                        return None;
                    }
                    self.state = State::Seek;
                }
                State::BodyToBoundary => {
                    let Some(i) = find(&self.buf, &self.delimiter) else {
                        if self.buf.len() > self.max_part {
                            self.buf.clear();
                            self.state = State::Seek;
                            return Some(Part::Skipped(format!(
                                "part without Content-Length over the {} byte limit",
                                self.max_part
                            )));
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
            matches!(got[0], Part::Skipped(_)) && matches!(got[1], Part::Skipped(_)),
            "{got:?}"
        );
        assert_eq!(got[2..], [Part::Body(small.to_vec()), Part::End]);
    }
}
