//! Sinks: where events go.
//!
//! Each configured sink runs on its own thread behind its own bounded queue (see
//! [`crate::pipeline`]), so a slow sink never holds up the others or the workers: when its queue
//! is full the dispatcher drops the event for that sink and counts it. A sink is built from its
//! config struct (`[[sinks]]`, tagged by `type`) after validation; a closed set of sinks is the
//! [`SinkConfig`] enum. Every sink receives the same [`Event`] JSON (docs/events.md).

pub mod command;
pub mod gpio;
pub mod jsonl;
pub mod log;
pub mod memory;
pub mod modbus;
pub mod mqtt;
mod process_group;
pub mod snapshot;
pub mod webhook;

use serde::Deserialize;

use crate::event::Event;
use crate::frame::Frame;
use crate::problems::Problems;
use crate::stop::StopToken;

/// An event consumer.
///
/// Lifecycle: built on the main thread at startup (an `Err` from building is fatal), then moved
/// to its own thread, where `send` is called once per event in dispatch order and `flush`
/// whenever its queue is momentarily empty and once at shutdown, before it is dropped.
pub trait Sink: Send {
    /// Delivers one event. `Err` means this event was not delivered (after any retries the sink
    /// does itself): the pipeline logs and counts it and goes on with the next event.
    fn send(&mut self, event: &Event) -> Result<(), SinkError>;

    /// Pushes out anything buffered. `Err` is logged and counted like a failed send.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Hands the sink the token that is set when the pipeline's stop (or reload) deadline is
    /// near ([`crate::pipeline::ABORT_MARGIN`] before it). Called once, on the main thread,
    /// before the sink moves to its thread. A sink whose `send` can block (a program, a network
    /// call) must give it up soon after the token is set, so that its thread ends before the
    /// deadline; what it then cannot deliver is an `Err` (counted), or stays in its disk queue.
    fn abort_on(&mut self, abort: StopToken) {
        let _ = abort;
    }

    /// Whether this sink needs the frame that triggered each event (the snapshot sink). The
    /// pipeline then keeps frames until their events are dispatched and calls
    /// [`Sink::send_with_frame`] instead of [`Sink::send`].
    fn wants_frames(&self) -> bool {
        false
    }

    /// The counters of the sink's own device link (modbus), which the pipeline attaches to its
    /// metrics when it starts the sink; `None` for sinks without one.
    fn link_stats(&self) -> Option<std::sync::Arc<crate::metrics::LinkStats>> {
        None
    }

    /// Delivers one event with its frame; only called when [`Sink::wants_frames`] is true.
    fn send_with_frame(&mut self, event: &Event, frame: &Frame) -> Result<(), SinkError> {
        let _ = frame;
        self.send(event)
    }
}

/// A failed delivery or a sink that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode event as JSON")]
    Json(#[from] serde_json::Error),
    /// A sink that cannot be built as configured; `what` says what to do.
    #[error("{what}")]
    Build { what: String },
    /// The sink's own queue is full (its destination is down or too slow): the event is dropped.
    #[error("sink {sink:?} queue is full; event dropped (the destination is down or too slow)")]
    QueueFull { sink: String },
    #[error("HTTP request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("HTTP endpoint {url} answered status {status}")]
    HttpStatus { url: String, status: u16 },
    /// The pipeline's stop deadline is near: the sink did not try (again).
    #[error("sink {sink:?} gave up: lookout is stopping and its deadline is near")]
    Stopping { sink: String },
    #[error("command sink {sink:?}: the program {what}")]
    Command { sink: String, what: String },
}

/// `[[sinks]]`: one entry per sink, `type` selects it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkConfig {
    /// Writes each event as one log line.
    Log(log::LogSinkConfig),
    /// Appends each event as one JSON line to a file, with size-based rotation.
    Jsonl(jsonl::JsonlSinkConfig),
    /// Publishes each event to an MQTT broker; queues while it is down.
    Mqtt(mqtt::MqttSinkConfig),
    /// POSTs each event to an HTTP(S) endpoint, with retries.
    Webhook(webhook::WebhookSinkConfig),
    /// Runs a program per event (event in its environment and on stdin).
    Command(command::CommandSinkConfig),
    /// Drives a GPIO output line (relay, lamp, gate): pulse per event, or follow the rule.
    Gpio(gpio::GpioSinkConfig),
    /// Writes coils and holding registers of a PLC or relay board over Modbus TCP or RTU.
    Modbus(modbus::ModbusSinkConfig),
    /// Writes the triggering frame as a JPEG into a directory, with retention limits.
    Snapshot(snapshot::SnapshotSinkConfig),
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig::Log(log::LogSinkConfig::default())
    }
}

impl SinkConfig {
    /// The sink's name: `name`, or its type.
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Log(c) => c.name.as_deref().unwrap_or("log"),
            SinkConfig::Jsonl(c) => c.name.as_deref().unwrap_or("jsonl"),
            SinkConfig::Mqtt(c) => c.name.as_deref().unwrap_or("mqtt"),
            SinkConfig::Webhook(c) => c.name.as_deref().unwrap_or("webhook"),
            SinkConfig::Command(c) => c.name.as_deref().unwrap_or("command"),
            SinkConfig::Gpio(c) => c.name.as_deref().unwrap_or("gpio"),
            SinkConfig::Modbus(c) => c.name.as_deref().unwrap_or("modbus"),
            SinkConfig::Snapshot(c) => c.name.as_deref().unwrap_or("snapshot"),
        }
    }

    pub fn validate(&self, key: &str, p: &mut Problems) {
        let name = self.name();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            p.push(
                format!("{key}.name"),
                format!("expected letters, digits, '_' or '-', got {name:?}"),
            );
        }
        match self {
            SinkConfig::Log(c) => c.validate(key, p),
            SinkConfig::Jsonl(c) => c.validate(key, p),
            SinkConfig::Mqtt(c) => c.validate(key, p),
            SinkConfig::Webhook(c) => c.validate(key, p),
            SinkConfig::Command(c) => c.validate(key, p),
            SinkConfig::Gpio(c) => c.validate(key, p),
            SinkConfig::Modbus(c) => c.validate(key, p),
            SinkConfig::Snapshot(c) => c.validate(key, p),
        }
    }

    /// Builds the sink (opens files, starts connections ...) for device `device`. Errors are
    /// fatal at startup.
    pub fn build(&self, device: &str) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkConfig::Log(c) => Box::new(log::LogSink::new(c)),
            SinkConfig::Jsonl(c) => Box::new(jsonl::JsonlSink::open(c)?),
            SinkConfig::Mqtt(c) => Box::new(mqtt::MqttSink::start(c, device)?),
            SinkConfig::Webhook(c) => Box::new(webhook::WebhookSink::new(c)?),
            SinkConfig::Command(c) => Box::new(command::CommandSink::new(c)?),
            SinkConfig::Gpio(c) => Box::new(gpio::GpioSink::open(c)?),
            SinkConfig::Modbus(c) => Box::new(modbus::ModbusSink::start(c)?),
            SinkConfig::Snapshot(c) => Box::new(snapshot::SnapshotSink::open(c)?),
        })
    }
}
