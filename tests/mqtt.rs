//! The `mqtt` sink against a real broker on loopback (mosquitto, started and restarted by the
//! test): ordering across restarts, the daemon's payload and Home Assistant discovery, TLS, the
//! last will, the disk queue. Every wait is bounded; nothing asserts on speed.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use lookout::config::{Config, Origin};
use lookout::daemon;
use lookout::sink::memory::MemorySink;
use lookout::sink::mqtt::{MqttSink, MqttSinkConfig};
use lookout::sink::Sink;
use lookout::stop::StopToken;

mod common;

use common::broker::{event_seqs, subscriber, wait_subscribed, Broker, Received};
use common::certs::make_certs;
use common::loopback::{event, free_port, wait_until};

// ---------------------------------------------------------------------------------------------
// MQTT

fn statuses(received: &Received) -> Vec<String> {
    received
        .lock()
        .expect("lock")
        .iter()
        .filter(|(t, _, _)| t == "lookout/testdev/status")
        .map(|(_, p, _)| String::from_utf8_lossy(p).into_owned())
        .collect()
}

fn mqtt_config(port: u16, extra: &str) -> MqttSinkConfig {
    toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {port}\nreconnect_max_secs = 0.5\n{extra}"
    ))
    .expect("mqtt config")
}

#[test]
fn mqtt_delivers_in_order_and_loses_nothing_while_the_broker_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut broker = Broker::start(dir.path(), port);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (received, sub) = subscriber(port, Arc::clone(&done));
    // The subscriber's session must exist before the sink publishes.
    wait_subscribed(&received);

    let cfg = mqtt_config(port, "queue = 1000");
    let mut sink = MqttSink::start(&cfg, "testdev").expect("sink starts");
    for seq in 0..10 {
        sink.send(&event(seq)).expect("queued");
    }
    assert!(
        wait_until(Duration::from_secs(20), || event_seqs(&received).len()
            >= 10),
        "first events arrive; got {:?}",
        event_seqs(&received)
    );
    assert!(wait_until(Duration::from_secs(10), || statuses(&received)
        .contains(&"online".to_string())));

    broker.stop();
    for seq in 10..60 {
        sink.send(&event(seq))
            .expect("queued while the broker is down");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();

    let want: Vec<u64> = (0..60).collect();
    let distinct = |got: &[u64]| got.iter().collect::<std::collections::HashSet<_>>().len();
    let arrived = wait_until(Duration::from_secs(30), || {
        distinct(&event_seqs(&received)) >= 60
    });
    let got = event_seqs(&received);
    assert!(
        arrived,
        "every queued event arrives after the restart; got {got:?}"
    );
    // At-least-once: events in flight when the broker died (published, their acknowledgement
    // not yet back) are sent again after the restart, so a window of already delivered events
    // may come twice. Never out of order: in arrival order, each event is the next one or the
    // start of such a resent window, and the first arrivals are exactly 0..60 in order.
    let mut first = Vec::new();
    for (i, &seq) in got.iter().enumerate() {
        let seen = first.contains(&seq);
        if let Some(&prev) = i.checked_sub(1).and_then(|j| got.get(j)) {
            assert!(
                seq == prev + 1 || (seq <= prev && seen),
                "event {seq} after {prev}: out of order; got {got:?}"
            );
        }
        if !seen {
            first.push(seq);
        }
    }
    assert_eq!(first, want, "in order, none lost; got {got:?}");

    // A clean stop leaves the retained status `offline`.
    drop(sink);
    assert!(
        wait_until(Duration::from_secs(10), || statuses(&received)
            .last()
            .map(String::as_str)
            == Some("offline")),
        "status after stop: {:?}",
        statuses(&received)
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sub.join();
}

#[test]
fn mqtt_sink_runs_in_the_daemon_with_the_documented_payload_and_discovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (received, sub) = subscriber(port, Arc::clone(&done));
    wait_subscribed(&received);
    let cfg = Config::parse(
        &format!(
            r#"
            device_id = "testdev"
            [source]
            type = "synthetic"
            fps = 0
            count = 12
            seed = 7
            [pipeline]
            workers = 1
            [[sinks]]
            type = "mqtt"
            host = "127.0.0.1"
            port = {port}
            qos = 1
            homeassistant = true
            [log]
            summary_secs = 0
            "#
        ),
        Origin::File("test.toml".into()),
    )
    .expect("valid config");
    let memory = MemorySink::new();
    let running = daemon::start(
        &cfg,
        vec![("memory".into(), Box::new(memory.clone()))],
        StopToken::new(),
    )
    .expect("starts");
    let snap = running.wait(Duration::from_secs(60));
    assert_eq!(snap.events, 12);
    assert!(
        wait_until(Duration::from_secs(20), || event_seqs(&received).len()
            >= 12),
        "got {:?}",
        event_seqs(&received)
    );
    let msgs = received.lock().expect("lock").clone();
    let first = msgs
        .iter()
        .find(|(t, _, _)| t == "lookout/testdev/events")
        .expect("an event");
    let json: serde_json::Value = serde_json::from_slice(&first.1).expect("JSON payload");
    for key in [
        "device",
        "source",
        "rule",
        "label",
        "score",
        "top",
        "frame_seq",
        "captured_at",
        "latency_ms",
    ] {
        assert!(json.get(key).is_some(), "payload has {key}: {json}");
    }
    let recorded: Vec<u64> = memory.events().iter().map(|e| e.frame_seq).collect();
    assert_eq!(
        event_seqs(&received),
        recorded,
        "same events, same order as the other sinks"
    );
    assert!(
        msgs.iter()
            .any(|(t, _, _)| t == "homeassistant/sensor/lookout_testdev_top/config"),
        "discovery sensor announced (retained; live deliveries carry no retain flag)"
    );
    assert!(
        msgs.iter().any(|(t, _, _)| t == "lookout/testdev/top"),
        "top label state published"
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sub.join();
}

#[test]
fn home_assistant_gets_a_device_per_source_and_entities_per_region_and_label() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (received, sub) = subscriber(port, Arc::clone(&done));
    wait_subscribed(&received);
    let cfg = Config::parse(
        &format!(
            r#"
            device_id = "testdev"
            [[sources]]
            name = "belt"
            type = "synthetic"
            fps = 0
            count = 3
            [[sources]]
            name = "lanes"
            type = "synthetic"
            fps = 0
            count = 2
            seed = 5
            [[sources.regions]]
            name = "left"
            rect = [0, 0, 0.5, 1]
            [[sources.regions]]
            name = "right"
            rect = [0.5, 0, 0.5, 1]
            [pipeline]
            workers = 1
            [[sinks]]
            type = "mqtt"
            host = "127.0.0.1"
            port = {port}
            homeassistant = true
            off_delay = 7
            [log]
            summary_secs = 0
            "#
        ),
        Origin::File("test.toml".into()),
    )
    .expect("valid config");
    let memory = MemorySink::new();
    let running = daemon::start(
        &cfg,
        vec![("memory".into(), Box::new(memory.clone()))],
        StopToken::new(),
    )
    .expect("starts");
    let snap = running.wait(Duration::from_secs(60));
    assert_eq!(snap.events, 3 + 2 * 2);
    let events = memory.events();
    let place = |e: &lookout::event::Event| e.region.clone().unwrap_or_else(|| "frame".into());
    let label_states = |r: &Received| {
        r.lock()
            .expect("lock")
            .iter()
            .filter(|(t, _, _)| t.contains("/label/"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(20), || label_states(&received)
            >= events.len()),
        "one label state per event: {} of {}",
        label_states(&received),
        events.len()
    );
    let msgs = received.lock().expect("lock").clone();
    let payload = |topic: &str| -> serde_json::Value {
        let (_, p, _) = msgs
            .iter()
            .rev()
            .find(|(t, _, _)| t == topic)
            .unwrap_or_else(|| panic!("nothing on {topic}"));
        serde_json::from_slice(p).expect("JSON payload")
    };
    // A device per source, a `top label` sensor per region (`frame` without regions).
    for (source, region, name) in [
        ("belt", "frame", "top label"),
        ("lanes", "left", "left top label"),
        ("lanes", "right", "right top label"),
    ] {
        let config = payload(&format!(
            "homeassistant/sensor/lookout_testdev_{source}_{region}_top/config"
        ));
        assert_eq!(config["name"], name, "{config}");
        assert_eq!(
            config["state_topic"],
            format!("lookout/testdev/{source}/{region}/top")
        );
        assert_eq!(config["availability_topic"], "lookout/testdev/status");
        assert_eq!(
            config["device"]["identifiers"][0],
            format!("lookout_testdev_{source}")
        );
        assert_eq!(
            config["device"]["name"],
            format!("lookout testdev {source}")
        );
        assert_eq!(config["device"]["via_device"], "lookout_testdev");
        // Its state: the label of the last event there.
        let last = events
            .iter()
            .rev()
            .find(|e| e.source == source && place(e) == region)
            .expect("an event there");
        let state = payload(&format!("lookout/testdev/{source}/{region}/top"));
        assert_eq!(state["label"], last.label.as_str(), "{state}");
    }
    // A binary_sensor per region and label seen there, set ON by each of its events.
    for e in &events {
        let (source, region) = (e.source.as_str(), place(e));
        let config = payload(&format!(
            "homeassistant/binary_sensor/lookout_testdev_{source}_{region}_{}/config",
            e.label
        ));
        let state_topic = format!("lookout/testdev/{source}/{region}/label/{}", e.label);
        assert_eq!(config["state_topic"], state_topic.as_str());
        assert_eq!(config["off_delay"], 7);
        assert_eq!(config["value_template"], "{{ value_json.state }}");
        let ons = msgs
            .iter()
            .filter(|(t, _, _)| *t == state_topic)
            .map(|(_, p, _)| serde_json::from_slice::<serde_json::Value>(p).expect("JSON"))
            .filter(|v| v["state"] == "ON")
            .count();
        let want = events
            .iter()
            .filter(|x| x.source == source && place(x) == region && x.label == e.label)
            .count();
        assert_eq!(ons, want, "{state_topic}");
    }
    // The daemon-wide sensor stays.
    assert!(msgs
        .iter()
        .any(|(t, _, _)| t == "homeassistant/sensor/lookout_testdev_top/config"));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sub.join();
}

#[test]
fn mqtt_over_tls_with_a_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certs(dir.path());
    let tls_port = free_port();
    let plain_port = free_port();
    // One broker, two listeners: TLS for the sink, plain loopback for the test subscriber.
    let _broker = Broker::start_with(
        dir.path(),
        plain_port,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            certs.ca.display(),
            certs.cert.display(),
            certs.key.display()
        ),
    );
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (received, sub) = subscriber(plain_port, Arc::clone(&done));
    wait_subscribed(&received);
    let cfg = mqtt_config(
        tls_port,
        &format!("qos = 1\nca_file = {:?}", certs.ca.display().to_string()),
    );
    let mut sink = MqttSink::start(&cfg, "testdev").expect("starts");
    for seq in 0..3 {
        sink.send(&event(seq)).expect("queued");
    }
    sink.flush().expect("flush");
    assert!(
        wait_until(Duration::from_secs(20), || event_seqs(&received).len() >= 3),
        "events over TLS: {:?}",
        event_seqs(&received)
    );
    assert_eq!(event_seqs(&received), vec![0, 1, 2]);
    drop(sink);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sub.join();
}

#[test]
fn mqtt_last_will_says_offline_when_the_daemon_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _broker = Broker::start(dir.path(), port);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (received, sub) = subscriber(port, Arc::clone(&done));
    wait_subscribed(&received);
    let conf = dir.path().join("lookout.toml");
    std::fs::write(
        &conf,
        format!(
            r#"
            device_id = "testdev"
            [source]
            type = "synthetic"
            fps = 5
            [[sinks]]
            type = "mqtt"
            host = "127.0.0.1"
            port = {port}
            keep_alive_secs = 5
            "#
        ),
    )
    .expect("write config");
    let mut daemon = common::lookout_command()
        .args(["run", "--config"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lookout");
    let online = wait_until(Duration::from_secs(60), || {
        statuses(&received).last().map(String::as_str) == Some("online")
    });
    // SIGKILL: no clean disconnect, so only the broker's last will can say offline.
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(online, "status went online: {:?}", statuses(&received));
    assert!(
        wait_until(Duration::from_secs(30), || statuses(&received)
            .last()
            .map(String::as_str)
            == Some("offline")),
        "the broker published the last will: {:?}",
        statuses(&received)
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sub.join();
}

/// `queue_dir`: events produced while the broker is down survive a daemon restart and are
/// delivered, in order, by the next run.
#[test]
fn mqtt_disk_queue_survives_a_daemon_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let queue = dir.path().join("queue");
    let conf = dir.path().join("lookout.toml");
    let write_conf = |count: u32| {
        std::fs::write(
            &conf,
            format!(
                r#"
                device_id = "testdev"
                [source]
                type = "synthetic"
                fps = 0
                count = {count}
                seed = 11
                [pipeline]
                workers = 1   # events in capture order, so the queue's order is what is checked
                [[sinks]]
                type = "mqtt"
                host = "127.0.0.1"
                port = {port}
                qos = 1
                reconnect_max_secs = 0.5
                queue_dir = {:?}
                [log]
                summary_secs = 0
                "#,
                queue.display().to_string()
            ),
        )
        .expect("write config");
    };
    let run = || {
        let out = common::lookout_command()
            .args(["run", "--config"])
            .arg(&conf)
            .output()
            .expect("lookout runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // First run: no broker at all; 15 events are queued (in memory and on disk) and the daemon
    // stops at the end of its finite source.
    write_conf(15);
    run();
    assert!(
        std::fs::read_dir(&queue)
            .expect("queue dir")
            .next()
            .is_some(),
        "the queue is on disk"
    );
    // The broker comes up; the second run delivers the first run's events, then its own.
    let _broker = Broker::start(dir.path(), port);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (received, sub) = subscriber(port, Arc::clone(&done));
    wait_subscribed(&received);
    write_conf(5);
    run();
    let arrived = wait_until(Duration::from_secs(30), || {
        let mut got = event_seqs(&received);
        got.dedup();
        got.len() >= 20
    });
    let mut got = event_seqs(&received);
    got.dedup();
    assert!(arrived, "all 20 events delivered; got {got:?}");
    let want: Vec<u64> = (0..15).chain(0..5).collect();
    assert_eq!(
        got, want,
        "the first run's events first, in order, then the second run's"
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sub.join();
}
