//! Home Assistant MQTT discovery for the `mqtt` sink.
//!
//! The daemon's device (`lookout <device_id>`) has a sensor with the label and score of the
//! latest event, announced on each connect, and one binary_sensor per rule, announced with the
//! rule's first event on a connection and set ON by each of its events (Home Assistant turns it
//! OFF after `off_delay`).
//!
//! Each source is a device of its own (`lookout <device_id> <source>`, identifiers
//! `lookout_<device_id>_<source>`, linked to the daemon's by `via_device`). For each of its
//! regions (`frame` for a source without regions) it has a `top label` sensor (state: the
//! label of the latest event there; attributes: score, rule), and for each label an event
//! named there a binary_sensor `<region> <label>` that each such event sets ON (attributes:
//! score, rule) and Home Assistant turns OFF after `off_delay`. These are announced with the
//! first event of their source, region and label on a connection: an entity appears once
//! something was seen there. State topics: `lookout/<device>/<source>/<region>/top` (retained)
//! and `lookout/<device>/<source>/<region>/label/<label>`.
//!
//! This module only builds topics and payloads; the connection thread publishes them.

use std::collections::HashSet;

/// Home Assistant discovery state.
pub(super) struct HomeAssistant {
    pub(super) prefix: String,
    pub(super) off_delay: u32,
    /// Rules whose binary_sensor was announced on the current connection.
    pub(super) announced: HashSet<String>,
    /// The discovery topics of the per-source entities announced on the current connection.
    pub(super) entities: HashSet<String>,
}

/// What discovery needs of one event.
pub(super) struct Seen {
    pub(super) source: String,
    /// `None`: the whole frame.
    pub(super) region: Option<String>,
    /// Empty without rules.
    pub(super) rule: String,
    pub(super) label: String,
    pub(super) score: f32,
}

impl HomeAssistant {
    pub(super) fn new(prefix: String, off_delay: u32) -> HomeAssistant {
        HomeAssistant {
            prefix,
            off_delay,
            announced: HashSet::new(),
            entities: HashSet::new(),
        }
    }

    /// A new connection: every rule is announced again; returns the top-label sensor's
    /// discovery message (topic, retained payload).
    pub(super) fn connected(&mut self, device: &str, status_topic: &str) -> (String, Vec<u8>) {
        self.announced.clear();
        self.entities.clear();
        let object = format!("lookout_{}_top", sanitize(device));
        let config = serde_json::json!({
            "name": "top label",
            "unique_id": object,
            "state_topic": format!("lookout/{device}/top"),
            "value_template": "{{ value_json.label }}",
            "json_attributes_topic": format!("lookout/{device}/top"),
            "availability_topic": status_topic,
            "device": { "identifiers": [format!("lookout_{}", sanitize(device))], "name": format!("lookout {device}") },
        });
        let topic = format!("{}/sensor/{}/config", self.prefix, object);
        (topic, config.to_string().into_bytes())
    }

    /// The messages of one event (topic, retain, payload): the top-label state, and for a rule
    /// its discovery config (first event on this connection) and its ON state.
    pub(super) fn event(
        &mut self,
        device: &str,
        status_topic: &str,
        seen: &Seen,
    ) -> Vec<(String, bool, Vec<u8>)> {
        let (rule, label, score) = (seen.rule.as_str(), seen.label.as_str(), seen.score);
        let top = serde_json::json!({ "label": label, "score": score, "rule": rule });
        let mut msgs = vec![(
            format!("lookout/{device}/top"),
            true,
            top.to_string().into_bytes(),
        )];
        if !rule.is_empty() {
            let object = format!("lookout_{}_{}", sanitize(device), sanitize(rule));
            let state = format!("lookout/{device}/rule/{rule}");
            if self.announced.insert(rule.to_owned()) {
                let config = serde_json::json!({
                    "name": rule,
                    "unique_id": object,
                    "state_topic": state,
                    "off_delay": self.off_delay,
                    "availability_topic": status_topic,
                    "device": { "identifiers": [format!("lookout_{}", sanitize(device))], "name": format!("lookout {device}") },
                });
                msgs.push((
                    format!("{}/binary_sensor/{}/config", self.prefix, object),
                    true,
                    config.to_string().into_bytes(),
                ));
            }
            msgs.push((state, false, b"ON".to_vec()));
        }
        msgs.extend(self.per_source(device, status_topic, seen));
        msgs
    }

    /// The messages of one event for its source's device: the discovery configs of its
    /// region's `top label` sensor and label binary_sensor (when new on this connection), and
    /// their states.
    fn per_source(
        &mut self,
        device: &str,
        status_topic: &str,
        seen: &Seen,
    ) -> Vec<(String, bool, Vec<u8>)> {
        let dev = sanitize(device);
        let source = sanitize(&seen.source);
        let region = sanitize(seen.region.as_deref().unwrap_or("frame"));
        let label = sanitize(&seen.label);
        let base = format!("lookout/{device}/{source}/{region}");
        let ha_device = serde_json::json!({
            "identifiers": [format!("lookout_{dev}_{source}")],
            "name": format!("lookout {device} {}", seen.source),
            "via_device": format!("lookout_{dev}"),
        });
        // Entity names: the device's name says the source; the region's says where.
        let place = seen.region.as_deref().map(|r| format!("{r} "));
        let place = place.as_deref().unwrap_or("");
        let mut msgs = Vec::new();
        let top_object = format!("lookout_{dev}_{source}_{region}_top");
        let top_config = format!("{}/sensor/{top_object}/config", self.prefix);
        if self.entities.insert(top_config.clone()) {
            let config = serde_json::json!({
                "name": format!("{place}top label"),
                "unique_id": top_object,
                "state_topic": format!("{base}/top"),
                "value_template": "{{ value_json.label }}",
                "json_attributes_topic": format!("{base}/top"),
                "availability_topic": status_topic,
                "device": ha_device,
            });
            msgs.push((top_config, true, config.to_string().into_bytes()));
        }
        let label_object = format!("lookout_{dev}_{source}_{region}_{label}");
        let label_config = format!("{}/binary_sensor/{label_object}/config", self.prefix);
        let label_state = format!("{base}/label/{label}");
        if self.entities.insert(label_config.clone()) {
            let config = serde_json::json!({
                "name": format!("{place}{}", seen.label),
                "unique_id": label_object,
                "state_topic": label_state,
                "value_template": "{{ value_json.state }}",
                "json_attributes_topic": label_state,
                "off_delay": self.off_delay,
                "availability_topic": status_topic,
                "device": ha_device,
            });
            msgs.push((label_config, true, config.to_string().into_bytes()));
        }
        let rule = (!seen.rule.is_empty()).then_some(seen.rule.as_str());
        let top = serde_json::json!({ "label": seen.label, "score": seen.score, "rule": rule });
        msgs.push((format!("{base}/top"), true, top.to_string().into_bytes()));
        let on = serde_json::json!({ "state": "ON", "score": seen.score, "rule": rule });
        msgs.push((label_state, false, on.to_string().into_bytes()));
        msgs
    }
}

/// An MQTT topic level and Home Assistant object id: ASCII letters, digits, `_` and `-` kept,
/// everything else `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(region: Option<&str>, label: &str) -> Seen {
        Seen {
            source: "belt".into(),
            region: region.map(str::to_owned),
            rule: "defect".into(),
            label: label.into(),
            score: 0.75,
        }
    }

    fn topics(msgs: &[(String, bool, Vec<u8>)]) -> Vec<&str> {
        msgs.iter().map(|(t, _, _)| t.as_str()).collect()
    }

    #[test]
    fn each_source_is_a_device_with_an_entity_per_region_and_label() {
        let mut ha = HomeAssistant::new("homeassistant".into(), 5);
        ha.connected("dev 1", "lookout/dev 1/status");
        let first = ha.event(
            "dev 1",
            "lookout/dev 1/status",
            &seen(Some("left"), "leaf blight"),
        );
        assert_eq!(
            topics(&first),
            [
                "lookout/dev 1/top",
                "homeassistant/binary_sensor/lookout_dev_1_defect/config",
                "lookout/dev 1/rule/defect",
                "homeassistant/sensor/lookout_dev_1_belt_left_top/config",
                "homeassistant/binary_sensor/lookout_dev_1_belt_left_leaf_blight/config",
                "lookout/dev 1/belt/left/top",
                "lookout/dev 1/belt/left/label/leaf_blight",
            ]
        );
        let config: serde_json::Value = serde_json::from_slice(&first[4].2).expect("JSON");
        assert_eq!(config["name"], "left leaf blight");
        assert_eq!(
            config["state_topic"],
            "lookout/dev 1/belt/left/label/leaf_blight"
        );
        assert_eq!(config["device"]["identifiers"][0], "lookout_dev_1_belt");
        assert_eq!(config["device"]["via_device"], "lookout_dev_1");
        let state: serde_json::Value = serde_json::from_slice(&first[6].2).expect("JSON");
        assert_eq!(
            (state["state"].as_str(), state["score"].as_f64()),
            (Some("ON"), Some(0.75))
        );
        // Announced once per connection; the whole frame is the region `frame`.
        let again = ha.event(
            "dev 1",
            "lookout/dev 1/status",
            &seen(Some("left"), "leaf blight"),
        );
        assert_eq!(
            topics(&again),
            [
                "lookout/dev 1/top",
                "lookout/dev 1/rule/defect",
                "lookout/dev 1/belt/left/top",
                "lookout/dev 1/belt/left/label/leaf_blight",
            ]
        );
        let whole = ha.event("dev 1", "lookout/dev 1/status", &seen(None, "ok"));
        assert!(
            topics(&whole).contains(&"homeassistant/sensor/lookout_dev_1_belt_frame_top/config"),
            "{:?}",
            topics(&whole)
        );
        ha.connected("dev 1", "lookout/dev 1/status");
        let reconnected = ha.event(
            "dev 1",
            "lookout/dev 1/status",
            &seen(Some("left"), "leaf blight"),
        );
        assert_eq!(
            reconnected.len(),
            first.len(),
            "announced again after a reconnect"
        );
    }
}
