//! Hostile inputs (issue #35): a `pipe` source fed random bytes, a JPEG stream with images cut
//! short, and an HTTP MJPEG camera announcing a 1 GB part. Each runs a real `lookout run` on a
//! real program or a real loopback HTTP server (no mocks) and checks three things: the daemon's
//! peak memory (VmHWM in /proc) grows by less than the bad input it was fed, so nothing
//! buffered it; good frames after the bad input are classified on the same stream (no
//! reconnection); and the bad input is counted in `/metrics`. Waits are bounded; nothing asserts
//! on speed.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{get_json, log_of, sample, wait_metrics, wait_until, Daemon};

/// The largest frame the sources under test accept (`source.max_frame_bytes`).
const MAX_FRAME: usize = 1_000_000;
/// How much the daemon's peak memory may grow while it is fed the bad input. What it may
/// legitimately hold at once is a frame being split (at most `MAX_FRAME` plus a read) and a few
/// frames in queues; each bad input below is larger than this, so holding it would exceed it.
const GROWTH_LIMIT_KB: u64 = 32 * 1024;

/// A field of /proc/PID/status in kB (`VmHWM`: peak resident memory; `VmRSS`: now).
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A 160x120 JPEG with a pattern of its own (`shade`).
fn jpeg(shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(160, 120, |x, y| {
        image::Rgb([(x as u8).wrapping_mul(3), (y as u8).wrapping_mul(2), shade])
    });
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 85)
        .encode_image(&img)
        .expect("encode");
    buf
}

/// `n` pseudo-random bytes (xorshift64, fixed seed: the same bytes on every run).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A source program: `body` run by sh, which first records its pid in `dir/<name>.pgid` (it is
/// its process group's id: the pipe source starts it in a group of its own).
fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let pgid = dir.join(format!("{name}.pgid"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho $$ > '{}'\n{body}\n", pgid.display()),
    )
    .expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

/// Kills the process group a [`script`] recorded, when dropped: the daemon is killed with
/// SIGKILL at the end of a test, so it cannot stop its source program itself.
struct Reap(std::path::PathBuf);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(pgid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|&g| g > 1)
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
        }
    }
}

fn pipe_source(program: &str) -> String {
    format!(
        r#"
        [source]
        type = "pipe"
        command = [{program:?}]
        max_frame_bytes = {MAX_FRAME}
        stall_timeout_secs = 60
        "#
    )
}

/// Peak memory before and after, checked against [`GROWTH_LIMIT_KB`], printed for the figures.
fn assert_memory_bounded(pid: u32, before_kb: u64, fed: usize, what: &str, log: &str) {
    let after_kb = status_kb(pid, "VmHWM");
    let rss_kb = status_kb(pid, "VmRSS");
    eprintln!(
        "{what}: fed {} MB; peak memory {} -> {} MB (growth {} MB, limit {} MB); resident now {} MB",
        fed / 1_000_000,
        before_kb / 1024,
        after_kb / 1024,
        after_kb.saturating_sub(before_kb) / 1024,
        GROWTH_LIMIT_KB / 1024,
        rss_kb / 1024
    );
    assert!(
        (fed as u64) / 1024 > GROWTH_LIMIT_KB,
        "the bad input must be larger than the limit, or the check proves nothing"
    );
    assert!(
        after_kb.saturating_sub(before_kb) < GROWTH_LIMIT_KB,
        "{what}: peak memory grew from {before_kb} kB to {after_kb} kB\n{log}"
    );
}

#[test]
fn a_pipe_fed_random_bytes_keeps_its_memory_counts_them_and_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.jpg");
    std::fs::write(&good, jpeg(40)).expect("good.jpg");
    // 48 MB of noise, with a few start-of-image markers planted in it: those become broken
    // images that reach the workers and fail there.
    const NOISE: usize = 48_000_000;
    let mut noise = random_bytes(NOISE, 0x5eed);
    for k in 1..=6 {
        let at = k * 7_000_000;
        noise[at..at + 3].copy_from_slice(&[0xFF, 0xD8, 0xFF]);
    }
    let noise_file = dir.path().join("noise.bin");
    std::fs::write(&noise_file, &noise).expect("noise");
    let (trigger, fed) = (dir.path().join("trigger"), dir.path().join("fed"));
    let prog = script(
        dir.path(),
        "noisy.sh",
        &format!(
            "while [ ! -e '{t}' ]; do cat '{g}' || exit 0; sleep 0.1; done\ncat '{n}'\ntouch '{f}'\nwhile cat '{g}'; do sleep 0.1; done",
            t = trigger.display(),
            g = good.display(),
            n = noise_file.display(),
            f = fed.display()
        ),
    );
    let _reap = Reap(dir.path().join("noisy.sh.pgid"));
    let d = Daemon::start(dir.path(), &pipe_source(&prog), "", &[]);
    wait_metrics(&d, dir.path(), "good frames classified first", |m| {
        sample(m, "lookout_frames_classified_total") >= 5.0
    });
    let before_kb = status_kb(d.child.id(), "VmHWM");
    std::fs::write(&trigger, b"").expect("trigger");
    assert!(
        wait_until(Duration::from_secs(60), || fed.exists()),
        "the noise was written"
    );
    let m = wait_metrics(&d, dir.path(), "the noise is counted", |m| {
        sample(m, "lookout_source_skipped_bytes_total") >= (NOISE as f64) * 0.75
    });
    let classified = sample(&m, "lookout_frames_classified_total");
    let m = wait_metrics(
        &d,
        dir.path(),
        "good frames classified after the noise",
        |m| sample(m, "lookout_frames_classified_total") >= classified + 5.0,
    );
    let log = log_of(dir.path());
    eprintln!(
        "pipe, random bytes: skipped_bytes {} failed {}",
        sample(&m, "lookout_source_skipped_bytes_total"),
        sample(&m, "lookout_frames_failed_total")
    );
    assert_memory_bounded(d.child.id(), before_kb, NOISE, "pipe, random bytes", &log);
    assert!(
        sample(&m, "lookout_frames_failed_total") >= 1.0,
        "broken images in the noise reach the workers and are counted as failed\n{m}"
    );
    assert_eq!(
        sample(&m, "lookout_source_errors_total"),
        0.0,
        "the same program's output goes on: no restart\n{log}"
    );
    let status = get_json(&format!("{}/api/status", d.base));
    assert!(
        status["counters"]["skipped_bytes"].as_f64().unwrap_or(0.0) >= (NOISE as f64) * 0.75,
        "{status}"
    );
}

#[test]
fn jpegs_cut_short_are_counted_as_failed_and_the_frames_after_them_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = jpeg(90);
    let dqt = good
        .windows(2)
        .position(|w| w == [0xFF, 0xDB])
        .expect("a quantisation table");
    let pieces = [
        ("good.jpg", good.clone()),
        // Half an image: cut in its entropy-coded data.
        ("half.jpg", good[..good.len() / 2].to_vec()),
        // Cut inside a header segment, whose length then reads into the next image.
        ("head.jpg", good[..dqt + 10].to_vec()),
        ("other.jpg", jpeg(200)),
    ];
    for (name, data) in &pieces {
        std::fs::write(dir.path().join(name), data).expect("write piece");
    }
    let p = |name: &str| dir.path().join(name).display().to_string();
    let (trigger, count) = (p("trigger"), p("count"));
    // Good frames (counted) until the trigger, then: half, good, cut header, other, good, good;
    // then silence (the stall timeout is longer than the test).
    let prog = script(
        dir.path(),
        "cutter.sh",
        &format!(
            "n=0\nwhile [ ! -e '{trigger}' ]; do cat '{g}' || exit 0; n=$((n+1)); echo $n > '{count}'; sleep 0.1; done\n\
             for f in half good head other good good; do cat \"{dir}/$f.jpg\"; sleep 0.2; done\n\
             echo done >> '{count}'\nexec sleep 300",
            g = p("good.jpg"),
            dir = dir.path().display()
        ),
    );
    let _reap = Reap(dir.path().join("cutter.sh.pgid"));
    let d = Daemon::start(dir.path(), &pipe_source(&prog), "", &[]);
    wait_metrics(&d, dir.path(), "good frames classified first", |m| {
        sample(m, "lookout_frames_classified_total") >= 3.0
    });
    std::fs::write(&trigger, b"").expect("trigger");
    let mut written = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            written = std::fs::read_to_string(&count).unwrap_or_default();
            written.contains("done")
        }),
        "the script wrote its pieces"
    );
    let first: f64 = written
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("good frames before the trigger");
    // Six pieces after those: two broken, four whole.
    let want = first + 6.0;
    let m = wait_metrics(&d, dir.path(), "every piece reached the pipeline", |m| {
        let settled = sample(m, "lookout_frames_classified_total")
            + sample(m, "lookout_frames_failed_total")
            + sample(m, "lookout_frames_dropped_total");
        sample(m, "lookout_frames_captured_total") >= want && settled >= want
    });
    let log = log_of(dir.path());
    let (captured, classified, failed, dropped) = (
        sample(&m, "lookout_frames_captured_total"),
        sample(&m, "lookout_frames_classified_total"),
        sample(&m, "lookout_frames_failed_total"),
        sample(&m, "lookout_frames_dropped_total"),
    );
    eprintln!(
        "cut JPEGs: written {want}, captured {captured}, classified {classified}, failed {failed}, dropped {dropped}"
    );
    assert_eq!(
        captured, want,
        "each broken image is one frame, and none takes the image after it along\n{log}"
    );
    assert_eq!(
        classified + failed + dropped,
        captured,
        "every frame accounted for"
    );
    assert!(
        failed >= 2.0 - dropped && failed <= 2.0,
        "the two broken images fail in the workers and are counted there\n{m}"
    );
    assert!(
        classified >= first + 4.0 - dropped,
        "the four whole images after the trigger are classified\n{m}"
    );
    assert_eq!(sample(&m, "lookout_source_errors_total"), 0.0, "{log}");
}

/// A loopback MJPEG camera for one connection: good parts every 100 ms; when `bad` is set, one
/// part whose Content-Length claims 1 GB followed by `junk` bytes (not a frame, no delimiter),
/// then good parts again. Sets `sent_bad` once the junk is written. Further connections are
/// refused (the listener is closed after the first), so recovery has to happen on the stream.
fn lying_camera(
    junk: usize,
    bad: Arc<AtomicBool>,
    sent_bad: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let thread = std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        drop(listener);
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&b[..n]),
            }
        }
        let frame = jpeg(150);
        let part = |s: &mut std::net::TcpStream| {
            let mut p = format!(
                "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                frame.len()
            )
            .into_bytes();
            p.extend_from_slice(&frame);
            p.extend_from_slice(b"\r\n");
            s.write_all(&p)
        };
        let ok = s.write_all(
            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n",
        );
        if ok.is_err() {
            return;
        }
        let mut bad_done = false;
        while !stop.load(Ordering::SeqCst) {
            if bad.load(Ordering::SeqCst) && !bad_done {
                let header =
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000000\r\n\r\n";
                if s.write_all(header).is_err() {
                    return;
                }
                let noise = random_bytes(junk, 0xbad);
                for c in noise.chunks(64 * 1024) {
                    if s.write_all(c).is_err() {
                        return;
                    }
                }
                if s.write_all(b"\r\n").is_err() {
                    return;
                }
                bad_done = true;
                sent_bad.store(true, Ordering::SeqCst);
            }
            if part(&mut s).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (port, thread)
}

#[test]
fn an_mjpeg_part_claiming_a_gigabyte_is_skipped_counted_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    const JUNK: usize = 64_000_000;
    let (bad, sent_bad, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (port, camera) = lying_camera(
        JUNK,
        Arc::clone(&bad),
        Arc::clone(&sent_bad),
        Arc::clone(&stop),
    );
    let d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            [source]
            type = "http_mjpeg"
            url = "http://127.0.0.1:{port}/stream"
            max_frame_bytes = {MAX_FRAME}
            stall_timeout_secs = 60
            "#
        ),
        "",
        &[],
    );
    wait_metrics(&d, dir.path(), "good parts classified first", |m| {
        sample(m, "lookout_frames_classified_total") >= 5.0
    });
    let before_kb = status_kb(d.child.id(), "VmHWM");
    bad.store(true, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(60), || sent_bad.load(Ordering::SeqCst)),
        "the camera sent its lying part\n{}",
        log_of(dir.path())
    );
    let m = wait_metrics(&d, dir.path(), "the lying part is counted", |m| {
        sample(
            m,
            "lookout_source_frames_rejected_total{reason=\"oversized\"}",
        ) == 1.0
            && sample(m, "lookout_source_skipped_bytes_total") >= JUNK as f64
    });
    let classified = sample(&m, "lookout_frames_classified_total");
    let m = wait_metrics(&d, dir.path(), "good parts classified after it", |m| {
        sample(m, "lookout_frames_classified_total") >= classified + 5.0
    });
    stop.store(true, Ordering::SeqCst);
    let log = log_of(dir.path());
    eprintln!(
        "http_mjpeg, 1 GB Content-Length: rejected {} skipped_bytes {}",
        sample(
            &m,
            "lookout_source_frames_rejected_total{reason=\"oversized\"}"
        ),
        sample(&m, "lookout_source_skipped_bytes_total")
    );
    assert_memory_bounded(
        d.child.id(),
        before_kb,
        JUNK,
        "http_mjpeg, 1 GB Content-Length",
        &log,
    );
    assert_eq!(
        (
            sample(&m, "lookout_source_errors_total"),
            sample(&m, "lookout_source_reconnects_total")
        ),
        (0.0, 0.0),
        "the stream resumed at the next part, without reconnecting\n{log}"
    );
    assert_eq!(
        sample(
            &m,
            "lookout_source_frames_rejected_total{reason=\"malformed\"}"
        ),
        0.0
    );
    assert!(
        log.contains("reason=oversized"),
        "the skip is logged:\n{log}"
    );
    let status = get_json(&format!("{}/api/status", d.base));
    assert_eq!(status["counters"]["rejected_oversized"], 1, "{status}");
    // The same counts per source, by the source's name.
    let source = &status["counters"]["sources"][0];
    assert_eq!(source["rejected_oversized"], 1, "{status}");
    let name = source["name"].as_str().expect("the source's name");
    assert_eq!(
        sample(
            &m,
            &format!(
                "lookout_source_frames_rejected_by_source_total{{source=\"{name}\",reason=\"oversized\"}}"
            )
        ),
        1.0
    );
    assert!(
        sample(
            &m,
            &format!("lookout_source_skipped_bytes_by_source_total{{source=\"{name}\"}}")
        ) >= JUNK as f64
    );
    drop(d);
    let _ = camera.join();
}
