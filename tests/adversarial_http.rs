//! The HTTP server as a hostile client uses it: thousands of idle and slow connections,
//! oversized heads and bodies, wrong, missing and query-string tokens, and labels that try to
//! inject markup into the live view. Real sockets, the real `lookout` binary, headless Chromium.
//! Every wait is bounded; nothing asserts on speed.
//!
//! `LOOKOUT_BIN_UNDER_TEST` (optional) runs another build of the daemon instead, so the same
//! test gives the before/after figures in docs/performance.md.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, wait_until};

const SYNTHETIC: &str = "[source]\ntype = \"synthetic\"\nfps = 10\n";

struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(
        dir: &std::path::Path,
        before_log: &str,
        http_extra: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let port = free_port();
        let conf = dir.join("lookout.toml");
        std::fs::write(
            &conf,
            format!("device_id = \"testdev\"\n{before_log}\n[log]\nsummary_secs = 0\n[http]\nlisten = \"127.0.0.1:{port}\"\n{http_extra}\n"),
        )
        .expect("write config");
        let mut cmd = match std::env::var_os("LOOKOUT_BIN_UNDER_TEST") {
            Some(b) => std::process::Command::new(b),
            None => common::lookout_command(),
        };
        let log = dir.join("lookout.log");
        cmd.args(["run", "--config"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let d = Daemon {
            child: cmd.spawn().expect("start lookout"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        assert!(
            wait_until(Duration::from_secs(60), || status_of(
                d.addr,
                "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            ) == Some(200)),
            "the daemon did not become healthy on {}",
            d.addr
        );
        d
    }

    fn count(&self, what: &str) -> usize {
        std::fs::read_dir(format!("/proc/{}/{what}", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` on a fresh connection and returns the status of the answer, if one came
/// within 5 s.
fn status_of(addr: SocketAddr, request: &str) -> Option<u16> {
    answer(addr, request.as_bytes()).map(|(s, _)| s)
}

/// Sends `request` and reads the whole answer (the server closes, or 5 s pass): status and text.
fn answer(addr: SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = request.to_vec();
    let mut w = s.try_clone().ok()?;
    // Written on a thread of its own: the server may answer (and stop reading) before all of an
    // oversized request is sent.
    let writer = std::thread::spawn(move || w.write_all(&request));
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&chunk[..n]);
                let t = String::from_utf8_lossy(&got);
                if let Some((head, body)) = t.split_once("\r\n\r\n") {
                    let len = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if len.is_some_and(|n| body.len() >= n) {
                        break;
                    }
                }
            }
        }
    }
    drop(s);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// This test process holds 2,200 sockets (and the daemon, its child, as many before the fix):
/// raise the soft descriptor limit towards the hard one, as CI machines often start at 1,024.
fn raise_open_file_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < want {
        lim.rlim_cur = lim.rlim_max.min(want);
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard one
        // needs no privilege.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
    assert!(
        lim.rlim_cur >= want,
        "this test needs {want} open files; the hard limit is {}",
        lim.rlim_max
    );
}

#[test]
fn thousands_of_idle_and_slow_connections_stay_bounded_and_healthz_answers() {
    raise_open_file_limit(2600);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(dir.path(), SYNTHETIC, "", &[]);
    let (threads0, fds0) = (d.count("task"), d.count("fd"));

    let mut idle = Vec::new();
    for _ in 0..2000 {
        match TcpStream::connect_timeout(&d.addr, Duration::from_secs(5)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {} refused outright: {e}", idle.len()),
        }
    }
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect_timeout(&d.addr, Duration::from_secs(5)).expect("connect");
        let _ = s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n");
        slow.push(s);
    }
    let (mut threads, mut fds, mut answered, mut rounds) = (0, 0, 0, 0);
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        // Slowloris: one more header line now and then, never the end of the head.
        for s in &mut slow {
            let _ = s.write_all(b"X-Slow: 1\r\n");
        }
        threads = threads.max(d.count("task"));
        fds = fds.max(d.count("fd"));
        rounds += 1;
        if wait_until(Duration::from_secs(5), || {
            status_of(d.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == Some(200)
        }) {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "FIGURES: idle=2000 slowloris=200 threads: {threads0} at rest, {threads} at most; fds: {fds0} at rest, {fds} at most; /healthz answered {answered}/{rounds} rounds"
    );
    assert_eq!(answered, rounds, "/healthz answered every round under load");
    assert!(
        threads <= threads0 + 4,
        "threads stay bounded: {threads0} at rest, {threads} under 2,200 connections"
    );
    // max_connections (64) + the overflow answers (32) + what the daemon holds at rest.
    assert!(
        fds <= fds0 + 64 + 32 + 8,
        "descriptors stay bounded: {fds0} at rest, {fds} under 2,200 connections"
    );
    let (status, metrics) = answer(
        d.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("/metrics answers after the flood");
    assert_eq!(status, 200);
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lookout_http_connections_refused_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("the refused-connection counter");
    assert!(
        refused >= 2000 - 64,
        "refused connections counted: {refused}"
    );
    drop((idle, slow));
}

#[test]
fn oversized_heads_get_431_and_bodies_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        dir.path(),
        SYNTHETIC,
        "token_env = \"LOOKOUT_ADV_TOKEN\"",
        &[("LOOKOUT_ADV_TOKEN", "t0ken-adv")],
    );
    let mut big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.resize(big.len() + 2 * 1024 * 1024, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    let got = answer(d.addr, &big);
    println!(
        "FIGURES: 2 MB header answered {:?}",
        got.as_ref().map(|g| g.0)
    );
    assert_eq!(got.map(|g| g.0), Some(431), "a 2 MB header");

    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let got = status_of(
        d.addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
    );
    assert_eq!(got, Some(431), "200 header lines");

    let got = status_of(
        d.addr,
        "POST /api/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken-adv\r\nContent-Length: 10000000\r\n\r\n",
    );
    assert_eq!(got, Some(413), "a 10 MB body announced on POST /api/reload");
    let mut post =
        b"POST /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    post.resize(post.len() + 1024 * 1024, b'b');
    assert_eq!(
        answer(d.addr, &post).map(|g| g.0),
        Some(413),
        "a 1 MB body sent on POST"
    );
    // Still serving.
    assert_eq!(
        status_of(d.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        Some(200)
    );
}

#[test]
fn configured_header_and_idle_timeouts_are_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        dir.path(),
        SYNTHETIC,
        "header_timeout_secs = 0.5\nidle_timeout_secs = 1",
        &[],
    );
    // A head that never ends: 408, naming the configured limit (the default would say 5 s).
    let got = answer(d.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
    let (status, text) = got.expect("an answer to an unfinished head");
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("within 0.5 s"), "{text}");
    let (_, metrics) =
        answer(d.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("metrics");
    assert!(
        metrics.contains("lookout_http_header_timeouts_total 1"),
        "{metrics}"
    );
    // A kept-alive connection after one answer: closed by the server once idle for 1 s, well
    // within this bound (the default would keep it for 15 s).
    let mut s = TcpStream::connect(d.addr).expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let closed = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        closed,
        "the idle connection was closed by the server within 10 s: {text}"
    );
}

#[test]
fn wrong_missing_and_query_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "Zq8-secret-adv";
    let d = Daemon::start(
        dir.path(),
        SYNTHETIC,
        "token_env = \"LOOKOUT_ADV_TOKEN\"",
        &[("LOOKOUT_ADV_TOKEN", token)],
    );
    let get = |path: &str, auth: Option<&str>| {
        let auth = auth
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        status_of(
            d.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
        )
    };
    let mut failures = 0;
    for path in ["/", "/metrics", "/api/status", "/frame.jpg"] {
        assert_eq!(get(path, None), Some(401), "{path} without a token");
        assert_eq!(
            get(path, Some("wrong")),
            Some(401),
            "{path} with a wrong token"
        );
        // Same length, one character off.
        assert_eq!(
            get(path, Some("Zq8-secret-adw")),
            Some(401),
            "{path} with a near miss"
        );
        failures += 3;
    }
    assert_eq!(get("/api/status", Some(token)), Some(200));
    assert_eq!(
        get(&format!("/api/status?token={token}"), None),
        Some(200),
        "the page's own GET"
    );
    assert_eq!(
        get(&format!("/?token={token}"), None),
        Some(200),
        "the page itself"
    );
    assert_eq!(
        get(&format!("/metrics?token={token}"), None),
        Some(401),
        "/metrics needs the header"
    );
    failures += 1;
    let post = |extra: &str, auth: &str| {
        status_of(
            d.addr,
            &format!(
                "POST /api/reload{extra} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n"
            ),
        )
    };
    assert_eq!(
        post(&format!("?token={token}"), ""),
        Some(401),
        "no query token on POST"
    );
    failures += 1;
    let ok = post("", &format!("Authorization: Bearer {token}\r\n"));
    assert!(
        matches!(ok, Some(200) | Some(422)),
        "POST with the header reaches reload: {ok:?}"
    );

    let (_, metrics) = answer(
        d.addr,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("/metrics");
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lookout_http_token_failures_total{addr=\"127.0.0.1\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(
        counted,
        Some(failures),
        "failed tokens counted per address:\n{metrics}"
    );
    let log = std::fs::read_to_string(&d.log).expect("log");
    assert!(
        !log.contains(token),
        "the token never reaches the log:\n{log}"
    );
}

/// Labels are the model's, which a user may not control (a downloaded model's metadata): the
/// live view must show them as text.
#[test]
fn hostile_labels_render_as_text_in_headless_chromium() {
    let chromium = common::chromium();
    let dir = tempfile::tempdir().expect("tempdir");
    let labels = dir.path().join("labels.txt");
    std::fs::write(
        &labels,
        "<script>document.title='PWNED-script'</script>\n\"><img src=x onerror=\"document.title='PWNED-img'\">\n<b>bold</b>\nmissing\n",
    )
    .expect("labels");
    let source = format!("{SYNTHETIC}[model]\nlabels = \"{}\"\n", labels.display());
    let d = Daemon::start(dir.path(), &source, "", &[]);
    let profile = dir.path().join("profile");
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{}/", d.addr))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("class=\"bar\""),
        "the page ran and drew its bars:\n{dom}"
    );
    let title = dom
        .split_once("<title>")
        .and_then(|(_, t)| t.split_once("</title>"))
        .map(|(t, _)| t.to_owned())
        .expect("the page has a title");
    assert!(
        !title.contains("PWNED"),
        "an injected script ran: the title is {title:?}"
    );
    // The labels are in the page as escaped text, not as elements.
    assert!(
        dom.contains("&lt;script&gt;document.title"),
        "the <script> label shown as text:\n{dom}"
    );
    assert!(
        dom.contains("&lt;img src=x onerror="),
        "the <img> label shown as text:\n{dom}"
    );
    assert!(
        !dom.contains("<b>bold</b>"),
        "no label became markup:\n{dom}"
    );
}
