//! The delivery sinks against real endpoints on loopback: HTTP and HTTPS servers started on
//! port 0, shell scripts run by the command sink, and the snapshot sink in the daemon (the MQTT
//! sink's tests are in `tests/mqtt.rs`). Every wait is bounded; nothing asserts on speed.

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
use lookout::sink::webhook::{WebhookSink, WebhookSinkConfig};
use lookout::sink::Sink;
use lookout::stop::StopToken;

mod common;

use common::certs::{make_certs, Certs};
use common::loopback::{event, wait_until};

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
        kill_grace_secs: 2.0,
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
        kill_grace_secs: 2.0,
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
        kill_grace_secs: 2.0,
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
