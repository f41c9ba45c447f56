//! Building responses, reading query parameters, and checking the bearer token.

use serde::Serialize;

pub(super) type Resp = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

pub(super) fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and ASCII values")
}

pub(super) fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Resp {
    tiny_http::Response::from_data(body.into())
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"))
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

pub(super) fn authorized(req: &tiny_http::Request, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let bearer = req.headers().iter().any(|h| {
        h.field.equiv("Authorization")
            && h.value
                .as_str()
                .strip_prefix("Bearer ")
                .is_some_and(|t| t.trim() == token)
    });
    bearer || query(req.url(), "token").as_deref() == Some(token)
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
