//! The event: one JSON object shared by every sink.
//!
//! Built by the dispatcher when a rule fires (or for every classification when no rules are
//! configured). Its serialised form is documented in docs/events.md and is a contract for
//! downstream consumers: fields are only ever added.

use std::time::SystemTime;

use serde::Serialize;

/// One entry of the top-k list.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TopEntry {
    pub index: usize,
    pub label: String,
    pub score: f32,
}

/// An event, as every sink receives it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Event {
    /// `device_id` from the config.
    pub device: String,
    /// The source, as described by it (e.g. `synthetic`, `files:/data/leaves`).
    pub source: String,
    /// The region of the frame that was classified (`[[sources.regions]]` or a grid tile);
    /// absent for the whole frame.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub region: Option<String>,
    /// The rule that fired; `null` when no rules are configured (every classification).
    pub rule: Option<String>,
    /// The label that triggered it (for no rules: the top-1 label).
    pub label: String,
    /// Its probability, 0..1.
    pub score: f32,
    /// The k best labels of the frame.
    pub top: Vec<TopEntry>,
    /// Frame sequence number (gaps are dropped frames).
    pub frame_seq: u64,
    /// Capture time, RFC 3339 UTC with milliseconds.
    pub captured_at: String,
    /// Milliseconds from capture to this event.
    pub latency_ms: f64,
    /// File the frame came from (`files` source).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file: Option<String>,
    /// True label when the source knows it (synthetic scenes, labelled folders).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub truth: Option<String>,
    /// File name (in the snapshot sink's `dir`) of the JPEG of the triggering frame, when a
    /// snapshot sink is configured.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub snapshot: Option<String>,
    /// The `[models.NAME]` model that classified the frame (its `NAME`); absent for `[model]`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub model: Option<String>,
    /// A drift rule's event (`label` `drift` or `low_confidence`): the figures that made it
    /// fire (docs/drift.md); absent for every other event.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub drift: Option<crate::drift::Figures>,
}

impl Event {
    /// A filled-in example event (the one in docs/events.md), for tests and documentation.
    pub fn example() -> Event {
        Event {
            device: "barn-cam-1".into(),
            source: "synthetic".into(),
            region: None,
            rule: Some("defect".into()),
            label: "defect".into(),
            score: 0.93,
            top: vec![
                TopEntry {
                    index: 1,
                    label: "defect".into(),
                    score: 0.93,
                },
                TopEntry {
                    index: 0,
                    label: "ok".into(),
                    score: 0.07,
                },
            ],
            frame_seq: 1234,
            captured_at: "2026-11-23T07:38:12.345Z".into(),
            latency_ms: 41.2,
            file: None,
            truth: None,
            snapshot: None,
            model: None,
            drift: None,
        }
    }
}

/// RFC 3339, UTC, milliseconds: `2026-11-23T04:31:25.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_millis_and_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
    }

    #[test]
    fn optional_fields_are_omitted() {
        let e = Event {
            device: "d".into(),
            source: "s".into(),
            region: None,
            rule: None,
            label: "ok".into(),
            score: 0.5,
            top: vec![],
            frame_seq: 1,
            captured_at: "x".into(),
            latency_ms: 1.0,
            file: None,
            truth: None,
            snapshot: None,
            model: None,
            drift: None,
        };
        let json = serde_json::to_string(&e).expect("serialise");
        assert!(
            json.contains("\"rule\":null") && !json.contains("truth") && !json.contains("file"),
            "{json}"
        );
    }
}
