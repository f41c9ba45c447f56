//! The `modbus` sink: drives coils and holding registers of a PLC (Modbus TCP) or an RS-485
//! relay board (Modbus RTU) from events.
//!
//! Per event: each configured coil whose filters match is pulsed or follows the rule (the gpio
//! sink's timing), and the label index, the scaled score, a rolling event counter and the frame
//! sequence (32 bits, high word first) go to holding registers; a heartbeat register counts up
//! every `heartbeat_secs`. The coils go to their safe values at start, at shutdown and after
//! `safe_after_secs` without events. The sink owns one thread, `modbus-<name>`, that owns the
//! connection ([`link`]) and the state ([`run`]): `send` only queues the event (never blocks), and
//! the thread writes, reconnects with capped back-off and counts into [`LinkStats`]. Keys and
//! their validation are in [`config`].

pub mod config;
pub mod link;
pub mod run;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender, TrySendError};

pub use config::{CoilConfig, ModbusSinkConfig};

use super::{Sink, SinkError};
use crate::event::Event;
use crate::metrics::LinkStats;
use run::{Device, Hit};

/// Events the sink's thread may hold before `send` reports the queue full.
const HIT_QUEUE: usize = 64;

/// The sink half: queues events for the device thread.
pub struct ModbusSink {
    name: String,
    /// Events: `send` -> device thread. Full (the thread is stuck on a slow device): the event
    /// is refused and counted as failed by the pipeline. Dropping it stops the thread, which
    /// writes the safe state first.
    hit_tx: Option<Sender<Hit>>,
    thread: Option<JoinHandle<()>>,
    /// Written by the device thread; read by `/metrics` and `/api/status`.
    stats: Arc<LinkStats>,
}

impl ModbusSink {
    /// Starts the device thread. It connects in the background: a PLC that is down at start is
    /// retried, not fatal. An RTU device that does not exist is fatal (a wrong path).
    pub fn start(cfg: &ModbusSinkConfig) -> Result<ModbusSink, SinkError> {
        let name = cfg.name.clone().unwrap_or_else(|| "modbus".into());
        if let (Some("rtu"), Some(dev)) = (Some(cfg.transport.as_str()), cfg.device.as_deref()) {
            if !std::path::Path::new(dev).exists() {
                return Err(SinkError::Build {
                    what: format!(
                        "modbus sink {name:?}: serial device {dev} does not exist; check `device` (ls /dev/ttyUSB* /dev/ttyACM* /dev/serial/by-id/) and that the adapter is plugged in"
                    ),
                });
            }
        }
        let stats = Arc::new(LinkStats::default());
        let device = Device::new(cfg, Arc::clone(&stats))?;
        let (hit_tx, hit_rx) = bounded::<Hit>(HIT_QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("modbus-{name}"))
            .spawn(move || device.run(hit_rx))
            .map_err(|source| SinkError::Io {
                what: format!("cannot start the thread of modbus sink {name:?}"),
                source,
            })?;
        Ok(ModbusSink {
            name,
            hit_tx: Some(hit_tx),
            thread: Some(thread),
            stats,
        })
    }
}

/// The label's index in the event's top list (the model's label index); 65535 when absent.
fn label_index(event: &Event) -> u16 {
    event
        .top
        .iter()
        .find(|t| t.label == event.label)
        .and_then(|t| u16::try_from(t.index).ok())
        .unwrap_or(u16::MAX)
}

impl Sink for ModbusSink {
    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let hit = Hit {
            label: event.label.clone(),
            rule: event.rule.clone(),
            label_index: label_index(event),
            score: event.score,
            frame_seq: event.frame_seq,
        };
        match self.hit_tx.as_ref().map(|tx| tx.try_send(hit)) {
            Some(Ok(())) => Ok(()),
            Some(Err(TrySendError::Full(_))) => Err(SinkError::QueueFull {
                sink: self.name.clone(),
            }),
            _ => Err(SinkError::Build {
                what: format!("modbus sink {:?}: its device thread has ended", self.name),
            }),
        }
    }

    fn link_stats(&self) -> Option<Arc<LinkStats>> {
        Some(Arc::clone(&self.stats))
    }
}

impl Drop for ModbusSink {
    fn drop(&mut self) {
        self.hit_tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("Modbus sink thread panicked. sink={}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_index_is_the_model_index_of_the_event_label() {
        let e = Event::example();
        assert_eq!(label_index(&e), 1, "\"defect\" is index 1 in the example");
        let mut unknown = Event::example();
        unknown.label = "other".into();
        assert_eq!(label_index(&unknown), u16::MAX);
    }

    #[test]
    fn a_missing_serial_device_is_a_clear_error_naming_it() {
        let cfg: ModbusSinkConfig = toml::from_str(
            "transport = \"rtu\"\ndevice = \"/dev/ttyNOPE9\"\ncoils = [{ address = 0 }]",
        )
        .expect("config");
        let e = ModbusSink::start(&cfg).err().expect("no such device");
        assert!(e.to_string().contains("/dev/ttyNOPE9"), "{e}");
    }
}
