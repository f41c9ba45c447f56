//! A real mosquitto broker on loopback and a recording subscriber, for the MQTT tests
//! (`tests/mqtt.rs`, `tests/adversarial_sinks.rs`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lookout::event::Event;

use super::loopback::wait_until;

/// A mosquitto broker on 127.0.0.1:`port`, with persistence in `dir` so a subscriber's session
/// (and its queued messages) survives a restart. Stopped with SIGTERM (so it saves) on drop.
///
/// `user root`: started as root (CI, containers), mosquitto otherwise switches to the `mosquitto`
/// user, cannot write its database into the test's private temporary directory, and restarts
/// without the subscriber's session; a sink that reconnected before the subscriber then looked
/// as if it had lost events. Run as any other user, the line has no effect.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
}

impl Broker {
    pub fn start(dir: &Path, port: u16) -> Broker {
        Broker::start_with(dir, port, "")
    }

    /// `listener_extra`: more lines for the listener (e.g. TLS certificate files).
    pub fn start_with(dir: &Path, port: u16, listener_extra: &str) -> Broker {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\nlistener {port} 127.0.0.1\n{listener_extra}allow_anonymous true\npersistence true\npersistence_location {}/\nlog_dest none\n",
                dir.display()
            ),
        )
        .expect("write mosquitto.conf");
        let mut b = Broker {
            child: None,
            port,
            conf,
        };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (scripts/test installs it)");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "mosquitto did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None))),
            "the restarted mosquitto exited: is port {port} taken by another process?"
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Messages received by a test subscriber: (topic, payload, retained).
pub type Received = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// Subscribes to `lookout/#` and `homeassistant/#` with a persistent session (QoS 1) and records every message on a
/// thread that reconnects after errors; ends when `done` is set.
pub fn subscriber(
    port: u16,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> (Received, std::thread::JoinHandle<()>) {
    use rumqttc::{Client, Event as E, MqttOptions, Packet, QoS};
    let received: Received = Arc::default();
    let rec = Arc::clone(&received);
    // One client id per broker: the tests' subscribers never take over each other's session.
    let mut opts = MqttOptions::new(format!("lookout-test-subscriber-{port}"), "127.0.0.1", port);
    opts.set_clean_session(false);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(opts, 64);
    let h = std::thread::spawn(move || {
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            match connection.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(E::Incoming(Packet::ConnAck(_)))) => {
                    let _ = client.try_subscribe("lookout/#", QoS::AtLeastOnce);
                    let _ = client.try_subscribe("homeassistant/#", QoS::AtLeastOnce);
                }
                Ok(Ok(E::Incoming(Packet::SubAck(_)))) => {
                    rec.lock()
                        .expect("lock")
                        .push(("$suback".into(), Vec::new(), false));
                }
                Ok(Ok(E::Incoming(Packet::Publish(p)))) => {
                    rec.lock()
                        .expect("lock")
                        .push((p.topic.clone(), p.payload.to_vec(), p.retain));
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    (received, h)
}

pub fn wait_subscribed(received: &Received) {
    assert!(
        wait_until(Duration::from_secs(10), || received
            .lock()
            .expect("lock")
            .iter()
            .any(|(t, _, _)| t == "$suback")),
        "the test subscriber could not subscribe"
    );
}

pub fn event_seqs(received: &Received) -> Vec<u64> {
    received
        .lock()
        .expect("lock")
        .iter()
        .filter(|(t, _, _)| t == "lookout/testdev/events")
        .map(|(_, p, _)| {
            serde_json::from_slice::<Event>(p)
                .expect("payload is the documented event JSON")
                .frame_seq
        })
        .collect()
}
