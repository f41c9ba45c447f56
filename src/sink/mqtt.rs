//! The `mqtt` sink: publishes each event's JSON to an MQTT broker, losing none while it is down.
//!
//! The sink owns one thread, `mqtt-<name>`, that drives the rumqttc sync connection and owns the
//! delivery queue: [`Sink::send`] only hands the event to that thread (never blocks). Events are
//! published in order; an event leaves the queue when the broker has acknowledged it (QoS 1) or
//! when it was written to the socket (QoS 0). While the broker is unreachable, events wait in the
//! queue (`queue` events in memory, mirrored one file per event in `queue_dir` when set, so a
//! restart loses nothing) and the connection is retried with capped back-off; on reconnect
//! everything unacknowledged is published again from the front, in order (at-least-once: an event
//! whose acknowledgement was lost with the connection is sent twice). When the queue is full, new
//! events are refused and counted as failed deliveries by the pipeline.
//!
//! The retained status topic says `online` after each connect and `offline` on a clean stop; the
//! broker publishes the retained last will `offline` when the connection dies. With
//! `homeassistant = true` the sink announces Home Assistant MQTT discovery entities: one
//! binary_sensor per rule (announced with the rule's first event, set ON on each event, turned OFF
//! by Home Assistant after `off_delay`) and one sensor with the label/score of the latest event.
//! The sensor is fed from events only: with rules configured it shows the last firing, not every
//! classification.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use rumqttc::{
    Client, Connection, Event as MqttEvent, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport,
};
use serde::Deserialize;

use super::{Sink, SinkError};
use crate::config::Problems;
use crate::event::Event;
use crate::pipeline::{chain, Backoff};

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
    /// Topic of event messages; placeholders {device}, {rule} (empty without rules), {label}.
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
    /// Announce Home Assistant MQTT discovery entities. Default false.
    #[serde(default)]
    pub homeassistant: bool,
    /// Home Assistant discovery topic prefix. Default "homeassistant".
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
    /// Seconds after an event before Home Assistant turns a rule's binary_sensor OFF. Default 5.
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

/// Events handed from `send` to the connection thread but not yet in its queue.
const HANDOVER: usize = 16;
/// Publishes outstanding at once (sent, not yet acknowledged).
const WINDOW: usize = 32;
/// How long the connection thread waits for the broker at shutdown to deliver what it holds.
const DRAIN: Duration = Duration::from_secs(3);

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

    fn password(&self) -> Result<Option<String>, SinkError> {
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
        if !matches!(name, "device" | "rule" | "label") {
            return Err(format!("unknown placeholder {{{name}}} in {t:?}; expected {{device}}, {{rule}} or {{label}}"));
        }
        rest = &rest[close + 1..];
    }
    Ok(())
}

/// Expands `{device}`, `{rule}` and `{label}`; MQTT wildcards in values become `_`.
pub fn expand_topic(template: &str, event: &Event) -> String {
    let clean = |s: &str| s.replace(['#', '+', '/'], "_");
    template
        .replace("{device}", &clean(&event.device))
        .replace("{rule}", &clean(event.rule.as_deref().unwrap_or("")))
        .replace("{label}", &clean(&event.label))
}

/// The sink half: hands events to the connection thread.
pub struct MqttSink {
    name: String,
    /// The `topic` template.
    topic: String,
    /// Events: `send` -> connection thread (HANDOVER). Full: the event is refused (counted as
    /// failed). Dropping it tells the thread to deliver what it holds and stop.
    event_tx: Option<Sender<Outbound>>,
    thread: Option<JoinHandle<()>>,
}

/// One event ready to publish.
struct Outbound {
    topic: String,
    payload: Vec<u8>,
    rule: Option<String>,
    label: String,
    score: f32,
}

impl MqttSink {
    /// Validated config in; connects in the background (a broker that is down at startup is not
    /// an error: events wait in the queue).
    pub fn start(cfg: &MqttSinkConfig, device: &str) -> Result<MqttSink, SinkError> {
        let name = cfg.name.clone().unwrap_or_else(|| "mqtt".into());
        let client_id = cfg
            .client_id
            .clone()
            .unwrap_or_else(|| format!("lookout-{device}"));
        let status_topic = format!("lookout/{device}/status");
        let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
        opts.set_keep_alive(Duration::from_secs(cfg.keep_alive_secs));
        opts.set_clean_session(true);
        opts.set_inflight(WINDOW as u16 + 8);
        opts.set_last_will(LastWill::new(
            status_topic.clone(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(user) = &cfg.username {
            opts.set_credentials(user.clone(), cfg.password()?.unwrap_or_default());
        } else if cfg.password()?.is_some() {
            return Err(SinkError::Build {
                what: format!("sink {name:?}: a password is set without a username; add username"),
            });
        }
        if let Some(ca_file) = &cfg.ca_file {
            let ca = std::fs::read(ca_file).map_err(|source| SinkError::Io {
                what: format!("cannot read MQTT ca_file {}", ca_file.display()),
                source,
            })?;
            // Either we install ring as the process default or someone already did; both are fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
            opts.set_transport(Transport::tls(ca, None, None));
        }
        let queue = DiskQueue::open(cfg.queue_dir.as_deref())?;
        let (client, connection) = Client::new(opts, WINDOW * 2 + 16);
        let (event_tx, event_rx) = bounded::<Outbound>(HANDOVER);
        let worker = Worker {
            name: name.clone(),
            client,
            qos: if cfg.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            status_topic,
            device: device.to_owned(),
            capacity: cfg.queue,
            pending: VecDeque::new(),
            disk: queue,
            sent_order: VecDeque::new(),
            connected: false,
            reconnect_max: Duration::from_secs_f64(cfg.reconnect_max_secs),
            homeassistant: cfg.homeassistant.then(|| HomeAssistant {
                prefix: cfg.discovery_prefix.clone(),
                off_delay: cfg.off_delay,
                announced: HashSet::new(),
            }),
        };
        let thread = std::thread::Builder::new()
            .name(format!("mqtt-{name}"))
            .spawn(move || worker.run(connection, event_rx))
            .map_err(|source| SinkError::Io {
                what: format!("cannot start the thread of MQTT sink {name:?}"),
                source,
            })?;
        log::info!(
            "MQTT sink started. sink={} broker={}:{} tls={}",
            cfg.name.as_deref().unwrap_or("mqtt"),
            cfg.host,
            cfg.port,
            cfg.ca_file.is_some()
        );
        Ok(MqttSink {
            name: cfg.name.clone().unwrap_or_else(|| "mqtt".into()),
            topic: cfg.topic.clone(),
            event_tx: Some(event_tx),
            thread: Some(thread),
        })
    }
}

impl Sink for MqttSink {
    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let out = Outbound {
            topic: expand_topic(&self.topic, event),
            payload: serde_json::to_vec(event)?,
            rule: event.rule.clone(),
            label: event.label.clone(),
            score: event.score,
        };
        let Some(tx) = self.event_tx.as_ref() else {
            return Err(SinkError::Build {
                what: format!("MQTT sink {:?} is stopped", self.name),
            });
        };
        match tx.try_send(out) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SinkError::QueueFull {
                sink: self.name.clone(),
            }),
            Err(TrySendError::Disconnected(_)) => Err(SinkError::Build {
                what: format!("MQTT sink {:?}: its connection thread has ended", self.name),
            }),
        }
    }
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        self.event_tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("MQTT sink thread panicked. sink={}", self.name);
            }
        }
    }
}

/// Home Assistant discovery state.
struct HomeAssistant {
    prefix: String,
    off_delay: u32,
    /// Rules whose binary_sensor was announced on the current connection.
    announced: HashSet<String>,
}

/// A queued event and where it stands.
struct Pending {
    id: u64,
    out: Outbound,
    /// Published on the current connection, not yet acknowledged.
    sent: bool,
    /// Acknowledged (QoS 1) or written (QoS 0); removed once it reaches the front.
    done: bool,
}

/// What a publish handed to rumqttc was, in request order (rumqttc reports `Outgoing::Publish`
/// in the order of the requests).
enum SentKind {
    Event(u64),
    Other,
}

/// The connection thread's state. Owned by that thread only.
struct Worker {
    name: String,
    client: Client,
    qos: QoS,
    status_topic: String,
    device: String,
    capacity: usize,
    pending: VecDeque<Pending>,
    disk: DiskQueue,
    /// Publishes handed to rumqttc whose `Outgoing::Publish` has not been seen yet.
    sent_order: VecDeque<SentKind>,
    /// A ConnAck was received and no connection error since.
    connected: bool,
    reconnect_max: Duration,
    homeassistant: Option<HomeAssistant>,
}

impl Worker {
    fn run(mut self, mut connection: Connection, event_rx: Receiver<Outbound>) {
        // QoS 1 publishes awaiting their PubAck: (packet id, event id).
        let mut inflight: Vec<(u16, u64)> = Vec::new();
        for (id, out) in self.disk.load() {
            self.pending.push_back(Pending {
                id,
                out,
                sent: false,
                done: false,
            });
        }
        if !self.pending.is_empty() {
            log::info!(
                "MQTT sink resumes events queued on disk. sink={} events={}",
                self.name,
                self.pending.len()
            );
        }
        let mut backoff = Backoff::new(Duration::from_millis(200), self.reconnect_max);
        let mut input_open = true;
        let mut drain_until: Option<Instant> = None;
        let mut overflow_warned = Instant::now() - Duration::from_secs(60);
        let mut failures = 0u64;
        loop {
            // Take new events while there is room.
            while input_open && self.pending.len() < self.capacity {
                match event_rx.try_recv() {
                    Ok(out) => self.enqueue(out),
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        input_open = false;
                        drain_until = Some(Instant::now() + DRAIN);
                    }
                }
            }
            if input_open
                && self.pending.len() >= self.capacity
                && overflow_warned.elapsed() >= Duration::from_secs(10)
            {
                overflow_warned = Instant::now();
                log::warn!("MQTT queue full; new events are dropped until the broker takes them. sink={} queued={}", self.name, self.pending.len());
            }
            if !input_open {
                let out_of_time = drain_until.is_some_and(|t| Instant::now() >= t);
                if self.pending.is_empty() || out_of_time {
                    break;
                }
            }
            if self.connected {
                self.publish_window();
            }
            match connection.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(ev)) => match ev {
                    MqttEvent::Incoming(Packet::ConnAck(ack))
                        if ack.code == rumqttc::ConnectReturnCode::Success =>
                    {
                        self.connected = true;
                        backoff.reset();
                        if failures > 0 {
                            log::info!(
                                "MQTT broker reachable again. sink={} queued={}",
                                self.name,
                                self.pending.len()
                            );
                        }
                        failures = 0;
                        self.on_connect();
                    }
                    MqttEvent::Incoming(Packet::PubAck(ack)) => {
                        if let Some(i) = inflight.iter().position(|(pkid, _)| *pkid == ack.pkid) {
                            let (_, id) = inflight.swap_remove(i);
                            self.mark_done(id);
                        }
                    }
                    MqttEvent::Outgoing(Outgoing::Publish(pkid)) => {
                        match self.sent_order.pop_front() {
                            Some(SentKind::Event(id)) if self.qos == QoS::AtMostOnce => {
                                self.mark_done(id)
                            }
                            Some(SentKind::Event(id)) => inflight.push((pkid, id)),
                            _ => {}
                        }
                    }
                    _ => {}
                },
                Ok(Err(e)) => {
                    self.connected = false;
                    inflight.clear();
                    self.on_disconnect();
                    failures += 1;
                    if failures == 1 {
                        log::warn!(
                            "MQTT broker unreachable; events are queued and retried with back-off. sink={} queued={} error={}",
                            self.name,
                            self.pending.len(),
                            chain(&e)
                        );
                    } else {
                        log::debug!(
                            "MQTT broker still unreachable. sink={} error={}",
                            self.name,
                            chain(&e)
                        );
                    }
                    if !input_open {
                        break;
                    }
                    // Back off, taking events meanwhile.
                    let until = Instant::now() + backoff.next_delay();
                    while Instant::now() < until && input_open && self.pending.len() < self.capacity
                    {
                        match event_rx.recv_timeout(until.saturating_duration_since(Instant::now()))
                        {
                            Ok(out) => self.enqueue(out),
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => {
                                input_open = false;
                            }
                        }
                    }
                    if input_open && self.pending.len() >= self.capacity {
                        std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    }
                }
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.shutdown(&mut connection);
    }

    fn enqueue(&mut self, out: Outbound) {
        let id = self.disk.push(&out);
        self.pending.push_back(Pending {
            id,
            out,
            sent: false,
            done: false,
        });
    }

    fn mark_done(&mut self, id: u64) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.id == id) {
            p.done = true;
        }
        while self.pending.front().is_some_and(|p| p.done) {
            if let Some(p) = self.pending.pop_front() {
                self.disk.remove(p.id);
            }
        }
    }

    /// Publishes the oldest unsent events, keeping at most WINDOW outstanding.
    fn publish_window(&mut self) {
        let outstanding = self.pending.iter().filter(|p| p.sent && !p.done).count();
        let mut room = WINDOW.saturating_sub(outstanding);
        let qos = self.qos;
        let mut extra: Vec<(String, String, f32)> = Vec::new();
        for p in self.pending.iter_mut().filter(|p| !p.sent) {
            if room == 0 {
                break;
            }
            if self
                .client
                .try_publish(p.out.topic.clone(), qos, false, p.out.payload.clone())
                .is_err()
            {
                break;
            }
            p.sent = true;
            room -= 1;
            self.sent_order.push_back(SentKind::Event(p.id));
            if self.homeassistant.is_some() {
                extra.push((
                    p.out.rule.clone().unwrap_or_default(),
                    p.out.label.clone(),
                    p.out.score,
                ));
            }
        }
        for (rule, label, score) in extra {
            self.announce_event(&rule, &label, score);
        }
    }

    fn publish_other(&mut self, topic: String, retain: bool, payload: Vec<u8>) {
        if self
            .client
            .try_publish(topic, QoS::AtMostOnce, retain, payload)
            .is_ok()
        {
            self.sent_order.push_back(SentKind::Other);
        }
    }

    fn on_connect(&mut self) {
        self.sent_order.clear();
        self.publish_other(self.status_topic.clone(), true, b"online".to_vec());
        if let Some(ha) = self.homeassistant.as_mut() {
            ha.announced.clear();
            let object = format!("lookout_{}_top", sanitize(&self.device));
            let config = serde_json::json!({
                "name": "top label",
                "unique_id": object,
                "state_topic": format!("lookout/{}/top", self.device),
                "value_template": "{{ value_json.label }}",
                "json_attributes_topic": format!("lookout/{}/top", self.device),
                "availability_topic": self.status_topic,
                "device": { "identifiers": [format!("lookout_{}", sanitize(&self.device))], "name": format!("lookout {}", self.device) },
            });
            let topic = format!("{}/sensor/{}/config", ha.prefix, object);
            self.publish_other(topic, true, config.to_string().into_bytes());
        }
    }

    fn on_disconnect(&mut self) {
        // rumqttc drops what it held for a clean session: everything unacknowledged goes again.
        self.sent_order.clear();
        for p in self.pending.iter_mut() {
            p.sent = false;
        }
    }

    fn announce_event(&mut self, rule: &str, label: &str, score: f32) {
        let Some(ha) = self.homeassistant.as_mut() else {
            return;
        };
        let device = self.device.clone();
        let top = serde_json::json!({ "label": label, "score": score, "rule": rule });
        let mut msgs = vec![(
            format!("lookout/{device}/top"),
            true,
            top.to_string().into_bytes(),
        )];
        if !rule.is_empty() {
            let object = format!("lookout_{}_{}", sanitize(&device), sanitize(rule));
            let state = format!("lookout/{device}/rule/{rule}");
            if ha.announced.insert(rule.to_owned()) {
                let config = serde_json::json!({
                    "name": rule,
                    "unique_id": object,
                    "state_topic": state,
                    "off_delay": ha.off_delay,
                    "availability_topic": self.status_topic,
                    "device": { "identifiers": [format!("lookout_{}", sanitize(&device))], "name": format!("lookout {device}") },
                });
                msgs.push((
                    format!("{}/binary_sensor/{}/config", ha.prefix, object),
                    true,
                    config.to_string().into_bytes(),
                ));
            }
            msgs.push((state, false, b"ON".to_vec()));
        }
        for (t, r, p) in msgs {
            self.publish_other(t, r, p);
        }
    }

    fn shutdown(&mut self, connection: &mut Connection) {
        if !self.pending.is_empty() {
            log::warn!(
                "MQTT sink stopped with undelivered events. sink={} events={} kept_on_disk={}",
                self.name,
                self.pending.len(),
                self.disk.dir.is_some()
            );
        }
        if self.connected {
            self.publish_other(self.status_topic.clone(), true, b"offline".to_vec());
            let _ = self.client.try_disconnect();
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                match connection.recv_timeout(Duration::from_millis(50)) {
                    Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
        }
    }
}

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

/// The optional on-disk mirror of the queue: `<id>.msg` files, topic on the first line, payload
/// after it. Failures to write are logged (throttled) and the event is still kept in memory.
struct DiskQueue {
    dir: Option<PathBuf>,
    next_id: u64,
    last_warn: Option<Instant>,
}

impl DiskQueue {
    fn open(dir: Option<&Path>) -> Result<DiskQueue, SinkError> {
        if let Some(d) = dir {
            std::fs::create_dir_all(d).map_err(|source| SinkError::Io {
                what: format!(
                    "cannot create MQTT queue_dir {}: check the path and its permissions",
                    d.display()
                ),
                source,
            })?;
        }
        Ok(DiskQueue {
            dir: dir.map(Path::to_path_buf),
            next_id: 1,
            last_warn: None,
        })
    }

    fn path(&self, id: u64) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{id:020}.msg")))
    }

    /// The events left by a previous run, oldest first.
    fn load(&mut self) -> Vec<(u64, Outbound)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let mut found: Vec<(u64, PathBuf)> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    let id = p
                        .file_name()?
                        .to_str()?
                        .strip_suffix(".msg")?
                        .parse::<u64>()
                        .ok()?;
                    Some((id, p))
                })
                .collect(),
            Err(e) => {
                log::warn!(
                    "Cannot read the MQTT queue directory; starting empty. dir={} error={e}",
                    dir.display()
                );
                Vec::new()
            }
        };
        found.sort();
        let mut out = Vec::new();
        for (id, path) in found {
            self.next_id = self.next_id.max(id + 1);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                        continue;
                    };
                    let topic = String::from_utf8_lossy(&bytes[..nl]).into_owned();
                    let payload = bytes[nl + 1..].to_vec();
                    let ev: Option<Event> = serde_json::from_slice(&payload).ok();
                    let (rule, label, score) = ev.map(|e| (e.rule, e.label, e.score)).unwrap_or((
                        None,
                        String::new(),
                        0.0,
                    ));
                    out.push((
                        id,
                        Outbound {
                            topic,
                            payload,
                            rule,
                            label,
                            score,
                        },
                    ));
                }
                Err(e) => log::warn!(
                    "Cannot read a queued MQTT event; skipped. file={} error={e}",
                    path.display()
                ),
            }
        }
        out
    }

    fn push(&mut self, out: &Outbound) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(path) = self.path(id) {
            let mut bytes = Vec::with_capacity(out.topic.len() + 1 + out.payload.len());
            bytes.extend_from_slice(out.topic.as_bytes());
            bytes.push(b'\n');
            bytes.extend_from_slice(&out.payload);
            let tmp = path.with_extension("tmp");
            let result = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = result {
                if self
                    .last_warn
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                {
                    self.last_warn = Some(Instant::now());
                    log::warn!("Cannot write a queued MQTT event to disk; kept in memory only. file={} error={e}", path.display());
                }
            }
        }
        id
    }

    fn remove(&mut self, id: u64) {
        if let Some(path) = self.path(id) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(rule: Option<&str>, label: &str) -> Event {
        Event {
            device: "cam/1".into(),
            source: "s".into(),
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
        assert!(check_topic("a/{devce}").is_err());
        assert!(check_topic("a/#").is_err());
        assert!(check_topic("a/{device").is_err());
        assert!(check_topic("").is_err());
    }

    #[test]
    fn disk_queue_survives_a_restart_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut q = DiskQueue::open(Some(dir.path())).expect("open");
        let out = |n: u8| Outbound {
            topic: format!("t/{n}"),
            payload: vec![b'{', b'}'],
            rule: None,
            label: String::new(),
            score: 0.0,
        };
        let a = q.push(&out(1));
        let _b = q.push(&out(2));
        let _c = q.push(&out(3));
        q.remove(a);
        let mut again = DiskQueue::open(Some(dir.path())).expect("reopen");
        let loaded = again.load();
        let topics: Vec<&str> = loaded.iter().map(|(_, o)| o.topic.as_str()).collect();
        assert_eq!(topics, ["t/2", "t/3"]);
        assert!(
            again.push(&out(4)) > loaded[1].0,
            "ids keep growing across restarts"
        );
    }
}
