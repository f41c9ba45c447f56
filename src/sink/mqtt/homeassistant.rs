//! Home Assistant MQTT discovery for the `mqtt` sink: a sensor with the label and score of the
//! latest event, announced on each connect, and one binary_sensor per rule, announced with the
//! rule's first event on a connection and set ON by each of its events (Home Assistant turns it
//! OFF after `off_delay`). This module only builds topics and payloads; the connection thread
//! publishes them.

use std::collections::HashSet;

/// Home Assistant discovery state.
pub(super) struct HomeAssistant {
    pub(super) prefix: String,
    pub(super) off_delay: u32,
    /// Rules whose binary_sensor was announced on the current connection.
    pub(super) announced: HashSet<String>,
}

impl HomeAssistant {
    pub(super) fn new(prefix: String, off_delay: u32) -> HomeAssistant {
        HomeAssistant {
            prefix,
            off_delay,
            announced: HashSet::new(),
        }
    }

    /// A new connection: every rule is announced again; returns the top-label sensor's
    /// discovery message (topic, retained payload).
    pub(super) fn connected(&mut self, device: &str, status_topic: &str) -> (String, Vec<u8>) {
        self.announced.clear();
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
        rule: &str,
        label: &str,
        score: f32,
    ) -> Vec<(String, bool, Vec<u8>)> {
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
