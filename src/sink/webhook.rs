//! The `webhook` sink: POSTs each event's JSON to a URL, retrying with capped back-off.
//!
//! Runs on the sink's own pipeline thread, one request at a time, so events arrive in order; the
//! pipeline's per-sink queue (`[pipeline] sink_queue`) is the bounded queue in front of it: while
//! the endpoint is slow or down, events wait there, and when it is full the dispatcher drops and
//! counts them, without holding up other sinks. Each attempt is bounded by `timeout_secs`; a
//! transport error, HTTP 429 or 5xx is retried up to `retries` times with doubling delays capped
//! at `backoff_max_secs`; any other non-2xx status fails at once (the request itself is wrong).
//! `timeout_secs` is at most [`MAX_TIMEOUT_SECS`], so an endpoint that accepts and never answers
//! cannot hold the sink past the pipeline's stop deadline; once the pipeline's abort token is set
//! (near that deadline, see [`Sink::abort_on`]) no retry or new attempt starts and the event
//! fails (counted).
//! HTTPS uses rustls with the Mozilla root certificates bundled in ureq, or, with `ca_file`, only
//! the certificates in that PEM file (a LAN server with its own or a self-signed certificate).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Sink, SinkError};
use crate::event::Event;
use crate::problems::Problems;
use crate::retry::{chain, Backoff};
use crate::stop::StopToken;

/// `type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Sink name. Default "webhook".
    #[serde(default)]
    pub name: Option<String>,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Extra request headers, e.g. `{ "X-Line" = "3" }`. Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Environment variable holding a bearer token, sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Limit for one attempt (connect, send, response), seconds. At most 5 (one attempt must
    /// end within the shutdown deadline). Default 5.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Retries after a failed attempt (transport error, 429, 5xx). Default 3.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay, milliseconds; doubles per retry (+-20% jitter). Default 500.
    #[serde(default = "default_backoff_min")]
    pub backoff_min_ms: u64,
    /// Longest retry delay, seconds. Default 30.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: f64,
    /// PEM file of the CA certificate(s) to trust for `https://` instead of the bundled public
    /// roots, e.g. a self-signed server certificate. Default: public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_timeout() -> f64 {
    5.0
}

/// The longest `timeout_secs`: an attempt started just before the pipeline's abort token is set
/// ends before the stop deadline ([`crate::pipeline::ABORT_MARGIN`] later).
pub const MAX_TIMEOUT_SECS: f64 = 5.0;
fn default_retries() -> u32 {
    3
}
fn default_backoff_min() -> u64 {
    500
}
fn default_backoff_max() -> f64 {
    30.0
}

impl WebhookSinkConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://"))
            || self.url.len() < 10
        {
            p.push(
                format!("{key}.url"),
                format!("expected an http:// or https:// URL, got {:?}", self.url),
            );
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= MAX_TIMEOUT_SECS) {
            p.push(
                format!("{key}.timeout_secs"),
                format!(
                    "expected 0..{MAX_TIMEOUT_SECS} (one attempt must end within the shutdown deadline; use retries for a slow endpoint), got {}",
                    self.timeout_secs
                ),
            );
        }
        p.range(&format!("{key}.retries"), self.retries, 0, 100);
        p.range(
            &format!("{key}.backoff_min_ms"),
            self.backoff_min_ms,
            1,
            600_000,
        );
        if !(self.backoff_max_secs > 0.0 && self.backoff_max_secs <= 3600.0) {
            p.push(
                format!("{key}.backoff_max_secs"),
                format!("expected 0..3600, got {}", self.backoff_max_secs),
            );
        }
        for (name, value) in &self.headers {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                p.push(
                    format!("{key}.headers"),
                    format!("invalid header name {name:?}"),
                );
            }
            if value.contains(['\r', '\n']) {
                p.push(
                    format!("{key}.headers.{name}"),
                    "must not contain line breaks",
                );
            }
        }
    }
}

pub struct WebhookSink {
    name: String,
    url: String,
    agent: ureq::Agent,
    headers: Vec<(String, String)>,
    retries: u32,
    backoff: Backoff,
    body: Vec<u8>,
    /// Set by the pipeline near its stop deadline (see [`Sink::abort_on`]); read here only.
    abort: StopToken,
}

/// How one attempt ended.
enum Attempt {
    Delivered,
    Retry(SinkError),
    Fail(SinkError),
}

/// The certificates of a PEM file, as ureq's trusted roots.
fn read_ca_file(sink: &str, path: &std::path::Path) -> Result<ureq::tls::RootCerts, SinkError> {
    let pem = std::fs::read(path).map_err(|source| SinkError::Io {
        what: format!(
            "webhook sink {sink:?}: cannot read ca_file {}",
            path.display()
        ),
        source,
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(SinkError::Build {
                    what: format!(
                        "webhook sink {sink:?}: ca_file {} is not valid PEM: {e}",
                        path.display()
                    ),
                })
            }
        }
    }
    if certs.is_empty() {
        return Err(SinkError::Build {
            what: format!(
                "webhook sink {sink:?}: ca_file {} holds no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)",
                path.display()
            ),
        });
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

impl WebhookSink {
    pub fn new(cfg: &WebhookSinkConfig) -> Result<WebhookSink, SinkError> {
        let name = cfg.name.clone().unwrap_or_else(|| "webhook".into());
        let mut headers: Vec<(String, String)> = cfg
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(var) = &cfg.token_env {
            let token = std::env::var(var).map_err(|_| SinkError::Build {
                what: format!("webhook sink {name:?}: token_env {var:?} is not set; export it, or remove token_env"),
            })?;
            headers.push(("Authorization".into(), format!("Bearer {}", token.trim())));
        }
        let mut builder = ureq::Agent::config_builder();
        if let Some(path) = &cfg.ca_file {
            builder = builder.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(read_ca_file(&name, path)?)
                    .build(),
            );
        }
        let config = builder
            .timeout_global(Some(Duration::from_secs_f64(
                cfg.timeout_secs.clamp(0.001, MAX_TIMEOUT_SECS),
            )))
            .http_status_as_error(false)
            .user_agent(concat!("lookout/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(WebhookSink {
            name,
            url: cfg.url.clone(),
            agent: ureq::Agent::new_with_config(config),
            headers,
            retries: cfg.retries,
            backoff: Backoff::new(
                Duration::from_millis(cfg.backoff_min_ms),
                Duration::from_secs_f64(cfg.backoff_max_secs),
            ),
            body: Vec::new(),
            abort: StopToken::new(),
        })
    }

    fn attempt(&self) -> Attempt {
        let mut req = self.agent.post(&self.url).content_type("application/json");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        match req.send(&self.body[..]) {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let err = || SinkError::HttpStatus {
                    url: self.url.clone(),
                    status,
                };
                match status {
                    200..=299 => Attempt::Delivered,
                    429 | 500..=599 => Attempt::Retry(err()),
                    _ => Attempt::Fail(err()),
                }
            }
            Err(e) => Attempt::Retry(SinkError::Http {
                url: self.url.clone(),
                source: Box::new(e),
            }),
        }
    }
}

impl Sink for WebhookSink {
    fn abort_on(&mut self, abort: StopToken) {
        self.abort = abort;
    }

    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        if self.abort.is_stopped() {
            return Err(SinkError::Stopping {
                sink: self.name.clone(),
            });
        }
        self.body.clear();
        serde_json::to_writer(&mut self.body, event)?;
        self.backoff.reset();
        let mut tries = 0u32;
        loop {
            match self.attempt() {
                Attempt::Delivered => return Ok(()),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(e) => {
                    if tries >= self.retries || self.abort.is_stopped() {
                        return Err(e);
                    }
                    tries += 1;
                    let delay = self.backoff.next_delay();
                    log::debug!(
                        "Webhook attempt failed; retrying. sink={} frame={} try={tries} delay_ms={} error={}",
                        self.name,
                        event.frame_seq,
                        delay.as_millis(),
                        chain(&e)
                    );
                    if self.abort.sleep(delay) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> WebhookSinkConfig {
        toml::from_str(&format!("url = {url:?}")).expect("minimal webhook config")
    }

    #[test]
    fn validation_names_bad_keys() {
        let mut p = Problems::default();
        cfg("ftp://x/y").validate("sinks[0]", &mut p);
        let mut c = cfg("http://127.0.0.1:1/x");
        c.timeout_secs = 0.0;
        c.headers.insert("Bad Header".into(), "v".into());
        c.validate("sinks[1]", &mut p);
        let keys: Vec<&str> = p.0.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(
            keys,
            ["sinks[0].url", "sinks[1].timeout_secs", "sinks[1].headers"]
        );
    }

    #[test]
    fn missing_token_env_is_a_build_error_naming_the_variable() {
        let mut c = cfg("http://127.0.0.1:1/x");
        c.token_env = Some("LOOKOUT_TEST_SURELY_UNSET_TOKEN".into());
        let e = WebhookSink::new(&c).err().expect("must fail");
        assert!(
            e.to_string().contains("LOOKOUT_TEST_SURELY_UNSET_TOKEN"),
            "{e}"
        );
    }
}
