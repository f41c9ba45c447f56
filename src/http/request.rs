//! A parsed HTTP request, as `conn` reads it and the handlers see it.

use std::net::IpAddr;

/// A parsed request.
pub(super) struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: IpAddr,
    /// HTTP/1.1 without `Connection: close`, or 1.0 with `Connection: keep-alive`.
    pub keep_alive: bool,
}

impl Request {
    pub fn path(&self) -> &str {
        self.url.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
