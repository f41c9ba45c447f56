//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod broker;
pub mod cdp;
pub mod certs;
pub mod loopback;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The test assets (see `../shared/assets/README.md`; `assets/manifest.tsv` lists them): the
/// folder `LOOKOUT_ASSETS` names, else `../shared/assets` beside the checkout, else the cache that
/// `scripts/fetch-assets` fills (`${XDG_CACHE_HOME:-~/.cache}/lookout/assets`). A folder counts
/// when it has the shared folder's README.md or every file the manifest lists. A test that needs
/// them fails with a clear message when none does; only an explicit `LOOKOUT_SKIP_ASSET_TESTS=1`
/// turns that into a printed skip.
pub fn assets() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let listed: Vec<String> = std::fs::read_to_string(root.join("assets/manifest.tsv"))
        .map(|m| {
            m.lines()
                .skip(1)
                .filter_map(|l| l.split('\t').next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let holds_assets = |dir: &Path| {
        dir.join("README.md").is_file()
            || (!listed.is_empty() && listed.iter().all(|p| dir.join(p).is_file()))
    };
    let explicit = std::env::var_os("LOOKOUT_ASSETS").map(PathBuf::from);
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("lookout/assets"));
    let candidates: Vec<PathBuf> = match &explicit {
        Some(dir) => vec![dir.clone()],
        None => std::iter::once(root.join("../shared/assets"))
            .chain(cache)
            .collect(),
    };
    if let Some(dir) = candidates.iter().find(|d| holds_assets(d)) {
        return Some(dir.clone());
    }
    let looked = candidates
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" or ");
    if std::env::var("LOOKOUT_SKIP_ASSET_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: test assets not found at {looked} (LOOKOUT_SKIP_ASSET_TESTS=1)");
        return None;
    }
    match explicit {
        Some(dir) => panic!(
            "test assets not found at {} (LOOKOUT_ASSETS): fill it with scripts/fetch-assets {}, or unset LOOKOUT_ASSETS (or LOOKOUT_SKIP_ASSET_TESTS=1 to skip)",
            dir.display(),
            dir.display()
        ),
        None => panic!(
            "test assets not found at {looked}: run scripts/fetch-assets (it fills the cache), or set LOOKOUT_ASSETS to a folder that holds them (or LOOKOUT_SKIP_ASSET_TESTS=1 to skip)"
        ),
    }
}

/// The `lookout` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lookout"))
}

/// A command that runs the `lookout` binary built for these tests. When the tests themselves run
/// under an emulator (`scripts/build-arm.sh --test`), `LOOKOUT_TEST_RUNNER` names it (program and
/// arguments, space-separated), because the host cannot exec a foreign binary directly.
pub fn lookout_command() -> std::process::Command {
    match std::env::var("LOOKOUT_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut cmd = std::process::Command::new(parts.next().expect("non-empty runner"));
            cmd.args(parts).arg(bin());
            cmd
        }
        _ => std::process::Command::new(bin()),
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon with its HTTP server, for tests that watch it from outside.

/// A free loopback port that no other test of this binary has been given (tests run in
/// parallel; a port one test's server released must not be handed to another's).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = l.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().expect("lock");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `lookout run` on a config made of `source` (any TOML before `[log]`: source, pipeline, rules,
/// sinks) and `[http]` on a free loopback port plus `http_extra`; its log goes to
/// `dir/lookout.log`. Killed on drop.
pub struct Daemon {
    pub child: Child,
    pub base: String,
}

impl Daemon {
    pub fn start(dir: &Path, source: &str, http_extra: &str, env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let conf = dir.join("lookout.toml");
        std::fs::write(
            &conf,
            format!(
                "device_id = \"testdev\"\n{source}\n[log]\nsummary_secs = 0\n[http]\nlisten = \"127.0.0.1:{port}\"\n{http_extra}\n"
            ),
        )
        .expect("write config");
        let mut cmd = lookout_command();
        let log = std::fs::File::create(dir.join("lookout.log")).expect("log file");
        cmd.args(["run", "--config"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start lookout");
        let d = Daemon {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let up = wait_until(Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "HTTP server did not come up on port {port}");
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/metrics` of a test daemon, as text.
pub fn metrics(d: &Daemon) -> String {
    let (status, body) = get(&format!("{}/metrics", d.base), None);
    assert_eq!(status, 200);
    String::from_utf8(body).expect("utf8")
}

/// The log of the daemon started in `dir` ([`Daemon::start`]).
pub fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("lookout.log")).unwrap_or_default()
}

/// Waits (at most 90 s) until `pred(metrics)` holds; on timeout fails showing the metrics and
/// the log.
pub fn wait_metrics(d: &Daemon, dir: &Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(90), || {
        last = metrics(d);
        pred(&last)
    });
    assert!(
        ok,
        "{what}\n--- metrics ---\n{last}\n--- log ---\n{}",
        log_of(dir)
    );
    last
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    )
}

/// GET `url` with optional bearer token: (status, body bytes).
pub fn get(url: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut req = agent().get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("HTTP request");
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .expect("body");
    (status, body)
}

pub fn get_json(url: &str) -> serde_json::Value {
    let (status, body) = get(url, None);
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON")
}

/// The value of an unlabelled Prometheus sample `name`.
pub fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
}

/// The headless browser the live-view tests drive: the first of Chromium's usual names that
/// runs. Panics with what to install when none does (scripts/test installs Debian's chromium).
pub fn chromium() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium must be installed (scripts/test installs Debian's chromium)")
}

/// The flags every headless Chromium of the tests runs with.
pub const CHROMIUM_FLAGS: [&str; 6] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--window-size=1280,900",
];

/// Headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=...`), its profile in
/// `profile`, virtual time 4 s for the page's scripts to run; returns stdout.
pub fn headless(profile: &std::path::Path, url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(chromium())
        .args(CHROMIUM_FLAGS)
        .args([
            "--hide-scrollbars",
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Python the fixture scripts run on (LOOKOUT_PYTHON, else the checkout's .venv, both made
/// by scripts/test from requirements.txt); fails the test, saying what to do, when it cannot
/// import `modules` (a comma-separated import list such as "cv2, numpy").
pub fn python_with(modules: &str) -> PathBuf {
    let py = std::env::var_os("LOOKOUT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import {modules}: run scripts/test (it makes .venv and installs requirements.txt), or set LOOKOUT_PYTHON to a python that has them",
        py.display()
    );
    py
}
