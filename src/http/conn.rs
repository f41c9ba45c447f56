//! One HTTP/1.1 connection: read each request head within the header timeout and size limit
//! (parsed by `httparse`), read its body within the body limit, answer, and keep the connection
//! while the client wants it and sends its next request within the idle timeout.
//!
//! Written on `httparse` rather than a full server crate (hyper is not in this build's
//! dependency tree; tiny_http starts a thread per connection): the parsing is httparse's, what is
//! here is only framing (Content-Length bodies, no chunked uploads, which no endpoint needs).

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use super::limits::{
    MAX_BODY_BYTES, MAX_HEADERS, MAX_HEAD_BYTES, MAX_MODEL_BYTES, MODEL_UPLOAD_TIMEOUT,
    OVERFLOW_HEADER_TIMEOUT, WRITE_TIMEOUT,
};
use super::request::{Request, UploadSlot};
use super::respond::{text, Resp};
use super::Shared;

/// Why no request came.
enum NoRequest {
    /// The client closed, or went quiet between requests: close without a word.
    Closed,
    /// An answer (408, 431, 413, 400, 411) and then close.
    Refuse(Resp),
}

/// Serves a connection within `max_connections` until it closes.
pub(super) async fn serve(mut stream: TcpStream, peer: IpAddr, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let wait = if first {
            shared.header_timeout
        } else {
            shared.idle_timeout
        };
        let req = match read_request(&mut stream, &mut buf, peer, wait, &shared).await {
            Ok(req) => req,
            Err(NoRequest::Closed) => return,
            Err(NoRequest::Refuse(resp)) => {
                if write(&mut stream, resp, false, false).await.is_ok() {
                    drain(&mut stream).await;
                }
                return;
            }
        };
        first = false;
        let keep = req.keep_alive;
        let head = req.method == "HEAD";
        let resp = if req.path() == "/healthz" && (req.method == "GET" || head) {
            // Cheap and lock-light: answered here, never queued behind the handler threads.
            super::routes::healthz(&shared.state)
        } else {
            let shared = Arc::clone(&shared);
            match tokio::task::spawn_blocking(move || super::routes::handle(req, &shared)).await {
                Ok(resp) => resp,
                Err(e) => text(
                    500,
                    "text/plain; charset=utf-8",
                    format!("the handler failed: {e}\n"),
                ),
            }
        };
        if write(&mut stream, resp, keep, head).await.is_err() || !keep {
            return;
        }
    }
}

/// Answers a connection over `max_connections`: `/healthz` if its request arrives at once,
/// 503 otherwise, then closes.
pub(super) async fn overflow(mut stream: TcpStream, peer: IpAddr, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    let resp = match read_request(
        &mut stream,
        &mut buf,
        peer,
        OVERFLOW_HEADER_TIMEOUT.min(shared.header_timeout),
        &shared,
    )
    .await
    {
        Ok(req) if req.path() == "/healthz" => super::routes::healthz(&shared.state),
        Err(NoRequest::Refuse(resp)) => resp,
        _ => text(
            503,
            "text/plain; charset=utf-8",
            format!(
                "too many connections (http.max_connections = {}); try again\n",
                shared.max_connections
            ),
        )
        .with_header(super::respond::header("Retry-After", "1")),
    };
    if write(&mut stream, resp, false, false).await.is_ok() {
        drain(&mut stream).await;
    }
}

/// After a refusal: stop sending, and read (and drop) what the client still sends for a
/// moment, so that closing with unread data does not reset the connection before the client
/// has read the answer.
async fn drain(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut chunk = [0u8; 8192];
    let until = Instant::now() + OVERFLOW_HEADER_TIMEOUT;
    let mut left = 4 * MAX_HEAD_BYTES * 64;
    while left > 0 {
        match timeout_at(until, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    peer: IpAddr,
    wait: std::time::Duration,
    shared: &Shared,
) -> Result<Request, NoRequest> {
    let c = &shared.counters;
    let mut deadline = Instant::now() + wait;
    let mut started = !buf.is_empty();
    let mut chunk = [0u8; 4096];
    let (req, used) = loop {
        if !buf.is_empty() {
            if !started {
                // The first byte of a kept-alive connection's next request: the head's own
                // timeout starts now.
                started = true;
                deadline = Instant::now() + shared.header_timeout;
            }
            match parse(buf, peer) {
                Ok(Some(done)) => break done,
                Ok(None) => {}
                Err(resp) => return Err(NoRequest::Refuse(resp)),
            }
        }
        if buf.len() >= MAX_HEAD_BYTES {
            c.too_large.fetch_add(1, Relaxed);
            return Err(NoRequest::Refuse(text(
                431,
                "text/plain; charset=utf-8",
                format!("request header larger than {MAX_HEAD_BYTES} bytes\n"),
            )));
        }
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(NoRequest::Closed),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if !started => return Err(NoRequest::Closed),
            Err(_) => {
                c.header_timeouts.fetch_add(1, Relaxed);
                return Err(NoRequest::Refuse(text(
                    408,
                    "text/plain; charset=utf-8",
                    format!(
                        "request header not complete within {} s\n",
                        shared.header_timeout.as_secs_f64()
                    ),
                )));
            }
        }
    };
    buf.drain(..used);
    let mut req = req;
    if req.header("Transfer-Encoding").is_some() {
        return Err(NoRequest::Refuse(text(
            411,
            "text/plain; charset=utf-8",
            "send a Content-Length body; chunked uploads are not accepted\n",
        )));
    }
    let len = match req
        .header("Content-Length")
        .map(|v| v.trim().parse::<usize>())
    {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            c.bad_requests.fetch_add(1, Relaxed);
            return Err(NoRequest::Refuse(text(
                400,
                "text/plain; charset=utf-8",
                "Content-Length is not a number\n",
            )));
        }
    };
    // A model upload may be large: its token is checked before its body is read, and only
    // one is read at a time.
    let upload = req.method == "POST" && req.path() == "/api/model";
    if upload {
        if let Some(refusal) = super::routes::write_refusal(&req, shared) {
            return Err(NoRequest::Refuse(refusal));
        }
        req.upload = UploadSlot::take(&shared.uploading);
        if req.upload.is_none() {
            return Err(NoRequest::Refuse(text(
                409,
                "text/plain; charset=utf-8",
                "another model upload is under way; try again when it has finished\n",
            )));
        }
    }
    let limit = if upload {
        MAX_MODEL_BYTES
    } else {
        MAX_BODY_BYTES
    };
    if len > limit {
        c.too_large.fetch_add(1, Relaxed);
        return Err(NoRequest::Refuse(text(
            413,
            "text/plain; charset=utf-8",
            format!("request body larger than {limit} bytes\n"),
        )));
    }
    let body_deadline = Instant::now()
        + if upload {
            MODEL_UPLOAD_TIMEOUT
        } else {
            shared.header_timeout
        };
    while buf.len() < len {
        match timeout_at(body_deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(NoRequest::Closed),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {
                c.header_timeouts.fetch_add(1, Relaxed);
                return Err(NoRequest::Refuse(text(
                    408,
                    "text/plain; charset=utf-8",
                    "request body not complete in time\n",
                )));
            }
        }
    }
    req.body = buf.drain(..len).collect();
    Ok(req)
}

/// The request head in `buf`, if complete: the request and the bytes it took.
fn parse(buf: &[u8], peer: IpAddr) -> Result<Option<(Request, usize)>, Resp> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let used = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(text(
                431,
                "text/plain; charset=utf-8",
                format!("more than {MAX_HEADERS} header lines\n"),
            ))
        }
        Err(e) => {
            return Err(text(
                400,
                "text/plain; charset=utf-8",
                format!("malformed request: {e}\n"),
            ))
        }
    };
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let conn = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Connection"))
        .map(|(_, v)| v.to_ascii_lowercase());
    let keep_alive = match r.version {
        Some(1) => conn.as_deref() != Some("close"),
        _ => conn.as_deref() == Some("keep-alive"),
    };
    Ok(Some((
        Request {
            method: r.method.unwrap_or("").to_owned(),
            url: r.path.unwrap_or("").to_owned(),
            headers,
            body: Vec::new(),
            peer,
            keep_alive,
            upload: None,
        },
        used,
    )))
}

async fn write(stream: &mut TcpStream, resp: Resp, keep: bool, head: bool) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len(),
        if keep { "keep-alive" } else { "close" }
    )
    .into_bytes();
    for (k, v) in &resp.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(&resp.body);
    }
    match timeout(WRITE_TIMEOUT, async {
        stream.write_all(&out).await?;
        stream.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}
