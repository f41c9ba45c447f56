//! The delivery sinks against real endpoints on loopback: an MQTT broker (mosquitto, started and
//! restarted by the test), HTTP servers started on port 0, and shell scripts run by the command
//! sink. Every wait is bounded; nothing asserts on speed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lookout::config::{Config, Origin};
use lookout::daemon;
use lookout::event::Event;
use lookout::sink::command::{CommandSink, CommandSinkConfig};
use lookout::sink::memory::MemorySink;
use lookout::sink::mqtt::{MqttSink, MqttSinkConfig};
use lookout::sink::webhook::{WebhookSink, WebhookSinkConfig};
use lookout::sink::Sink;
use lookout::stop::StopToken;

mod common;

fn event(seq: u64) -> Event {
    Event {
        device: "testdev".into(),
        source: "synthetic".into(),
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
    }
}

/// Polls `f` every 20 ms until it is true or `limit` passes; returns its last value.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
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
fn free_port() -> u16 {
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

// ---------------------------------------------------------------------------------------------
// MQTT

/// A mosquitto broker on 127.0.0.1:`port`, with persistence in `dir` so a subscriber's session
/// (and its queued messages) survives a restart. Stopped with SIGTERM (so it saves) on drop.
///
/// `user root`: started as root (CI, containers), mosquitto otherwise switches to the `mosquitto`
/// user, cannot write its database into the test's private temporary directory, and restarts
/// without the subscriber's session; a sink that reconnected before the subscriber then looked
/// as if it had lost events. Run as any other user, the line has no effect.
struct Broker {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
}

impl Broker {
    fn start(dir: &Path, port: u16) -> Broker {
        Broker::start_with(dir, port, "")
    }

    /// `listener_extra`: more lines for the listener (e.g. TLS certificate files).
    fn start_with(dir: &Path, port: u16, listener_extra: &str) -> Broker {
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

    fn restart(&mut self) {
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

    fn stop(&mut self) {
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
type Received = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// Subscribes to `lookout/#` and `homeassistant/#` with a persistent session (QoS 1) and records every message on a
/// thread that reconnects after errors; ends when `done` is set.
fn subscriber(
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

fn wait_subscribed(received: &Received) {
    assert!(
        wait_until(Duration::from_secs(10), || received
            .lock()
            .expect("lock")
            .iter()
            .any(|(t, _, _)| t == "$suback")),
        "the test subscriber could not subscribe"
    );
}

fn event_seqs(received: &Received) -> Vec<u64> {
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

// ---------------------------------------------------------------------------------------------
// Webhook

/// One recorded HTTP request: header lines (lower-cased names) and body.
#[derive(Clone, Debug)]
struct Request {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An HTTP server on 127.0.0.1:0 answering with the next status of `script` (then 200);
/// status 0 means: read the request, then hang for `hang` without answering.
fn http_server(script: Vec<u16>, hang: Duration) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let log: Arc<Mutex<Vec<Request>>> = Arc::default();
    let rec = Arc::clone(&log);
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let rec = Arc::clone(&rec);
            let script = Arc::clone(&script);
            std::thread::spawn(move || serve(stream, &rec, &script, hang));
        }
    });
    (url, log)
}

fn serve(
    stream: TcpStream,
    rec: &Mutex<Vec<Request>>,
    script: &Mutex<VecDeque<u16>>,
    hang: Duration,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        rec.lock().expect("lock").push(Request { headers, body });
        let status = script.lock().expect("lock").pop_front().unwrap_or(200);
        if status == 0 {
            std::thread::sleep(hang);
            return;
        }
        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn webhook_config(url: &str, extra: &str) -> WebhookSinkConfig {
    toml::from_str(&format!(
        "url = {url:?}\nbackoff_min_ms = 10\nbackoff_max_secs = 0.1\n{extra}"
    ))
    .expect("webhook config")
}

#[test]
fn webhook_posts_the_event_with_headers_and_bearer_token() {
    let (url, log) = http_server(vec![], Duration::ZERO);
    std::env::set_var("LOOKOUT_TEST_WEBHOOK_TOKEN", "s3cret");
    let cfg = webhook_config(
        &url,
        "token_env = \"LOOKOUT_TEST_WEBHOOK_TOKEN\"\nheaders = { X-Line = \"3\" }",
    );
    let mut sink = WebhookSink::new(&cfg).expect("builds");
    sink.send(&event(5)).expect("delivered");
    let reqs = log.lock().expect("lock").clone();
    assert_eq!(reqs.len(), 1);
    let get = |k: &str| {
        reqs[0]
            .headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("authorization").as_deref(), Some("Bearer s3cret"));
    assert_eq!(get("x-line").as_deref(), Some("3"));
    assert_eq!(get("content-type").as_deref(), Some("application/json"));
    let e: Event = serde_json::from_slice(&reqs[0].body).expect("body is the event JSON");
    assert_eq!(e.frame_seq, 5);
    assert_eq!(e.rule.as_deref(), Some("defect"));
}

#[test]
fn webhook_retries_server_errors_and_delivers_once() {
    let (url, log) = http_server(vec![500, 503, 500], Duration::ZERO);
    let mut sink = WebhookSink::new(&webhook_config(&url, "retries = 5")).expect("builds");
    sink.send(&event(1)).expect("delivered after retries");
    assert_eq!(
        log.lock().expect("lock").len(),
        4,
        "three failures, then one success"
    );
    sink.send(&event(2)).expect("next one at once");
    let reqs = log.lock().expect("lock").clone();
    assert_eq!(reqs.len(), 5, "delivered once each");
    let seqs: Vec<u64> = reqs
        .iter()
        .map(|r| {
            serde_json::from_slice::<Event>(&r.body)
                .expect("event")
                .frame_seq
        })
        .collect();
    assert_eq!(seqs, [1, 1, 1, 1, 2]);

    let (url, _log) = http_server(vec![404], Duration::ZERO);
    let mut sink = WebhookSink::new(&webhook_config(&url, "retries = 5")).expect("builds");
    let e = sink.send(&event(1)).expect_err("a 404 is not retried");
    assert!(e.to_string().contains("404"), "{e}");
}

#[test]
fn webhook_timeout_fires_and_a_hanging_endpoint_does_not_stall_other_sinks() {
    let (url, _log) = http_server(vec![0; 1000], Duration::from_secs(5));
    let mut sink =
        WebhookSink::new(&webhook_config(&url, "timeout_secs = 0.3\nretries = 1")).expect("builds");
    let t = Instant::now();
    assert!(
        sink.send(&event(1)).is_err(),
        "a hanging endpoint is a failed delivery"
    );
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "the timeout fired (took {:?})",
        t.elapsed()
    );

    let cfg = Config::parse(
        &format!(
            r#"
            device_id = "testdev"
            [source]
            type = "synthetic"
            fps = 0
            count = 20
            [pipeline]
            workers = 1
            sink_queue = 64
            [[sinks]]
            type = "webhook"
            url = "{url}"
            timeout_secs = 0.3
            retries = 0
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
    // The recording sink has every event while the webhook is still working through its queue
    // (each of its 20 events takes a 0.3 s timeout).
    assert!(
        wait_until(Duration::from_secs(30), || memory.events().len() == 20),
        "the recording sink got every event"
    );
    let now = running.metrics().snapshot();
    let hook = now
        .sinks
        .iter()
        .find(|s| s.name == "webhook")
        .expect("webhook counters");
    assert!(
        hook.failed + hook.dropped < 20,
        "the other sink was not held up behind the webhook: {hook:?}"
    );
    let snap = running.wait(Duration::from_secs(30));
    let hook = snap
        .sinks
        .iter()
        .find(|s| s.name == "webhook")
        .expect("webhook counters");
    assert_eq!(hook.sent, 0);
    assert_eq!(
        hook.failed + hook.dropped,
        20,
        "every event failed or was dropped, and counted: {hook:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Command

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn command_gets_the_event_on_stdin_and_in_its_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().display().to_string();
    let prog = script(
        dir.path(),
        "record.sh",
        &format!(
            "cat > '{out}/stdin.json'\nenv | grep '^LOOKOUT_' | sort > '{out}/env.txt'\nexit 0"
        ),
    );
    let cfg = CommandSinkConfig {
        name: None,
        command: vec![prog.display().to_string(), "arg1".into()],
        timeout_secs: 10.0,
        cwd: None,
    };
    let mut sink = CommandSink::new(&cfg).expect("builds");
    sink.send(&event(42)).expect("ran");
    let stdin: Event = serde_json::from_slice(
        &std::fs::read(dir.path().join("stdin.json")).expect("stdin recorded"),
    )
    .expect("event JSON");
    assert_eq!(stdin.frame_seq, 42);
    let env = std::fs::read_to_string(dir.path().join("env.txt")).expect("env recorded");
    for line in [
        "LOOKOUT_LABEL=dent",
        "LOOKOUT_RULE=defect",
        "LOOKOUT_DEVICE=testdev",
        "LOOKOUT_FRAME_SEQ=42",
        "LOOKOUT_SCORE=0.9300",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in\n{env}");
    }

    let failing = script(dir.path(), "fail.sh", "exit 3");
    let cfg = CommandSinkConfig {
        name: None,
        command: vec![failing.display().to_string()],
        timeout_secs: 10.0,
        cwd: None,
    };
    let e = CommandSink::new(&cfg)
        .expect("builds")
        .send(&event(1))
        .expect_err("non-zero exit fails");
    assert!(e.to_string().contains('3'), "{e}");
}

#[test]
fn hanging_command_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prog = script(dir.path(), "hang.sh", "exec sleep 30");
    let cfg = CommandSinkConfig {
        name: None,
        command: vec![prog.display().to_string()],
        timeout_secs: 0.3,
        cwd: None,
    };
    let mut sink = CommandSink::new(&cfg).expect("builds");
    let t = Instant::now();
    let e = sink.send(&event(1)).expect_err("killed");
    assert!(e.to_string().contains("killed"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "killed at the timeout, not after the program's 30 s"
    );
}

// ---------------------------------------------------------------------------------------------
// TLS: a private CA and a server certificate for 127.0.0.1 / localhost, made with openssl.

struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed (scripts/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=lookout test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write san.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    // mosquitto started as root reads its files as the `mosquitto` user: a test-only key may be
    // world-readable, and the temporary directory must be traversable.
    use std::os::unix::fs::PermissionsExt;
    for (p, mode) in [(dir.to_owned(), 0o755), (dir.join("server.key"), 0o644)] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// Python's HTTPS server on 127.0.0.1:0 with `certs`, appending each POST body as a line to
/// `bodies`. Killed on drop.
struct HttpsServer {
    child: Child,
    url: String,
}

impl HttpsServer {
    fn start(certs: &Certs, bodies: &Path) -> HttpsServer {
        let script = r#"
import http.server, ssl, sys
cert, key, out = sys.argv[1:4]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(out, "ab") as f:
            f.write(body + b"\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&certs.cert)
            .arg(&certs.key)
            .arg(bodies)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port line");
        let port: u16 = line.trim().parse().expect("the server prints its port");
        HttpsServer {
            child,
            url: format!("https://127.0.0.1:{port}/events"),
        }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn webhook_over_https_trusts_its_ca_file_and_refuses_an_unknown_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certs(dir.path());
    let bodies = dir.path().join("bodies.jsonl");
    let server = HttpsServer::start(&certs, &bodies);

    let mut trusted = WebhookSink::new(&webhook_config(
        &server.url,
        &format!("ca_file = {:?}", certs.ca.display().to_string()),
    ))
    .expect("builds");
    trusted.send(&event(41)).expect("delivered over HTTPS");
    let got = std::fs::read_to_string(&bodies).expect("server recorded the body");
    let e: Event = serde_json::from_str(got.lines().next().expect("one body")).expect("event JSON");
    assert_eq!(e.frame_seq, 41);

    // With the public roots only, the private CA's certificate is refused: not delivered.
    let mut public = WebhookSink::new(&webhook_config(&server.url, "retries = 0")).expect("builds");
    let err = public.send(&event(42)).expect_err("unknown issuer");
    let msg = format!("{err:#}");
    assert_eq!(
        std::fs::read_to_string(&bodies)
            .expect("read")
            .lines()
            .count(),
        1,
        "nothing delivered without trust: {msg}"
    );

    // A ca_file that is not PEM is a build error that names it.
    let bad = dir.path().join("not-a-cert.pem");
    std::fs::write(&bad, "hello").expect("write");
    let err = WebhookSink::new(&webhook_config(
        &server.url,
        &format!("ca_file = {:?}", bad.display().to_string()),
    ))
    .err()
    .expect("refused");
    assert!(err.to_string().contains("not-a-cert.pem"), "{err}");
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

#[test]
fn snapshot_sink_writes_the_triggering_frames_and_every_sink_names_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shots = dir.path().join("shots");
    let events = dir.path().join("events.jsonl");
    let cfg = Config::parse(
        &format!(
            r#"
            device_id = "testdev"
            [source]
            type = "synthetic"
            fps = 0
            count = 12
            seed = 3
            [pipeline]
            workers = 2
            [[sinks]]
            type = "jsonl"
            path = {:?}
            [[sinks]]
            type = "snapshot"
            dir = {:?}
            max_files = 5
            [log]
            summary_secs = 0
            "#,
            events.display().to_string(),
            shots.display().to_string()
        ),
        Origin::File("test.toml".into()),
    )
    .expect("valid config");
    let running = daemon::start(&cfg, vec![], StopToken::new()).expect("starts");
    let snap = running.wait(Duration::from_secs(60));
    assert_eq!(snap.events, 12);
    let lines = std::fs::read_to_string(&events).expect("jsonl written");
    let named: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Event>(l)
                .expect("event JSON")
                .snapshot
                .expect("every event names its snapshot")
        })
        .collect();
    assert_eq!(named.len(), 12);
    let mut newest = named.clone();
    newest.sort();
    let on_disk = lookout::sink::snapshot::list(&shots).expect("list");
    assert_eq!(on_disk, newest[7..].to_vec(), "the newest 5 are kept");
    for name in &on_disk {
        let img = image::open(shots.join(name)).expect("a JPEG");
        assert_eq!((img.width(), img.height()), (320, 240), "{name}");
    }
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
