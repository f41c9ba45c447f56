//! The `http_mjpeg` source: `multipart/x-mixed-replace` JPEG streams over plain HTTP (IP cameras,
//! ESP32-CAM, `mjpg-streamer`, motion).
//!
//! `open` connects, sends one GET (with basic auth when configured) and checks the response
//! header: status 200 and a multipart content type whose boundary it keeps. A producer thread
//! ([`super::feed`]) then reads the body and splits it with [`MultipartSplitter`]: a part with a
//! `Content-Length` is read to that length, one without is cut at the next boundary. Each part is
//! handed on as an MJPEG frame, undecoded; a corrupt part fails in the worker that decodes it and
//! is counted there, and the stream goes on. A part over `max_frame_bytes` (by its
//! Content-Length, true or not, or by what arrives) is skipped without being buffered and
//! counted in `lookout_source_frames_rejected_total`; the stream resumes at the next delimiter. A stall (no part for `stall_timeout_secs`) or a
//! dropped connection is an error from `next_frame`: the capture thread reconnects with back-off.
//! HTTPS and chunked transfer encoding are not supported (cameras serve neither for MJPEG).

mod multipart;

use multipart::find;
pub use multipart::{boundary_of, MultipartSplitter, Part};

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::feed::{Feed, FeedTx, Next};
use super::pipe::{default_stall, validate_stall};
use super::{FrameSource, SourceError};
use crate::frame::{Frame, PixelFormat};
use crate::metrics::{InputStats, Rejected};
use crate::problems::Problems;
use crate::stop::StopToken;

/// `type = "http_mjpeg"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMjpegConfig {
    /// The stream's address, plain HTTP: "http://192.168.1.20:81/stream" (ESP32-CAM),
    /// "http://camera/video.cgi" ...
    pub url: String,
    /// User name for HTTP basic authentication. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for basic authentication. Prefer `password_env`, which keeps it out of the file.
    #[serde(default)]
    pub password: Option<String>,
    /// Name of an environment variable holding the password (read when connecting).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Seconds without a frame (or to connect and get the response header) before the stream is
    /// considered stalled and reconnected. Default 10.
    #[serde(default = "default_stall")]
    pub stall_timeout_secs: f64,
    /// Largest part accepted, in bytes; bigger ones are skipped. Default 16000000.
    #[serde(default = "default_max_part")]
    pub max_frame_bytes: usize,
}

fn default_max_part() -> usize {
    16_000_000
}

/// The parts of an `http://` URL this source needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
    /// `user:password` given in the URL itself.
    pub userinfo: Option<String>,
}

/// Parses `http://[user[:password]@]host[:port][/path]`.
pub fn parse_url(url: &str) -> Result<HttpUrl, String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err("https is not supported by http_mjpeg; use the camera's plain http stream, or a `pipe` source with ffmpeg".into())
        }
        _ => return Err("expected an http:// URL, e.g. \"http://192.168.1.20:81/stream\"".into()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_owned()), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("invalid port {p:?}"))?,
            None => 80,
        };
        (h.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse().map_err(|_| format!("invalid port {p:?}"))?,
            ),
            None => (hostport.to_owned(), 80),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    Ok(HttpUrl {
        host,
        port,
        path: path.to_owned(),
        userinfo,
    })
}

impl HttpMjpegConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if let Err(e) = parse_url(&self.url) {
            p.push(format!("{key}.url"), e);
        }
        if self.password.is_some() && self.password_env.is_some() {
            p.push(
                format!("{key}.password_env"),
                "set either password or password_env, not both",
            );
        }
        if (self.password.is_some() || self.password_env.is_some()) && self.username.is_none() {
            p.push(format!("{key}.username"), "a password needs a username");
        }
        if let Some(var) = &self.password_env {
            if var.is_empty() || var.contains('=') {
                p.push(
                    format!("{key}.password_env"),
                    "must name an environment variable",
                );
            }
        }
        validate_stall(key, self.stall_timeout_secs, p);
        p.range(
            &format!("{key}.max_frame_bytes"),
            self.max_frame_bytes,
            1024,
            256_000_000,
        );
    }
}

/// Standard base64 (RFC 4648, with padding), for the basic auth header.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub struct HttpMjpegSource {
    cfg: HttpMjpegConfig,
    feed: Option<Feed>,
    /// Where the reader thread counts skipped parts and bytes (see
    /// [`FrameSource::count_into`]); a private one until the pipeline gives its own.
    stats: Arc<InputStats>,
}

impl HttpMjpegSource {
    pub fn new(cfg: HttpMjpegConfig) -> HttpMjpegSource {
        HttpMjpegSource {
            cfg,
            feed: None,
            stats: Arc::default(),
        }
    }

    fn err(&self, message: impl Into<String>) -> SourceError {
        SourceError::Http {
            url: self.shown_url(),
            message: message.into(),
        }
    }

    /// The URL without any password in it, for messages.
    fn shown_url(&self) -> String {
        match parse_url(&self.cfg.url) {
            Ok(u) => format!("http://{}:{}{}", u.host, u.port, u.path),
            Err(_) => self.cfg.url.clone(),
        }
    }

    /// Connects and reads the response header. Returns the stream, the boundary and the body
    /// bytes read past the header.
    fn connect(&self) -> Result<(TcpStream, String, Vec<u8>), SourceError> {
        let url = parse_url(&self.cfg.url).map_err(|m| self.err(m))?;
        let timeout = Duration::from_secs_f64(self.cfg.stall_timeout_secs);
        let io = |what: String| {
            let shown = self.shown_url();
            move |source: std::io::Error| SourceError::Io {
                what: format!("{shown}: {what}"),
                source,
            }
        };
        let addrs: Vec<_> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(io(format!("cannot resolve host {}", url.host)))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => {
                return Err(io(
                    "cannot connect: check the address and that the camera is on".into(),
                )(e))
            }
            (None, None) => return Err(self.err(format!("host {} has no address", url.host))),
        };
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io("cannot set a read timeout".into()))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(io("cannot set a write timeout".into()))?;
        let _ = stream.set_nodelay(true);

        let password = match (&self.cfg.password, &self.cfg.password_env) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                self.err(format!("environment variable {var} (source.password_env) is not set or not valid UTF-8"))
            })?),
            (None, None) => None,
        };
        let credentials = match (&self.cfg.username, password) {
            (Some(u), p) => Some(format!("{u}:{}", p.unwrap_or_default())),
            (None, _) => url.userinfo.clone(),
        };
        let host = if url.host.contains(':') {
            format!("[{}]", url.host)
        } else {
            url.host.clone()
        };
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: lookout/{}\r\nAccept: multipart/x-mixed-replace, */*\r\n",
            url.path,
            url.port,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(c) = credentials {
            request.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64(c.as_bytes())
            ));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .map_err(io("cannot send the request".into()))?;

        // The response header, bounded.
        let mut head = Vec::with_capacity(2048);
        let mut chunk = [0u8; 4096];
        let header_end = loop {
            if let Some(i) = find(&head, b"\r\n\r\n") {
                break i + 4;
            }
            if head.len() > 64 * 1024 {
                return Err(self.err("response header longer than 64 KiB"));
            }
            let n = stream
                .read(&mut chunk)
                .map_err(io("no response header".into()))?;
            if n == 0 {
                return Err(self.err("the server closed the connection before answering"));
            }
            head.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8_lossy(&head[..header_end]).into_owned();
        let mut lines = text.lines();
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let header = |name: &str| {
            text.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        match status {
            200 => {}
            401 | 403 => {
                return Err(self.err(format!("{status_line:?}: check username and password")))
            }
            _ => {
                return Err(self.err(format!(
                    "unexpected answer {status_line:?}; expected 200 OK"
                )))
            }
        }
        if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            return Err(self.err("chunked transfer encoding is not supported"));
        }
        let content_type = header("content-type").unwrap_or_default();
        let boundary = boundary_of(&content_type).ok_or_else(|| {
            self.err(format!(
                "content type {content_type:?} is not a multipart/x-mixed-replace stream with a boundary (is this the camera's MJPEG stream URL, not a snapshot or page?)"
            ))
        })?;
        Ok((stream, boundary, head[header_end..].to_vec()))
    }
}

/// Reads the body into parts until the stream ends, fails or `quit`; what the splitter throws
/// away is counted in `stats`.
fn produce(
    mut stream: TcpStream,
    mut splitter: MultipartSplitter,
    url: String,
    stats: Arc<InputStats>,
    tx: FeedTx,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(part) = splitter.next_part() {
            stats.skipped(std::mem::take(&mut splitter.skipped));
            match part {
                Part::Body(data) => {
                    if !tx.send(Ok(Frame::new(PixelFormat::Mjpeg, 0, 0, data))) {
                        return;
                    }
                }
                Part::Skipped(reason, why) => {
                    stats.reject(reason);
                    let hint = match reason {
                        Rejected::Oversized => {
                            "; raise source.max_frame_bytes if it is a real frame"
                        }
                        Rejected::Malformed => "",
                    };
                    log::warn!(
                        "Skipped a stream part{hint}. url={url} reason={} detail={why:?}",
                        reason.label()
                    );
                }
                Part::End => {
                    tx.send(Err(SourceError::StreamEnded { url }));
                    return;
                }
            }
        }
        stats.skipped(std::mem::take(&mut splitter.skipped));
        if tx.quitting() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                tx.send(Err(SourceError::StreamEnded { url }));
                return;
            }
            Ok(n) => splitter.push(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The read timeout equals the stall timeout; the capture thread reports the stall.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                tx.send(Err(SourceError::Io {
                    what: format!("{url}: connection lost"),
                    source: e,
                }));
                return;
            }
        }
    }
}

impl FrameSource for HttpMjpegSource {
    fn describe(&self) -> String {
        format!("http_mjpeg:{}", self.shown_url())
    }

    fn live(&self) -> bool {
        true
    }

    fn count_into(&mut self, stats: Arc<InputStats>) {
        self.stats = stats;
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.close();
        let (stream, boundary, rest) = self.connect()?;
        log::debug!(
            "Stream connected. url={} boundary={boundary:?}",
            self.shown_url()
        );
        let mut splitter = MultipartSplitter::new(&boundary, self.cfg.max_frame_bytes);
        splitter.push(&rest);
        let url = self.shown_url();
        let stats = Arc::clone(&self.stats);
        self.feed = Some(Feed::spawn("http-mjpeg-reader", move |tx| {
            produce(stream, splitter, url, stats, tx)
        })?);
        Ok(())
    }

    fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, SourceError> {
        let stall = Duration::from_secs_f64(self.cfg.stall_timeout_secs);
        let what = self.describe();
        let Some(feed) = self.feed.as_mut() else {
            return Err(self.err("not connected"));
        };
        match feed.next(stop, stall) {
            Next::Frame(f) => Ok(Some(f)),
            Next::Stopped => Ok(None),
            Next::Failed(e) => Err(e),
            Next::Stalled(waited) => Err(SourceError::Stalled {
                what,
                secs: waited.as_secs_f64(),
            }),
            Next::Ended => Err(SourceError::StreamEnded {
                url: self.shown_url(),
            }),
        }
    }

    fn close(&mut self) {
        if let Some(mut feed) = self.feed.take() {
            // The reader wakes from its read within the stall timeout at worst; don't wait that long.
            feed.close(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_or_refused_with_a_reason() {
        let u = parse_url("http://admin:pw@192.168.1.20:81/stream?x=1").expect("valid");
        assert_eq!(
            u,
            HttpUrl {
                host: "192.168.1.20".into(),
                port: 81,
                path: "/stream?x=1".into(),
                userinfo: Some("admin:pw".into())
            }
        );
        let u = parse_url("HTTP://camera").expect("valid");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("camera", 80, "/")
        );
        let u = parse_url("http://[::1]:8080/v").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        for (bad, why) in [
            ("https://cam/x", "https"),
            ("rtsp://cam", "http://"),
            ("http://cam:port/x", "port"),
            ("http:///x", "no host"),
        ] {
            let e = parse_url(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }
}
