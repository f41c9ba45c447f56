//! The `modbus` sink's configuration: the keys (their doc comments are the user reference) and
//! their validation without I/O. Opening the link and the actuator loop are in the sibling
//! modules.

use serde::Deserialize;

use crate::problems::Problems;
use crate::sink::gpio::Mode;

/// The highest Modbus data address (coils and holding registers are numbered 0..=65535).
pub const MAX_ADDRESS: u32 = 65_535;

/// `type = "modbus"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSinkConfig {
    /// Sink name. Default "modbus".
    #[serde(default)]
    pub name: Option<String>,
    /// "tcp" (a PLC or gateway on the network) or "rtu" (a serial RS-485 line). Default "tcp".
    #[serde(default = "default_transport")]
    pub transport: String,
    /// TCP: host name or address of the Modbus server (the PLC).
    #[serde(default)]
    pub host: Option<String>,
    /// TCP: port. Default 502.
    #[serde(default = "default_port")]
    pub port: u16,
    /// RTU: the serial device, e.g. "/dev/ttyUSB0" (a USB RS-485 adapter).
    #[serde(default)]
    pub device: Option<String>,
    /// RTU: bits per second. Default 9600.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// RTU: "none", "even" or "odd". Default "none".
    #[serde(default = "default_parity")]
    pub parity: String,
    /// RTU: 1 or 2. Default 1.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// The unit (slave) id: 1..=247 on RTU; on TCP what the PLC or gateway expects (often 1 or
    /// 255). Default 1.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// How long one connect or request may take before it counts as failed, milliseconds.
    /// Default 1000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Coils an event drives, each with its own address, mode and filters.
    #[serde(default)]
    pub coils: Vec<CoilConfig>,
    /// Holding register that gets the index of the event's label in the model's labels
    /// (65535 when unknown).
    #[serde(default)]
    pub label_register: Option<u32>,
    /// Holding register that gets the event's score times `score_scale`, rounded (0..=65535).
    #[serde(default)]
    pub score_register: Option<u32>,
    /// Multiplier for `score_register`. Default 1000 (0.934 -> 934).
    #[serde(default = "default_score_scale")]
    pub score_scale: f32,
    /// Holding register that counts events (wraps at 65535 -> 0).
    #[serde(default)]
    pub counter_register: Option<u32>,
    /// First of two holding registers that get the frame sequence number (its low 32 bits),
    /// high word first: register N = bits 31..16, N+1 = bits 15..0.
    #[serde(default)]
    pub frame_seq_register: Option<u32>,
    /// Holding register incremented every `heartbeat_secs` (wraps at 65535 -> 0), so the PLC
    /// can tell that lookout is alive.
    #[serde(default)]
    pub heartbeat_register: Option<u32>,
    /// Seconds between heartbeats. Default 1.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: f64,
    /// Without an event for this long, every coil is written to its safe value again (0 = never).
    /// Default 10.
    #[serde(default = "default_safe_after_secs")]
    pub safe_after_secs: f64,
    /// Reconnection back-off, seconds: first wait and cap. Defaults 0.5 and 10.
    #[serde(default = "default_reconnect_min_secs")]
    pub reconnect_min_secs: f64,
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: f64,
}

/// One coil of `coils = [...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoilConfig {
    /// Coil address, 0..=65535 (the protocol's address: Modicon coil 00001 is address 0).
    pub address: u32,
    /// "pulse" (on for hold_ms per event; events during the pulse do not lengthen it) or
    /// "follow" (on while the rule keeps firing, off hold_ms after its last event), as the gpio
    /// sink. Default "pulse".
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Pulse length, or for "follow" how long without an event before the coil goes off,
    /// milliseconds. Default 500.
    #[serde(default = "default_hold_ms")]
    pub hold_ms: u64,
    /// The coil's value in the safe state (at start, at shutdown, after `safe_after_secs`
    /// without events, and between pulses); the active value is its opposite. Default false.
    #[serde(default)]
    pub safe: bool,
    /// Only events with one of these labels drive this coil. Default: every label.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Only events of one of these rules drive this coil. Default: every rule.
    #[serde(default)]
    pub rules: Vec<String>,
}

fn default_transport() -> String {
    "tcp".into()
}
fn default_port() -> u16 {
    502
}
fn default_baud() -> u32 {
    9600
}
fn default_parity() -> String {
    "none".into()
}
fn default_stop_bits() -> u8 {
    1
}
fn default_unit_id() -> u8 {
    1
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_score_scale() -> f32 {
    1000.0
}
fn default_heartbeat_secs() -> f64 {
    1.0
}
fn default_safe_after_secs() -> f64 {
    10.0
}
fn default_reconnect_min_secs() -> f64 {
    0.5
}
fn default_reconnect_max_secs() -> f64 {
    10.0
}
fn default_mode() -> String {
    "pulse".into()
}
fn default_hold_ms() -> u64 {
    500
}

impl ModbusSinkConfig {
    /// The holding registers this sink writes: (key, first address, count).
    pub fn register_spans(&self) -> Vec<(&'static str, u32, u32)> {
        [
            ("label_register", self.label_register, 1),
            ("score_register", self.score_register, 1),
            ("counter_register", self.counter_register, 1),
            ("frame_seq_register", self.frame_seq_register, 2),
            ("heartbeat_register", self.heartbeat_register, 1),
        ]
        .into_iter()
        .filter_map(|(k, a, n)| a.map(|a| (k, a, n)))
        .collect()
    }

    pub fn validate(&self, key: &str, p: &mut Problems) {
        match self.transport.as_str() {
            "tcp" => {
                if self.host.as_deref().is_none_or(str::is_empty) {
                    p.push(
                        format!("{key}.host"),
                        "set host (the PLC's address) for transport = \"tcp\"",
                    );
                }
                if self.port == 0 {
                    p.push(format!("{key}.port"), "expected 1..=65535, got 0");
                }
            }
            "rtu" => {
                if self.device.as_deref().is_none_or(str::is_empty) {
                    p.push(
                        format!("{key}.device"),
                        "set device (e.g. \"/dev/ttyUSB0\") for transport = \"rtu\"",
                    );
                }
                p.range(&format!("{key}.baud"), self.baud, 300, 4_000_000);
                if !["none", "even", "odd"].contains(&self.parity.as_str()) {
                    p.push(
                        format!("{key}.parity"),
                        format!(
                            "expected \"none\", \"even\" or \"odd\", got {:?}",
                            self.parity
                        ),
                    );
                }
                if !(1..=2).contains(&self.stop_bits) {
                    p.push(
                        format!("{key}.stop_bits"),
                        format!("expected 1 or 2, got {}", self.stop_bits),
                    );
                }
                if !(1..=247).contains(&self.unit_id) {
                    p.push(
                        format!("{key}.unit_id"),
                        format!("expected 1..=247 on RTU, got {}", self.unit_id),
                    );
                }
            }
            other => p.push(
                format!("{key}.transport"),
                format!("expected \"tcp\" or \"rtu\", got {other:?}"),
            ),
        }
        p.range(&format!("{key}.timeout_ms"), self.timeout_ms, 10, 60_000);
        let spans = self.register_spans();
        if self.coils.is_empty() && spans.is_empty() {
            p.push(
                format!("{key}.coils"),
                "a modbus sink needs coils, a register (label_register, score_register, counter_register, frame_seq_register) or heartbeat_register",
            );
        }
        for (i, c) in self.coils.iter().enumerate() {
            let ck = format!("{key}.coils[{i}]");
            if c.address > MAX_ADDRESS {
                p.push(
                    format!("{ck}.address"),
                    format!("expected a coil address 0..=65535, got {}", c.address),
                );
            }
            if self.coils[..i].iter().any(|o| o.address == c.address) {
                p.push(
                    format!("{ck}.address"),
                    format!("coil {} is listed twice", c.address),
                );
            }
            if Mode::parse(&c.mode).is_none() {
                p.push(
                    format!("{ck}.mode"),
                    format!("expected \"pulse\" or \"follow\", got {:?}", c.mode),
                );
            }
            p.range(&format!("{ck}.hold_ms"), c.hold_ms, 1, 3_600_000);
        }
        for (i, &(k, first, count)) in spans.iter().enumerate() {
            if first + count - 1 > MAX_ADDRESS {
                p.push(
                    format!("{key}.{k}"),
                    format!(
                        "expected a holding register address 0..={} (it spans {count} register(s)), got {first}",
                        MAX_ADDRESS + 1 - count
                    ),
                );
            }
            for &(other, o_first, o_count) in &spans[..i] {
                if first < o_first + o_count && o_first < first + count {
                    p.push(
                        format!("{key}.{k}"),
                        format!("register {first} overlaps {other} ({o_first})"),
                    );
                }
            }
        }
        if !(self.score_scale.is_finite() && self.score_scale > 0.0 && self.score_scale <= 65535.0)
        {
            p.push(
                format!("{key}.score_scale"),
                format!(
                    "expected 0 < score_scale <= 65535, got {}",
                    self.score_scale
                ),
            );
        }
        for (k, v, lo) in [
            ("heartbeat_secs", self.heartbeat_secs, 0.05),
            ("reconnect_min_secs", self.reconnect_min_secs, 0.01),
            ("reconnect_max_secs", self.reconnect_max_secs, 0.01),
        ] {
            if !(v.is_finite() && (lo..=3600.0).contains(&v)) {
                p.push(
                    format!("{key}.{k}"),
                    format!("expected {lo}..=3600 seconds, got {v}"),
                );
            }
        }
        if self.reconnect_max_secs < self.reconnect_min_secs {
            p.push(
                format!("{key}.reconnect_max_secs"),
                "must be at least reconnect_min_secs",
            );
        }
        if !(self.safe_after_secs.is_finite() && (0.0..=86_400.0).contains(&self.safe_after_secs)) {
            p.push(
                format!("{key}.safe_after_secs"),
                format!(
                    "expected 0..=86400 seconds (0 = never), got {}",
                    self.safe_after_secs
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml_text: &str) -> Vec<(String, String)> {
        let cfg: ModbusSinkConfig = toml::from_str(toml_text).expect("config parses");
        let mut p = Problems::default();
        cfg.validate("sinks[2]", &mut p);
        p.0.into_iter().map(|x| (x.key, x.message)).collect()
    }

    fn keys(toml_text: &str) -> Vec<String> {
        problems(toml_text).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn a_full_tcp_config_is_valid() {
        let p = problems(
            "host = \"plc\"\ncoils = [{ address = 0, hold_ms = 300 }, { address = 1, mode = \"follow\", labels = [\"dent\"] }]\nlabel_register = 10\nscore_register = 11\ncounter_register = 12\nframe_seq_register = 13\nheartbeat_register = 15\n",
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn addresses_outside_the_protocol_are_rejected_with_their_key_path() {
        assert_eq!(
            keys("host = \"plc\"\ncoils = [{ address = 1 }, { address = 65536 }]\n"),
            ["sinks[2].coils[1].address"]
        );
        assert_eq!(
            keys("host = \"plc\"\nframe_seq_register = 65535\n"),
            ["sinks[2].frame_seq_register"],
            "the 32-bit frame sequence needs two registers"
        );
        assert!(keys("host = \"plc\"\nframe_seq_register = 65534\n").is_empty());
        assert_eq!(
            keys("host = \"plc\"\ncounter_register = 70000\n"),
            ["sinks[2].counter_register"]
        );
    }

    #[test]
    fn overlapping_registers_and_duplicate_coils_are_rejected() {
        assert_eq!(
            keys("host = \"plc\"\nframe_seq_register = 10\nheartbeat_register = 11\n"),
            ["sinks[2].heartbeat_register"]
        );
        assert_eq!(
            keys("host = \"plc\"\ncoils = [{ address = 3 }, { address = 3 }]\n"),
            ["sinks[2].coils[1].address"]
        );
    }

    #[test]
    fn transport_settings_are_checked() {
        assert_eq!(keys("coils = [{ address = 0 }]\n"), ["sinks[2].host"]);
        assert_eq!(
            keys("transport = \"rtu\"\nparity = \"mark\"\nstop_bits = 3\nunit_id = 0\ncoils = [{ address = 0 }]\n"),
            [
                "sinks[2].device",
                "sinks[2].parity",
                "sinks[2].stop_bits",
                "sinks[2].unit_id"
            ]
        );
        assert_eq!(
            keys("transport = \"udp\"\ncoils = [{ address = 0 }]\n"),
            ["sinks[2].transport"]
        );
    }

    #[test]
    fn a_sink_that_writes_nothing_and_bad_coil_modes_are_rejected() {
        assert_eq!(keys("host = \"plc\"\n"), ["sinks[2].coils"]);
        assert_eq!(
            keys("host = \"plc\"\ncoils = [{ address = 0, mode = \"blink\", hold_ms = 0 }]\n"),
            ["sinks[2].coils[0].mode", "sinks[2].coils[0].hold_ms"]
        );
    }
}
