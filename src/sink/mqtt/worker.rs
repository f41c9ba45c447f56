//! The `mqtt` sink's connection thread: owns the rumqttc connection and the delivery queue,
//! publishes events in order within a window, marks them done on acknowledgement, republishes
//! everything unacknowledged after a reconnect, and reconnects with capped back-off.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rumqttc::{Client, Connection, Event as MqttEvent, Outgoing, Packet, QoS};

use super::homeassistant::{HomeAssistant, Seen};
use super::queue::DiskQueue;
use super::Outbound;
use crate::retry::{chain, Backoff};

/// Publishes outstanding at once (sent, not yet acknowledged).
pub(super) const WINDOW: usize = 32;
/// How long the connection thread waits for the broker at shutdown to deliver what it holds.
const DRAIN: Duration = Duration::from_secs(3);

/// A queued event and where it stands.
pub(super) struct Pending {
    pub(super) id: u64,
    pub(super) out: Outbound,
    /// Published on the current connection, not yet acknowledged.
    pub(super) sent: bool,
    /// Acknowledged (QoS 1) or written (QoS 0); removed once it reaches the front.
    pub(super) done: bool,
}

/// What a publish handed to rumqttc was, in request order (rumqttc reports `Outgoing::Publish`
/// in the order of the requests).
pub(super) enum SentKind {
    Event(u64),
    Other,
}

/// The connection thread's state. Owned by that thread only.
pub(super) struct Worker {
    pub(super) name: String,
    pub(super) client: Client,
    pub(super) qos: QoS,
    pub(super) status_topic: String,
    pub(super) device: String,
    pub(super) capacity: usize,
    pub(super) pending: VecDeque<Pending>,
    pub(super) disk: DiskQueue,
    /// Publishes handed to rumqttc whose `Outgoing::Publish` has not been seen yet.
    pub(super) sent_order: VecDeque<SentKind>,
    /// A ConnAck was received and no connection error since.
    pub(super) connected: bool,
    pub(super) reconnect_max: Duration,
    pub(super) homeassistant: Option<HomeAssistant>,
}

impl Worker {
    pub(super) fn run(mut self, mut connection: Connection, event_rx: Receiver<Outbound>) {
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
        let mut extra: Vec<Seen> = Vec::new();
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
                extra.push(Seen {
                    source: p.out.source.clone(),
                    region: p.out.region.clone(),
                    rule: p.out.rule.clone().unwrap_or_default(),
                    label: p.out.label.clone(),
                    score: p.out.score,
                });
            }
        }
        for seen in extra {
            self.announce_event(&seen);
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
            let (topic, payload) = ha.connected(&self.device, &self.status_topic);
            self.publish_other(topic, true, payload);
        }
    }

    fn on_disconnect(&mut self) {
        // rumqttc drops what it held for a clean session: everything unacknowledged goes again.
        self.sent_order.clear();
        for p in self.pending.iter_mut() {
            p.sent = false;
        }
    }

    fn announce_event(&mut self, seen: &Seen) {
        let Some(ha) = self.homeassistant.as_mut() else {
            return;
        };
        for (topic, retain, payload) in ha.event(&self.device, &self.status_topic, seen) {
            self.publish_other(topic, retain, payload);
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
