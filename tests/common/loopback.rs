//! Helpers for the tests of sinks against real endpoints on loopback: a sample event, bounded
//! polling, and loopback ports no other test of the binary has been given.

use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lookout::event::Event;

pub fn event(seq: u64) -> Event {
    Event {
        device: "testdev".into(),
        source: "synthetic".into(),
        region: None,
        rule: Some("defect".into()),
        label: "dent".into(),
        score: 0.93,
        top: vec![],
        frame_seq: seq,
        captured_at: "2026-11-23T00:00:00.000Z".into(),
        latency_ms: 12.5,
        file: None,
        truth: None,
        snapshot: None,
        model: None,
        drift: None,
    }
}

/// Polls `f` every 20 ms until it is true or `limit` passes; returns its last value.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port that no other test of this binary has been given. The tests run in
/// parallel and stop and restart brokers on their ports: without this, a port freed by one
/// test's stopped broker could be handed to another test's broker, and the first test's
/// restarted broker would then find it taken while its clients talked to the other one (seen
/// as a rare loss of every event after a restart).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = l.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().expect("lock");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}
