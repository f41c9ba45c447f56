//! The live sources through the whole pipeline: `pipe` with real ffmpeg (MJPEG and raw YUYV),
//! restarts of a program that exits (no zombie left), `http_mjpeg` against servers started here
//! on loopback (normal with basic auth, stalling, sending a corrupt part), the `cameras`
//! command, and the example configs. Every wait is bounded in time.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lookout::config::{Config, Origin};
use lookout::daemon;
use lookout::event::Event;
use lookout::metrics::Snapshot;
use lookout::sink::memory::MemorySink;
use lookout::sink::Sink;
use lookout::stop::StopToken;

fn config(text: &str) -> Config {
    Config::parse(text, Origin::File("test.toml".into())).expect("valid test config")
}

/// Runs `cfg` until `done` holds for the counters (or `limit` passes), then stops it.
fn run_until(
    cfg: &Config,
    limit: Duration,
    done: impl Fn(&Snapshot) -> bool,
) -> (Snapshot, Vec<Event>) {
    let memory = MemorySink::new();
    let sinks: Vec<(String, Box<dyn Sink>)> = vec![("memory".into(), Box::new(memory.clone()))];
    let running = daemon::start(cfg, sinks, StopToken::new()).expect("starts");
    let until = Instant::now() + limit;
    while Instant::now() < until && !done(&running.metrics().snapshot()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    running.stop();
    let snap = running.wait(Duration::from_secs(20));
    (snap, memory.events())
}

fn toml_list(args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Children of this process that are zombies (exited, not reaped), as "pid comm".
fn zombie_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may hold spaces, so split after the last ')'.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.len() > 1 && fields[0] == "Z" && fields[1] == me {
            found.push(stat[..close + 1].to_owned());
        }
    }
    found
}

/// Waits (bounded) until no zombie child is left: other tests in this binary may have a child
/// exiting at this very moment, which their source reaps within milliseconds.
fn assert_no_zombies() {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let z = zombie_children();
        if z.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "zombie children left: {z:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const FFMPEG_TESTSRC: &[&str] = &[
    "ffmpeg",
    "-hide_banner",
    "-loglevel",
    "error",
    "-f",
    "lavfi",
    "-i",
    "testsrc=size=320x240:rate=25",
    "-t",
    "2",
];

fn ffmpeg(output: &[&str]) -> String {
    let mut args = FFMPEG_TESTSRC.to_vec();
    args.extend_from_slice(output);
    toml_list(&args)
}

#[test]
fn pipe_reads_mjpeg_from_real_ffmpeg() {
    let cfg = config(&format!(
        "[source]\ntype = \"pipe\"\ncommand = {}\n[pipeline]\nworkers = 1\nframe_queue = 64\n[log]\nsummary_secs = 0\n",
        ffmpeg(&["-f", "mjpeg", "-q:v", "5", "-"])
    ));
    // ffmpeg writes 50 frames (2 s at 25 fps, as fast as it can) and exits.
    let (snap, events) = run_until(&cfg, Duration::from_secs(60), |s| {
        s.captured >= 50 && s.inferred + s.failed + s.dropped >= s.captured
    });
    eprintln!("pipe mjpeg: {snap:?}");
    assert!(snap.captured >= 50, "captured {}", snap.captured);
    assert_eq!(snap.failed, 0, "every JPEG from ffmpeg decodes");
    assert!(snap.inferred >= 10, "inferred {}", snap.inferred);
    assert!(events.iter().all(|e| e.source == "pipe:ffmpeg"));
    assert_no_zombies();
}

#[test]
fn pipe_reads_raw_yuyv_from_real_ffmpeg() {
    let cfg = config(&format!(
        "[source]\ntype = \"pipe\"\ncommand = {}\nformat = \"yuyv422\"\nwidth = 320\nheight = 240\n[pipeline]\nworkers = 1\nframe_queue = 64\n[log]\nsummary_secs = 0\n",
        ffmpeg(&["-pix_fmt", "yuyv422", "-f", "rawvideo", "-"])
    ));
    let (snap, _) = run_until(&cfg, Duration::from_secs(60), |s| {
        s.captured >= 50 && s.inferred + s.failed + s.dropped >= s.captured
    });
    eprintln!("pipe yuyv: {snap:?}");
    assert!(snap.captured >= 50, "captured {}", snap.captured);
    assert_eq!(snap.failed, 0, "every raw frame has the right size");
    assert!(snap.inferred >= 10);
    assert_no_zombies();
}

#[test]
fn pipe_program_that_exits_is_restarted_and_reaped() {
    // ffmpeg writes 5 frames and exits; lookout must start it again, and again.
    let cfg = config(&format!(
        "[source]\ntype = \"pipe\"\ncommand = {}\n[pipeline]\nworkers = 1\nframe_queue = 16\n[log]\nsummary_secs = 0\n",
        ffmpeg(&["-frames:v", "5", "-f", "mjpeg", "-"])
    ));
    let (snap, _) = run_until(&cfg, Duration::from_secs(60), |s| {
        s.reconnects >= 2 && s.captured >= 15
    });
    eprintln!("pipe restart: {snap:?}");
    assert!(snap.reconnects >= 2, "reconnects {}", snap.reconnects);
    assert!(
        snap.captured >= 15,
        "frames resume after each restart: {}",
        snap.captured
    );
    assert!(snap.source_errors >= snap.reconnects);
    assert_eq!(snap.failed, 0);
    assert_no_zombies();
}

#[test]
fn pipe_shell_script_with_children_is_killed_on_stop() {
    // A script whose child (sleep) holds the pipe open: stopping must not wait for it, and the
    // process group is killed.
    let cfg = config(
        "[source]\ntype = \"pipe\"\ncommand = [\"sh\", \"-c\", \"sleep 30; echo never\"]\nstall_timeout_secs = 30\n[log]\nsummary_secs = 0\n",
    );
    let t0 = Instant::now();
    let (snap, _) = run_until(&cfg, Duration::from_millis(500), |_| false);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        t0.elapsed()
    );
    assert_eq!(snap.captured, 0);
    assert_no_zombies();
}

// ---- http_mjpeg -------------------------------------------------------------------------------

fn jpeg(shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(160, 120, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 2) as u8, shade])
    });
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 85)
        .encode_image(&img)
        .expect("encode");
    buf
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Parts with Content-Length, every `corrupt_every`-th part garbage (0: none); requires basic auth
    /// `user:secret` when `auth`.
    Normal {
        corrupt_every: usize,
        auth: bool,
        with_length: bool,
    },
    /// The first connection sends 3 parts then goes silent (keeping the connection); later
    /// connections behave normally.
    StallFirst,
}

/// An MJPEG-over-HTTP server on 127.0.0.1, port 0. Serves connections for at most `life`.
fn serve(behaviour: Behaviour, life: Duration) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let handle = std::thread::spawn(move || {
        let until = Instant::now() + life;
        let mut conn = 0usize;
        let mut handlers = Vec::new();
        while Instant::now() < until {
            match listener.accept() {
                Ok((stream, _)) => {
                    let n = conn;
                    conn += 1;
                    handlers.push(std::thread::spawn(move || {
                        let _ = handle_conn(stream, behaviour, n, until);
                    }));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        for h in handlers {
            let _ = h.join();
        }
    });
    (port, handle)
}

fn handle_conn(
    mut stream: TcpStream,
    behaviour: Behaviour,
    conn: usize,
    until: Instant,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") && request.len() < 8192 {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        request.push(byte[0]);
    }
    let request = String::from_utf8_lossy(&request).into_owned();
    if let Behaviour::Normal { auth: true, .. } = behaviour {
        // "user:secret" in base64.
        if !request.contains("Authorization: Basic dXNlcjpzZWNyZXQ=\r\n") {
            stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
    }
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\nCache-Control: no-cache\r\n\r\n")?;
    let frames = [jpeg(0), jpeg(128), jpeg(255)];
    let mut part = 0usize;
    while Instant::now() < until {
        let (corrupt_every, with_length) = match behaviour {
            Behaviour::Normal {
                corrupt_every,
                with_length,
                ..
            } => (corrupt_every, with_length),
            Behaviour::StallFirst => {
                if conn == 0 && part == 3 {
                    // Silent, connection held open, until the client gives up (or the end).
                    while Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(50));
                        if stream.write_all(b"").is_err() {
                            break;
                        }
                    }
                    return Ok(());
                }
                (0, true)
            }
        };
        let body: Vec<u8> = if corrupt_every > 0 && part % corrupt_every == corrupt_every - 1 {
            b"\xFF\xD8 this part is not a JPEG image at all".to_vec()
        } else {
            frames[part % frames.len()].clone()
        };
        let mut head = String::from("--frame\r\nContent-Type: image/jpeg\r\n");
        if with_length {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(&body)?;
        stream.write_all(b"\r\n")?;
        part += 1;
        std::thread::sleep(Duration::from_millis(40));
    }
    Ok(())
}

fn http_config(port: u16, extra: &str) -> Config {
    config(&format!(
        "[source]\ntype = \"http_mjpeg\"\nurl = \"http://127.0.0.1:{port}/stream\"\n{extra}\n[pipeline]\nworkers = 1\nframe_queue = 32\n[log]\nsummary_secs = 0\n"
    ))
}

#[test]
fn http_mjpeg_stream_with_basic_auth_is_classified() {
    let (port, server) = serve(
        Behaviour::Normal {
            corrupt_every: 0,
            auth: true,
            with_length: true,
        },
        Duration::from_secs(20),
    );
    std::env::set_var("LOOKOUT_TEST_CAMERA_PASSWORD", "secret");
    let cfg = http_config(port, "username = \"user\"\npassword_env = \"LOOKOUT_TEST_CAMERA_PASSWORD\"\nstall_timeout_secs = 5");
    let (snap, events) = run_until(&cfg, Duration::from_secs(30), |s| s.inferred >= 20);
    eprintln!("http: {snap:?}");
    assert!(snap.inferred >= 20, "inferred {}", snap.inferred);
    assert_eq!(snap.failed, 0);
    assert_eq!(snap.reconnects, 0);
    assert!(events
        .iter()
        .all(|e| e.source.starts_with("http_mjpeg:http://127.0.0.1:")));
    drop(server);
}

#[test]
fn http_mjpeg_wrong_password_fails_at_start() {
    let (port, _server) = serve(
        Behaviour::Normal {
            corrupt_every: 0,
            auth: true,
            with_length: true,
        },
        Duration::from_secs(10),
    );
    let cfg = http_config(port, "username = \"user\"\npassword = \"wrong\"");
    let err = match daemon::start(&cfg, Vec::new(), StopToken::new()) {
        Ok(_) => panic!("a 401 must fail the start"),
        Err(e) => lookout::retry::chain(&e),
    };
    assert!(
        err.contains("401") && err.contains("username and password"),
        "{err}"
    );
}

#[test]
fn http_mjpeg_stall_is_reconnected() {
    let (port, _server) = serve(Behaviour::StallFirst, Duration::from_secs(30));
    let cfg = http_config(port, "stall_timeout_secs = 1");
    let (snap, _) = run_until(&cfg, Duration::from_secs(30), |s| {
        s.reconnects >= 1 && s.inferred >= 8
    });
    eprintln!("http stall: {snap:?}");
    assert!(snap.source_errors >= 1, "the stall is a source error");
    assert!(snap.reconnects >= 1, "reconnected after the stall");
    assert!(
        snap.inferred >= 8,
        "frames resume after reconnecting: {}",
        snap.inferred
    );
    assert_eq!(snap.failed, 0);
}

#[test]
fn http_mjpeg_corrupt_parts_are_counted_and_the_stream_goes_on() {
    for with_length in [true, false] {
        let (port, _server) = serve(
            Behaviour::Normal {
                corrupt_every: 4,
                auth: false,
                with_length,
            },
            Duration::from_secs(30),
        );
        let cfg = http_config(port, "stall_timeout_secs = 5");
        let (snap, _) = run_until(&cfg, Duration::from_secs(30), |s| {
            s.failed >= 2 && s.inferred >= 6
        });
        eprintln!("http corrupt (with_length={with_length}): {snap:?}");
        assert!(
            snap.failed >= 2,
            "corrupt parts fail in the worker and are counted: {snap:?}"
        );
        assert!(
            snap.inferred >= 6,
            "good parts around them are classified: {snap:?}"
        );
        assert_eq!(
            snap.reconnects, 0,
            "a corrupt part does not break the stream"
        );
    }
}

// ---- camera -----------------------------------------------------------------------------------

#[test]
fn cameras_command_exits_zero_and_explains_when_there_is_none() {
    let out = common::lookout_command()
        .arg("cameras")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let has_video = std::fs::read_dir("/dev")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("video"))
        })
        .unwrap_or(false);
    if !has_video {
        assert!(stdout.contains("No cameras"), "{stdout}");
    }
}

/// Opens a real camera and classifies 100 frames. On a Raspberry Pi (or any Linux machine)
/// with a USB webcam, or a CSI camera with its V4L2 driver, at /dev/video0:
///
/// ```text
/// cargo test --test sources -- --ignored camera_hardware --nocapture
/// ```
/// `LOOKOUT_TEST_CAMERA` picks another device (index, /dev/videoN or name).
#[test]
#[ignore = "needs a camera at /dev/video0 (or LOOKOUT_TEST_CAMERA)"]
fn camera_hardware() {
    let device = std::env::var("LOOKOUT_TEST_CAMERA").unwrap_or_else(|_| "0".into());
    let device = if device.parse::<u32>().is_ok() {
        device
    } else {
        format!("{device:?}")
    };
    let cfg = config(&format!("[source]\ntype = \"camera\"\ndevice = {device}\nwidth = 640\nheight = 480\nfps = 30\n[log]\nsummary_secs = 0\n"));
    let (snap, events) = run_until(&cfg, Duration::from_secs(120), |s| s.inferred >= 100);
    eprintln!("camera: {snap:?}");
    assert!(snap.inferred >= 100, "{snap:?}");
    assert_eq!(snap.failed, 0);
    assert!(events.len() >= 100);
}

// ---- example configs --------------------------------------------------------------------------

#[test]
fn every_example_config_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("config/examples")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for file in &files {
        Config::load(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let out = common::lookout_command()
            .args(["check", "--config"])
            .arg(file)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "lookout check --config {} failed:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
