//! A parsed HTTP request, as `conn` reads it and the handlers see it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

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
    /// A model upload holds the server's one upload slot until the request is dropped.
    pub upload: Option<UploadSlot>,
}

/// The one model upload at a time (its body may be 256 MiB): taken with [`UploadSlot::take`],
/// given back when dropped.
pub(super) struct UploadSlot(Arc<AtomicBool>);

impl UploadSlot {
    /// The slot, unless another upload holds it.
    pub fn take(busy: &Arc<AtomicBool>) -> Option<UploadSlot> {
        (!busy.swap(true, Relaxed)).then(|| UploadSlot(Arc::clone(busy)))
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
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
