//! The `mqtt` sink's `[[sinks]]` keys, their validation, and topic templates.

use serde::Deserialize;

use super::super::SinkError;
use crate::event::Event;
use crate::problems::Problems;
use std::path::PathBuf;

/// `type = "mqtt"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// Sink name. Default "mqtt".
    #[serde(default)]
    pub name: Option<String>,
    /// Broker host name or address.
    pub host: String,
    /// Broker port. Default 1883 (8883 is usual with TLS).
    #[serde(default = "default_port")]
    pub port: u16,
    /// MQTT client id. Default "lookout-<device>".
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, when the broker requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, inline. Prefer `password_env` or `password_file`; at most one of the three.
    #[serde(default)]
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file with the CA certificate(s) of the broker; set = connect with TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// QoS of event messages: 0 (at most once) or 1 (at least once). Default 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Topic of event messages; placeholders {device}, {source}, {region} (`frame` for a whole
    /// frame), {rule} (empty without rules), {label}.
    /// Default "lookout/{device}/events".
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Events held while the broker is unreachable; when full, new events are dropped and
    /// counted. Default 10000.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Directory mirroring the queue, one file per event, so a restart loses nothing. Created
    /// if missing. Default: none (memory only).
    #[serde(default)]
    pub queue_dir: Option<PathBuf>,
    /// Longest wait between reconnection attempts, seconds. Default 30.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: f64,
    /// MQTT keep-alive, seconds (also how fast the broker notices a dead link). Default 30.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Announce Home Assistant MQTT discovery entities: for the daemon, a `top label` sensor
    /// and a binary_sensor per rule; for each source a device with, per region (`frame` without
    /// regions), a `top label` sensor and a binary_sensor per label seen there (see
    /// `docs/sources.md`). Default false.
    #[serde(default)]
    pub homeassistant: bool,
    /// Home Assistant discovery topic prefix. Default "homeassistant".
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
    /// Seconds after an event before Home Assistant turns a rule's or a region's label
    /// binary_sensor OFF. Default 5.
    #[serde(default = "default_off_delay")]
    pub off_delay: u32,
}

fn default_port() -> u16 {
    1883
}
fn default_qos() -> u8 {
    1
}
fn default_topic() -> String {
    "lookout/{device}/events".into()
}
fn default_queue() -> usize {
    10_000
}
fn default_reconnect_max() -> f64 {
    30.0
}
fn default_keep_alive() -> u64 {
    30
}
fn default_discovery_prefix() -> String {
    "homeassistant".into()
}
fn default_off_delay() -> u32 {
    5
}

impl MqttSinkConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if self.host.trim().is_empty() {
            p.push(format!("{key}.host"), "must not be empty");
        }
        if self.qos > 1 {
            p.push(
                format!("{key}.qos"),
                format!("expected 0 or 1, got {}", self.qos),
            );
        }
        let secrets = [
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        ];
        if secrets.iter().filter(|s| **s).count() > 1 {
            p.push(
                format!("{key}.password"),
                "set at most one of password, password_env, password_file",
            );
        }
        if let Err(m) = check_topic(&self.topic) {
            p.push(format!("{key}.topic"), m);
        }
        p.range(&format!("{key}.queue"), self.queue, 1, 10_000_000);
        if !(self.reconnect_max_secs >= 0.1 && self.reconnect_max_secs <= 3600.0) {
            p.push(
                format!("{key}.reconnect_max_secs"),
                format!("expected 0.1..3600, got {}", self.reconnect_max_secs),
            );
        }
        p.range(
            &format!("{key}.keep_alive_secs"),
            self.keep_alive_secs,
            5,
            3600,
        );
        if self.discovery_prefix.is_empty() || self.discovery_prefix.contains(['#', '+']) {
            p.push(
                format!("{key}.discovery_prefix"),
                "must be non-empty and contain no '#' or '+'",
            );
        }
    }

    pub(super) fn password(&self) -> Result<Option<String>, SinkError> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var).map(Some).map_err(|_| SinkError::Build {
                what: format!(
                    "MQTT password_env {var:?} is not set: export it, or remove password_env"
                ),
            });
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|source| SinkError::Io {
                what: format!("cannot read MQTT password_file {}", path.display()),
                source,
            })?;
            return Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()));
        }
        Ok(None)
    }
}

/// Checks a topic template: known placeholders only, no wildcards.
fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() || t.contains(['#', '+']) {
        return Err(format!(
            "must be non-empty and contain no '#' or '+', got {t:?}"
        ));
    }
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {t:?}"))?
            + open;
        let name = &rest[open + 1..close];
        if !matches!(name, "device" | "source" | "region" | "rule" | "label") {
            return Err(format!("unknown placeholder {{{name}}} in {t:?}; expected {{device}}, {{source}}, {{region}}, {{rule}} or {{label}}"));
        }
        rest = &rest[close + 1..];
    }
    Ok(())
}

/// Expands `{device}`, `{source}`, `{region}` (`frame` for a whole frame), `{rule}` and
/// `{label}`; MQTT wildcards and `/` in values become `_`.
pub fn expand_topic(template: &str, event: &Event) -> String {
    let clean = |s: &str| s.replace(['#', '+', '/'], "_");
    template
        .replace("{device}", &clean(&event.device))
        .replace("{source}", &clean(&event.source))
        .replace(
            "{region}",
            &clean(event.region.as_deref().unwrap_or("frame")),
        )
        .replace("{rule}", &clean(event.rule.as_deref().unwrap_or("")))
        .replace("{label}", &clean(&event.label))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(rule: Option<&str>, label: &str) -> Event {
        Event {
            device: "cam/1".into(),
            source: "s".into(),
            region: None,
            rule: rule.map(str::to_owned),
            label: label.into(),
            score: 0.9,
            top: vec![],
            frame_seq: 1,
            captured_at: "x".into(),
            latency_ms: 1.0,
            file: None,
            truth: None,
            snapshot: None,
            model: None,
            drift: None,
        }
    }

    #[test]
    fn topic_templates_expand_and_validate() {
        assert_eq!(
            expand_topic("lookout/{device}/events", &event(None, "ok")),
            "lookout/cam_1/events"
        );
        assert_eq!(
            expand_topic("x/{rule}/{label}", &event(Some("defect"), "dent")),
            "x/defect/dent"
        );
        assert!(check_topic("a/{device}/{rule}/{label}").is_ok());
        let mut e = event(Some("defect"), "dent");
        assert_eq!(
            expand_topic("x/{source}/{region}/{label}", &e),
            "x/s/frame/dent",
            "a whole frame's region is `frame`"
        );
        e.source = "pipe:ffmpeg".into();
        e.region = Some("r0c1".into());
        assert_eq!(
            expand_topic("x/{source}/{region}", &e),
            "x/pipe:ffmpeg/r0c1"
        );
        assert!(check_topic("a/{devce}").is_err());
        assert!(check_topic("a/#").is_err());
        assert!(check_topic("a/{device").is_err());
        assert!(check_topic("").is_err());
    }
}
