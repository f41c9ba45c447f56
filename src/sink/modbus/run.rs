//! The `modbus` sink's actuator loop, on the sink's own thread: turns events into wanted coil
//! values and register values, ends pulses on time, increments the heartbeat, returns the coils
//! to their safe values after `safe_after_secs` without events and at shutdown, and writes what
//! changed over the [`Link`], reconnecting with capped back-off. Coil timing is the gpio sink's
//! [`Actuator`] (pulse, or follow: on while events keep coming, off `hold_ms` after the last one)
//! over a [`Wanted`] value instead of a GPIO line.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::config::{CoilConfig, ModbusSinkConfig};
use super::link::{Endpoint, Link, LinkError};
use crate::metrics::LinkStats;
use crate::retry::{chain, Backoff};
use crate::sink::gpio::{Actuator, Line, Mode};
use crate::sink::SinkError;

/// What the loop needs of one event.
#[derive(Debug, Clone)]
pub struct Hit {
    pub label: String,
    pub rule: Option<String>,
    /// The label's index in the model's labels; 65535 when unknown.
    pub label_index: u16,
    pub score: f32,
    pub frame_seq: u64,
}

/// A coil's wanted value, as the [`Actuator`] sets it; `dirty` until it has been written.
#[derive(Debug)]
pub struct Wanted {
    pub on: bool,
    pub dirty: bool,
}

impl Line for Wanted {
    fn set_level(&mut self, high: bool) -> Result<(), SinkError> {
        self.on = high;
        self.dirty = true;
        Ok(())
    }
}

struct Coil {
    address: u16,
    labels: Vec<String>,
    rules: Vec<String>,
    actuator: Actuator<Wanted>,
}

impl Coil {
    fn new(c: &CoilConfig) -> Result<Coil, SinkError> {
        let mode = Mode::parse(&c.mode).ok_or_else(|| SinkError::Build {
            what: format!("modbus coil {}: bad mode {:?}", c.address, c.mode),
        })?;
        let wanted = Wanted {
            on: c.safe,
            dirty: true,
        };
        Ok(Coil {
            address: c.address as u16,
            labels: c.labels.clone(),
            rules: c.rules.clone(),
            // The actuator's "active low" is the coil's safe value: active = the other one.
            actuator: Actuator::new(wanted, mode, Duration::from_millis(c.hold_ms), c.safe)?,
        })
    }

    fn wants(&self, hit: &Hit) -> bool {
        (self.labels.is_empty() || self.labels.contains(&hit.label))
            && (self.rules.is_empty() || hit.rule.as_ref().is_some_and(|r| self.rules.contains(r)))
    }
}

/// The device's wanted state and the link to it. Owned by the sink's thread.
pub struct Device {
    name: String,
    endpoint: Endpoint,
    unit_id: u8,
    timeout: Duration,
    coils: Vec<Coil>,
    label_register: Option<u16>,
    score_register: Option<u16>,
    score_scale: f32,
    counter_register: Option<u16>,
    frame_seq_register: Option<u16>,
    heartbeat_register: Option<u16>,
    heartbeat_every: Duration,
    safe_after: Option<Duration>,
    /// Register values not yet written, by address (a newer value replaces an unwritten one).
    pending: BTreeMap<u16, u16>,
    link: Option<Link>,
    /// When to try connecting again while `link` is `None`.
    retry_at: Instant,
    backoff: Backoff,
    events: u16,
    heartbeat: u16,
    next_heartbeat: Instant,
    last_event: Instant,
    /// The coils were returned to safe after `safe_after` without events (until the next event).
    quiet: bool,
    last_warn: Option<Instant>,
    stats: Arc<LinkStats>,
}

impl Device {
    pub fn new(cfg: &ModbusSinkConfig, stats: Arc<LinkStats>) -> Result<Device, SinkError> {
        let name = cfg.name.clone().unwrap_or_else(|| "modbus".into());
        let endpoint = Endpoint::from_config(cfg).ok_or_else(|| SinkError::Build {
            what: format!("modbus sink {name:?}: set host (tcp) or device (rtu)"),
        })?;
        let now = Instant::now();
        let reg = |r: Option<u32>| r.map(|a| a as u16);
        Ok(Device {
            endpoint,
            unit_id: cfg.unit_id,
            timeout: Duration::from_millis(cfg.timeout_ms),
            coils: cfg.coils.iter().map(Coil::new).collect::<Result<_, _>>()?,
            label_register: reg(cfg.label_register),
            score_register: reg(cfg.score_register),
            score_scale: cfg.score_scale,
            counter_register: reg(cfg.counter_register),
            frame_seq_register: reg(cfg.frame_seq_register),
            heartbeat_register: reg(cfg.heartbeat_register),
            heartbeat_every: Duration::from_secs_f64(cfg.heartbeat_secs),
            safe_after: (cfg.safe_after_secs > 0.0)
                .then(|| Duration::from_secs_f64(cfg.safe_after_secs)),
            pending: BTreeMap::new(),
            link: None,
            retry_at: now,
            backoff: Backoff::new(
                Duration::from_secs_f64(cfg.reconnect_min_secs),
                Duration::from_secs_f64(cfg.reconnect_max_secs),
            ),
            events: 0,
            heartbeat: 0,
            next_heartbeat: now,
            last_event: now,
            quiet: false,
            last_warn: None,
            stats,
            name,
        })
    }

    /// The loop: until `hit_rx` disconnects (the sink was dropped), then the safe state.
    pub fn run(mut self, hit_rx: Receiver<Hit>) {
        log::info!(
            "Modbus sink started. sink={} device={} unit_id={} coils={}",
            self.name,
            self.endpoint.describe(),
            self.unit_id,
            self.coils.len()
        );
        loop {
            self.flush(Instant::now());
            let wait = self.deadline().map_or(Duration::from_secs(3600), |t| {
                t.saturating_duration_since(Instant::now())
            });
            match hit_rx.recv_timeout(wait) {
                Ok(hit) => self.on_hit(&hit, Instant::now()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.tick(Instant::now());
        }
        self.shutdown();
    }

    /// The next time the loop has something to do without an event.
    fn deadline(&self) -> Option<Instant> {
        let coils = self.coils.iter().filter_map(|c| c.actuator.deadline());
        let heartbeat = self.heartbeat_register.map(|_| self.next_heartbeat);
        let quiet = self
            .safe_after
            .filter(|_| !self.quiet)
            .map(|d| self.last_event + d);
        let retry = self.link.is_none().then_some(self.retry_at);
        coils.chain(heartbeat).chain(quiet).chain(retry).min()
    }

    fn on_hit(&mut self, hit: &Hit, now: Instant) {
        for c in &mut self.coils {
            if c.wants(hit) {
                // Infallible: a `Wanted` only records the value.
                let _ = c.actuator.on_event(now);
            }
        }
        self.events = self.events.wrapping_add(1);
        let score = (hit.score * self.score_scale).round().clamp(0.0, 65535.0) as u16;
        let seq = hit.frame_seq as u32;
        for (reg, value) in [
            (self.label_register, hit.label_index),
            (self.score_register, score),
            (self.counter_register, self.events),
            (self.frame_seq_register, (seq >> 16) as u16),
            (self.frame_seq_register.map(|r| r + 1), seq as u16),
        ] {
            if let Some(r) = reg {
                self.pending.insert(r, value);
            }
        }
        self.last_event = now;
        self.quiet = false;
    }

    fn tick(&mut self, now: Instant) {
        for c in &mut self.coils {
            let _ = c.actuator.tick(now);
        }
        if let Some(r) = self.heartbeat_register {
            if now >= self.next_heartbeat {
                self.heartbeat = self.heartbeat.wrapping_add(1);
                self.pending.insert(r, self.heartbeat);
                self.next_heartbeat = (self.next_heartbeat + self.heartbeat_every).max(now);
            }
        }
        if let Some(after) = self.safe_after {
            if !self.quiet && now >= self.last_event + after {
                self.quiet = true;
                self.safe_coils();
                log::debug!(
                    "No event for safe_after_secs: coils to their safe values. sink={}",
                    self.name
                );
            }
        }
    }

    /// Every coil to its safe value, written again even where it already was.
    fn safe_coils(&mut self) {
        for c in &mut self.coils {
            let _ = c.actuator.stop();
        }
    }

    /// Connects when due, then writes what is dirty; a failure drops the link and schedules a
    /// reconnect.
    fn flush(&mut self, now: Instant) {
        if self.link.is_none() {
            if now < self.retry_at {
                return;
            }
            if let Err(e) = self.connect() {
                self.failed(&e, now);
                return;
            }
        }
        if let Err(e) = self.write_dirty() {
            self.failed(&e, now);
        }
    }

    fn connect(&mut self) -> Result<(), LinkError> {
        let link = Link::connect(&self.endpoint, self.unit_id, self.timeout)?;
        self.link = Some(link);
        self.backoff.reset();
        self.stats.connects.fetch_add(1, Relaxed);
        self.stats.connected.store(1, Relaxed);
        log::info!(
            "Modbus device connected. sink={} device={}",
            self.name,
            self.endpoint.describe()
        );
        // The device may have restarted: write every coil's wanted value again (this restores
        // a `follow` coil that is on, and the safe values of the others).
        for c in &mut self.coils {
            c.actuator.line_mut().dirty = true;
        }
        Ok(())
    }

    fn write_dirty(&mut self) -> Result<(), LinkError> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        for c in &mut self.coils {
            let w = c.actuator.line_mut();
            if w.dirty {
                let t = Instant::now();
                link.write_coil(c.address, w.on)?;
                w.dirty = false;
                self.stats.writes.fetch_add(1, Relaxed);
                self.stats.write_latency.record(t.elapsed());
            }
        }
        // Consecutive registers go in one request.
        while let Some((&first, _)) = self.pending.first_key_value() {
            let mut words = Vec::new();
            let mut next = first as u32;
            while let Some(&v) = self.pending.get(&(next as u16)).filter(|_| next <= 0xFFFF) {
                words.push(v);
                next += 1;
            }
            let t = Instant::now();
            link.write_registers(first, &words)?;
            for a in first as u32..next {
                self.pending.remove(&(a as u16));
            }
            self.stats.writes.fetch_add(1, Relaxed);
            self.stats.write_latency.record(t.elapsed());
        }
        Ok(())
    }

    fn failed(&mut self, e: &LinkError, now: Instant) {
        self.stats.write_failures.fetch_add(1, Relaxed);
        if self.link.take().is_some() {
            self.stats.connected.store(0, Relaxed);
        }
        let delay = self.backoff.next_delay();
        self.retry_at = now + delay;
        if self
            .last_warn
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_warn = Some(Instant::now());
            log::warn!(
                "Modbus write failed; reconnecting. sink={} retry_in_ms={} error={}",
                self.name,
                delay.as_millis(),
                chain(e)
            );
        }
    }

    /// At shutdown: every coil to its safe value, with one connect attempt if the link is down.
    fn shutdown(&mut self) {
        self.safe_coils();
        let now = Instant::now();
        self.retry_at = now;
        self.flush(now);
        let safe = self.coils.iter().all(|c| !c.actuator.line().dirty);
        if safe {
            log::info!("Modbus coils in their safe state. sink={}", self.name);
        } else {
            log::error!(
                "Modbus coils could not be set to their safe state at shutdown. sink={} device={}",
                self.name,
                self.endpoint.describe()
            );
        }
        self.stats.connected.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(extra: &str) -> Device {
        let cfg: ModbusSinkConfig =
            toml::from_str(&format!("host = \"127.0.0.1\"\nport = 1\n{extra}")).expect("config");
        Device::new(&cfg, Arc::new(LinkStats::default())).expect("device")
    }

    fn hit(label: &str, frame_seq: u64) -> Hit {
        Hit {
            label: label.into(),
            rule: Some("defect".into()),
            label_index: 2,
            score: 0.9346,
            frame_seq,
        }
    }

    fn wanted(d: &Device) -> Vec<bool> {
        d.coils.iter().map(|c| c.actuator.line().on).collect()
    }

    #[test]
    fn an_event_fills_the_registers_frame_sequence_high_word_first() {
        let mut d = device(
            "label_register = 10\nscore_register = 11\ncounter_register = 12\nframe_seq_register = 13\n",
        );
        d.on_hit(&hit("dent", 0x0001_0002), Instant::now());
        d.on_hit(&hit("dent", 0x0003_0004), Instant::now());
        let regs: Vec<(u16, u16)> = d.pending.iter().map(|(a, v)| (*a, *v)).collect();
        assert_eq!(regs, [(10, 2), (11, 935), (12, 2), (13, 3), (14, 4)]);
    }

    #[test]
    fn coils_start_safe_follow_their_filters_and_go_safe_when_quiet() {
        let mut d = device(
            "safe_after_secs = 5\ncoils = [{ address = 0, hold_ms = 300, labels = [\"dent\"] }, { address = 1, mode = \"follow\", hold_ms = 1000, rules = [\"defect\"] }, { address = 2, safe = true, labels = [\"x\"] }]\n",
        );
        assert_eq!(wanted(&d), [false, false, true], "safe values at start");
        let t0 = Instant::now();
        d.on_hit(&hit("scratch", 1), t0);
        assert_eq!(wanted(&d), [false, true, true], "only the rule's coil");
        d.on_hit(&hit("dent", 2), t0);
        assert_eq!(wanted(&d), [true, true, true]);
        d.tick(t0 + Duration::from_millis(300));
        assert_eq!(wanted(&d), [false, true, true], "the pulse ended");
        d.tick(t0 + Duration::from_millis(1000));
        assert_eq!(
            wanted(&d),
            [false, false, true],
            "follow: off hold_ms after the last event"
        );
        for c in &mut d.coils {
            c.actuator.line_mut().dirty = false;
        }
        d.tick(t0 + Duration::from_secs(5));
        assert!(
            d.coils.iter().all(|c| c.actuator.line().dirty),
            "quiet for safe_after_secs: every coil is written to its safe value again"
        );
        assert_eq!(wanted(&d), [false, false, true]);
    }

    #[test]
    fn the_heartbeat_counts_up_once_per_period() {
        let mut d = device("heartbeat_register = 20\nheartbeat_secs = 1\n");
        let t0 = d.next_heartbeat;
        d.tick(t0);
        assert_eq!(d.pending.get(&20), Some(&1));
        d.tick(t0 + Duration::from_millis(500));
        assert_eq!(d.pending.get(&20), Some(&1), "not before the period");
        d.tick(t0 + Duration::from_secs(1));
        assert_eq!(d.pending.get(&20), Some(&2));
    }
}
