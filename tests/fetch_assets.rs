//! `scripts/fetch-assets` against a loopback mirror of the test assets, and `assets/manifest.tsv`
//! against the assets folder.
//!
//! The mirror is a `tiny_http` server on 127.0.0.1 port 0 serving the folder `common::assets()`
//! finds (`LOOKOUT_ASSETS`, as the other asset tests), with at most one fault at a time: one path
//! answered with a flipped byte, or with 404. The script runs as a user runs it, with
//! `LOOKOUT_ASSETS_MIRROR` pointing at the server; what it wrote is compared byte for byte with
//! the source folder. Needs `python3` (standard library only), as the script does.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// A full fetch from loopback takes a few seconds; this bounds a hung one.
const SCRIPT_LIMIT: Duration = Duration::from_secs(300);
const MIRROR_THREADS: usize = 4;

/// One line of `assets/manifest.tsv`.
struct Entry {
    path: String,
    sha256: String,
    size: u64,
    url: String,
}

fn manifest() -> Vec<Entry> {
    let file = Path::new(ROOT).join("assets/manifest.tsv");
    let text = std::fs::read_to_string(&file).expect("read assets/manifest.tsv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("path\tsha256\tsize\turl\torigin"),
        "{}: header",
        file.display()
    );
    lines
        .enumerate()
        .map(|(i, line)| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 5, "manifest line {}: {line:?}", i + 2);
            Entry {
                path: cols[0].to_owned(),
                sha256: cols[1].to_owned(),
                size: cols[2]
                    .parse()
                    .unwrap_or_else(|_| panic!("manifest line {}: size {:?}", i + 2, cols[2])),
                url: cols[3].to_owned(),
            }
        })
        .collect()
}

/// Every file under `dir` as (path relative to `dir` with `/`, size), at most `depth` folders down.
fn walk(dir: &Path, depth: usize) -> Vec<(String, u64)> {
    fn go(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(String, u64)>) {
        assert!(depth > 0, "{}: folders nested too deep", dir.display());
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                go(root, &entry.path(), depth - 1, out);
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_owned();
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>();
                out.push((rel.join("/"), meta.len()));
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, depth, &mut out);
    out.sort();
    out
}

/// What the mirror does wrong, for one path (as in the manifest).
#[derive(Clone, PartialEq)]
enum Fault {
    None,
    Corrupt(String),
    Missing(String),
}

/// The loopback mirror. `fault` is set by the test and read by the server threads per request;
/// `served` counts the files they answered 200; `stop` ends the threads (each waits at most
/// 100 ms for a request before looking at it), and dropping the mirror sets it and joins them.
struct Mirror {
    base: String,
    fault: Arc<Mutex<Fault>>,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Mirror {
    fn start(dir: PathBuf) -> Mirror {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1:0"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let fault = Arc::new(Mutex::new(Fault::None));
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..MIRROR_THREADS)
            .map(|_| {
                let (server, dir, fault, served, stop) = (
                    server.clone(),
                    dir.clone(),
                    fault.clone(),
                    served.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match server.recv_timeout(Duration::from_millis(100)) {
                            Ok(Some(req)) => serve(req, &dir, &fault, &served),
                            Ok(None) => {}
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        Mirror {
            base: format!("http://127.0.0.1:{port}"),
            fault,
            served,
            stop,
            threads,
        }
    }

    fn set_fault(&self, f: Fault) {
        *self.fault.lock().expect("fault lock") = f;
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(req: tiny_http::Request, dir: &Path, fault: &Mutex<Fault>, served: &AtomicUsize) {
    let raw = req
        .url()
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches('/');
    let path = percent_decode(raw)
        .filter(|p| !p.is_empty() && p.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
    let fault = fault.lock().expect("fault lock").clone();
    let body = match &path {
        Some(p) if fault == Fault::Missing(p.clone()) => None,
        Some(p) => std::fs::read(dir.join(p)).ok().map(|mut data| {
            if fault == Fault::Corrupt(p.clone()) && !data.is_empty() {
                let mid = data.len() / 2;
                data[mid] ^= 0x01;
            }
            data
        }),
        None => None,
    };
    let _ = match body {
        Some(data) => {
            served.fetch_add(1, Ordering::Relaxed);
            req.respond(tiny_http::Response::from_data(data))
        }
        None => req.respond(tiny_http::Response::empty(404)),
    };
}

/// `%XX` escapes decoded; None when they are malformed or not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `scripts/fetch-assets DIR` with the mirror; its output goes to files beside DIR (a pipe could
/// fill up: a full fetch prints a line per file), and it is killed after SCRIPT_LIMIT.
fn fetch(dir: &Path, mirror: &Mirror) -> Output {
    let logs = dir.parent().expect("DIR has a parent");
    let (out_path, err_path) = (logs.join("fetch.stdout"), logs.join("fetch.stderr"));
    let mut child = Command::new(Path::new(ROOT).join("scripts/fetch-assets"))
        .arg(dir)
        .env("LOOKOUT_ASSETS_MIRROR", &mirror.base)
        .env("no_proxy", "127.0.0.1")
        .env("NO_PROXY", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("run scripts/fetch-assets (it needs python3)");
    let until = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for scripts/fetch-assets") {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scripts/fetch-assets ran past {SCRIPT_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).expect("read stdout"),
        stderr: std::fs::read(&err_path).expect("read stderr"),
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A manifest path that needs no escaping in a URL, other than `not`.
fn plain_path<'a>(entries: &'a [Entry], not: &str) -> &'a str {
    entries
        .iter()
        .map(|e| e.path.as_str())
        .find(|p| {
            *p != not
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-._/".contains(&c))
        })
        .expect("a manifest path without characters to escape")
}

#[test]
fn fetches_every_asset_from_a_mirror_and_names_corrupt_and_missing_files() {
    let Some(src) = common::assets() else { return };
    let entries = manifest();
    let n = entries.len();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("assets");
    let mirror = Mirror::start(src.clone());

    // (a) Everything arrives, byte for byte; a second run fetches nothing.
    let started = Instant::now();
    let out = fetch(&dest, &mirror);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "first fetch failed: {}\n{stderr}",
        out.status
    );
    eprintln!(
        "full fetch of {n} files from the loopback mirror: {:?}",
        started.elapsed()
    );
    assert!(
        stdout.contains(&format!("fetched {n}, already present 0, failed 0")),
        "summary of the first fetch:\n{stdout}"
    );
    for e in &entries {
        let got = std::fs::read(dest.join(&e.path))
            .unwrap_or_else(|err| panic!("{} was not fetched: {err}", e.path));
        let want = std::fs::read(src.join(&e.path)).expect("read source asset");
        assert_eq!(got.len() as u64, e.size, "{}: size", e.path);
        assert!(
            got == want,
            "{}: the fetched bytes differ from {}",
            e.path,
            src.display()
        );
    }
    let written = walk(&dest, 16);
    assert_eq!(
        written.len(),
        n,
        "files in DIR besides the manifest's (temporary names left?)"
    );
    assert_eq!(
        mirror.served.load(Ordering::Relaxed),
        n,
        "requests answered"
    );

    let out = fetch(&dest, &mirror);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "second fetch failed: {}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("fetched 0, already present {n}, failed 0")),
        "summary of the second fetch:\n{stdout}"
    );
    assert_eq!(
        mirror.served.load(Ordering::Relaxed),
        n,
        "the second run downloaded something"
    );

    // (b) One file served with a flipped byte: named, with "checksum", and not left in DIR.
    let corrupt = plain_path(&entries, "");
    std::fs::remove_file(dest.join(corrupt)).expect("remove the file to corrupt");
    mirror.set_fault(Fault::Corrupt(corrupt.to_owned()));
    let out = fetch(&dest, &mirror);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "a corrupted file passed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(corrupt) && l.contains("checksum")),
        "stderr does not name {corrupt} with a checksum error:\n{stderr}"
    );
    assert!(
        !dest.join(corrupt).exists(),
        "the corrupted {corrupt} was kept"
    );
    assert_eq!(
        walk(&dest, 16).len(),
        n - 1,
        "a temporary file was left behind"
    );

    // (c) One file answered 404 (the corrupt one still missing, now served right): its URL named.
    let missing = plain_path(&entries, corrupt);
    std::fs::remove_file(dest.join(missing)).expect("remove the file to miss");
    mirror.set_fault(Fault::Missing(missing.to_owned()));
    let out = fetch(&dest, &mirror);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "a missing file passed:\n{stdout}\n{stderr}"
    );
    let url = format!("{}/{missing}", mirror.base);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&url) && l.contains("404")),
        "stderr does not name {url} with HTTP 404:\n{stderr}"
    );
    assert!(
        dest.join(corrupt).exists(),
        "{corrupt} was not fetched once served right"
    );
    assert!(
        stdout.contains(&format!("fetched 1, already present {}, failed 1", n - 2)),
        "summary of the 404 run:\n{stdout}"
    );
}

#[test]
fn manifest_lists_every_asset_with_its_size() {
    let Some(src) = common::assets() else { return };
    let entries = manifest();
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for e in &entries {
        if !seen.insert(e.path.as_str()) {
            problems.push(format!("{}: listed twice", e.path));
        }
        if e.sha256.len() != 64 || !e.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
            problems.push(format!("{}: sha256 {:?}", e.path, e.sha256));
        }
        if e.url != "-" && !e.url.starts_with("https://") {
            problems.push(format!(
                "{}: url {:?} is neither `-` nor https",
                e.path, e.url
            ));
        }
        match std::fs::metadata(src.join(&e.path)) {
            Ok(m) if m.len() == e.size => {}
            Ok(m) => problems.push(format!(
                "{}: {} bytes here, {} in the manifest",
                e.path,
                m.len(),
                e.size
            )),
            Err(err) => problems.push(format!("{}: {err}", e.path)),
        }
    }
    // Only the reference folder (with its README) must hold nothing else: a fetched cache may
    // keep files an older manifest listed.
    if src.join("README.md").is_file() {
        for (path, _) in walk(&src, 16) {
            if path != "README.md" && !seen.contains(path.as_str()) {
                problems.push(format!("{path}: not in the manifest"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "assets/manifest.tsv does not match {} (regenerate it with scripts/make-asset-manifest):\n  {}",
        src.display(),
        problems.join("\n  ")
    );
}
