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
//! by Home Assistant after `off_delay`) and one sensor with the label/score of the latest event;
//! and a device per source with, per region (`frame` without regions), a `top label` sensor and a
//! binary_sensor per label seen there (see `homeassistant`). The sensors are fed from events
//! only: with rules configured they show the last firing, not every classification.

//!
//! Layout: `config` (keys, validation, topic templates), `worker` (the connection thread),
//! `queue` (the on-disk mirror of the queue), `homeassistant` (discovery messages).

mod config;
mod homeassistant;
mod queue;
mod worker;

use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use rumqttc::{Client, LastWill, MqttOptions, QoS, Transport};

pub use config::{expand_topic, MqttSinkConfig};

use super::{Sink, SinkError};
use crate::event::Event;
use homeassistant::HomeAssistant;
use queue::DiskQueue;
use worker::{Worker, WINDOW};

/// Events handed from `send` to the connection thread but not yet in its queue.
const HANDOVER: usize = 16;

/// The sink half: hands events to the connection thread.
pub struct MqttSink {
    pub(super) name: String,
    /// The `topic` template.
    pub(super) topic: String,
    /// Events: `send` -> connection thread (HANDOVER). Full: the event is refused (counted as
    /// failed). Dropping it tells the thread to deliver what it holds and stop.
    pub(super) event_tx: Option<Sender<Outbound>>,
    pub(super) thread: Option<JoinHandle<()>>,
}

/// One event ready to publish.
pub(super) struct Outbound {
    pub(super) topic: String,
    pub(super) payload: Vec<u8>,
    pub(super) rule: Option<String>,
    pub(super) label: String,
    pub(super) score: f32,
    /// The event's source and region, for Home Assistant's per-source entities.
    pub(super) source: String,
    pub(super) region: Option<String>,
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
            homeassistant: cfg
                .homeassistant
                .then(|| HomeAssistant::new(cfg.discovery_prefix.clone(), cfg.off_delay)),
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
            source: event.source.clone(),
            region: event.region.clone(),
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
