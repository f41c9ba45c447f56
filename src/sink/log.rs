//! The `log` sink: one log line per event, through the `log` crate.

use serde::Deserialize;

use super::{Sink, SinkError};
use crate::event::Event;
use crate::problems::Problems;

/// `type = "log"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSinkConfig {
    /// Sink name, for `rules.sinks` and counters. Default "log".
    #[serde(default)]
    pub name: Option<String>,
    /// Level of the event lines: "error" | "warn" | "info" | "debug". Default "info".
    #[serde(default)]
    pub level: Option<String>,
}

impl LogSinkConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if let Some(l) = &self.level {
            if level(l).is_none() {
                p.push(
                    format!("{key}.level"),
                    format!("expected one of error, warn, info, debug; got {l:?}"),
                );
            }
        }
    }
}

fn level(s: &str) -> Option<::log::Level> {
    match s {
        "error" => Some(::log::Level::Error),
        "warn" => Some(::log::Level::Warn),
        "info" => Some(::log::Level::Info),
        "debug" => Some(::log::Level::Debug),
        _ => None,
    }
}

pub struct LogSink {
    level: ::log::Level,
}

impl LogSink {
    pub fn new(cfg: &LogSinkConfig) -> LogSink {
        LogSink {
            level: cfg
                .level
                .as_deref()
                .and_then(level)
                .unwrap_or(::log::Level::Info),
        }
    }
}

impl Sink for LogSink {
    fn send(&mut self, e: &Event) -> Result<(), SinkError> {
        let top: Vec<String> = e
            .top
            .iter()
            .map(|t| format!("{}:{:.3}", t.label, t.score))
            .collect();
        ::log::log!(
            target: "lookout::event",
            self.level,
            "Event. rule={} label={} score={:.3} frame={} latency_ms={:.1} top={}{}{}{}",
            e.rule.as_deref().unwrap_or("-"),
            e.label,
            e.score,
            e.frame_seq,
            e.latency_ms,
            top.join(","),
            e.truth.as_deref().map(|t| format!(" truth={t}")).unwrap_or_default(),
            e.file.as_deref().map(|f| format!(" file={f}")).unwrap_or_default(),
            e.snapshot.as_deref().map(|f| format!(" snapshot={f}")).unwrap_or_default(),
        );
        Ok(())
    }
}
