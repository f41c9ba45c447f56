//! Building responses, reading query parameters, and checking the bearer token.

use serde::Serialize;
use subtle::ConstantTimeEq;

use super::request::Request;

/// A response: status, extra headers, body. `conn` adds Content-Length and Connection.
pub(super) struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn with_header(mut self, h: (String, String)) -> Resp {
        self.headers.push(h);
        self
    }
}

pub(super) fn header(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

pub(super) fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Resp {
    Resp {
        status,
        headers: vec![
            header("Content-Type", content_type),
            header("Cache-Control", "no-store"),
        ],
        body: body.into(),
    }
}

pub(super) fn json(value: &impl Serialize) -> Resp {
    match serde_json::to_vec(value) {
        Ok(body) => text(200, "application/json", body),
        Err(e) => text(
            500,
            "text/plain; charset=utf-8",
            format!("cannot encode JSON: {e}\n"),
        ),
    }
}

/// Query parameter `key`, percent-decoded.
pub(super) fn query(url: &str, key: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The paths the live view page itself requests with `?token=` (a browser cannot set the
/// Authorization header on an `<img>` or a plain page load). Everything else, and every POST,
/// needs the header.
const QUERY_TOKEN_PATHS: [&str; 10] = [
    "/",
    "/collect",
    "/api/collect",
    "/collect/image",
    "/index.html",
    "/api/status",
    "/api/live",
    "/api/history",
    "/api/events",
    "/frame.jpg",
];

/// Whether `req` carries `token`: as `Authorization: Bearer`, or as `?token=` on a GET or HEAD
/// of one of the page's own paths. Compared in constant time (`subtle`); only the length of
/// the guess can show in the timing.
pub(super) fn authorized(req: &Request, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let same = |guess: &str| bool::from(guess.as_bytes().ct_eq(token.as_bytes()));
    let bearer = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Authorization"))
        .any(|(_, v)| v.strip_prefix("Bearer ").is_some_and(|t| same(t.trim())));
    if bearer {
        return true;
    }
    let page_get =
        (req.method == "GET" || req.method == "HEAD") && QUERY_TOKEN_PATHS.contains(&req.path());
    page_get && query(&req.url, "token").is_some_and(|t| same(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_and_decoded() {
        assert_eq!(
            query("/x?a=1&token=ab%2Fc+d", "token").as_deref(),
            Some("ab/c d")
        );
        assert_eq!(query("/x?a=1", "token"), None);
        assert_eq!(query("/x", "a"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
