//! The `pipe` source: frames from the standard output of a program (ffmpeg, rpicam-vid,
//! gst-launch-1.0 ...).
//!
//! The program is started from an argument list (never through a shell), in its own process
//! group, with its standard output read as an MJPEG stream (split by [`super::mjpeg`]) or as
//! fixed-size raw frames. Its standard error is logged at `debug` by a thread of its own, and the
//! last lines are kept for the error message when it exits. Reading happens on a producer thread
//! ([`super::feed`]), so a silent program never blocks shutdown: no frame for
//! `stall_timeout_secs`, or the program's exit, is an error from `next_frame`, and the capture
//! thread closes the source (the process group is killed and the child reaped) and starts it
//! again with back-off. This is how RTSP cameras, CSI cameras and video files are read.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::feed::{Feed, FeedTx, Next};
use super::mjpeg::{JpegSplitter, Piece};
use super::{FrameSource, SourceError};
use crate::frame::{Frame, PixelFormat};
use crate::metrics::{InputStats, Rejected};
use crate::problems::Problems;
use crate::stop::StopToken;

/// How a program's output is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PipeFormat {
    /// JPEG images back to back (`ffmpeg -f mjpeg -`, `rpicam-vid --codec mjpeg -o -`).
    #[default]
    Mjpeg,
    /// Raw packed RGB, 3 bytes a pixel (`ffmpeg -pix_fmt rgb24 -f rawvideo -`).
    Rgb24,
    /// Raw packed YUYV 4:2:2 (`-pix_fmt yuyv422 -f rawvideo`).
    Yuyv422,
    /// Raw NV12 4:2:0 (`-pix_fmt nv12 -f rawvideo`).
    Nv12,
    /// Raw 8-bit grey (`-pix_fmt gray -f rawvideo`).
    Gray,
}

impl PipeFormat {
    pub fn pixel_format(self) -> PixelFormat {
        match self {
            PipeFormat::Mjpeg => PixelFormat::Mjpeg,
            PipeFormat::Rgb24 => PixelFormat::Rgb24,
            PipeFormat::Yuyv422 => PixelFormat::Yuyv422,
            PipeFormat::Nv12 => PixelFormat::Nv12,
            PipeFormat::Gray => PixelFormat::Gray8,
        }
    }
}

/// `type = "pipe"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeConfig {
    /// The program and its arguments, as a list: `["ffmpeg", "-i", "rtsp://...", "-f", "mjpeg",
    /// "-"]`. It is run directly, not through a shell; the program is looked up in `PATH`.
    pub command: Vec<String>,
    /// What the program writes to its standard output: "mjpeg" (JPEG images back to back) or raw
    /// frames "rgb24" | "yuyv422" | "nv12" | "gray". Default "mjpeg".
    #[serde(default)]
    pub format: PipeFormat,
    /// Frame width in pixels; required for raw formats (ignored for mjpeg).
    #[serde(default)]
    pub width: u32,
    /// Frame height in pixels; required for raw formats (ignored for mjpeg).
    #[serde(default)]
    pub height: u32,
    /// Seconds without a frame after which the program is considered stalled: it is killed and
    /// started again. Also the time the first frame may take. Default 10.
    #[serde(default = "default_stall")]
    pub stall_timeout_secs: f64,
    /// Largest JPEG image accepted, in bytes; bigger ones are dropped. Default 16000000.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
}

pub(crate) fn default_stall() -> f64 {
    10.0
}
fn default_max_frame() -> usize {
    16_000_000
}

/// Validates a `stall_timeout_secs` key.
pub(crate) fn validate_stall(key: &str, secs: f64, p: &mut Problems) {
    if !(secs.is_finite() && (0.1..=3600.0).contains(&secs)) {
        p.push(
            format!("{key}.stall_timeout_secs"),
            format!("expected seconds from 0.1 to 3600, got {secs}"),
        );
    }
}

impl PipeConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if self.command.first().is_none_or(|c| c.trim().is_empty()) {
            p.push(
                format!("{key}.command"),
                "must list the program and its arguments, e.g. [\"ffmpeg\", \"-i\", \"rtsp://camera/stream\", \"-f\", \"mjpeg\", \"-\"]",
            );
        }
        if self.format != PipeFormat::Mjpeg {
            if self.width == 0 || self.height == 0 {
                p.push(format!("{key}.width"), "width and height are required for raw formats (the size of the frames the program writes)");
            } else {
                p.range(&format!("{key}.width"), self.width, 2, 16384);
                p.range(&format!("{key}.height"), self.height, 2, 16384);
            }
            if matches!(self.format, PipeFormat::Yuyv422 | PipeFormat::Nv12)
                && !self.width.is_multiple_of(2)
            {
                p.push(format!("{key}.width"), "must be even for yuyv422 and nv12");
            }
            if self.format == PipeFormat::Nv12 && !self.height.is_multiple_of(2) {
                p.push(format!("{key}.height"), "must be even for nv12");
            }
        }
        validate_stall(key, self.stall_timeout_secs, p);
        p.range(
            &format!("{key}.max_frame_bytes"),
            self.max_frame_bytes,
            1024,
            256_000_000,
        );
    }

    fn program(&self) -> &str {
        self.command.first().map_or("", String::as_str)
    }
}

/// Lines of the program's standard error kept for the error message when it exits.
const STDERR_TAIL: usize = 8;

pub struct PipeSource {
    cfg: PipeConfig,
    /// Where the reader thread counts oversized frames and skipped bytes (see
    /// [`FrameSource::count_into`]); a private one until the pipeline gives its own.
    stats: Arc<InputStats>,
    child: Option<Child>,
    feed: Option<Feed>,
    /// Last lines of the program's standard error: pushed by the stderr thread, read by the
    /// capture thread when the program exits. A new buffer for each start.
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Disconnects when the stderr thread has read the program's last line.
    stderr_done: Option<crossbeam_channel::Receiver<()>>,
}

/// How long an exit waits for the stderr thread to read the program's last messages (longer
/// only when a child of the program keeps stderr open after it exited).
const STDERR_DRAIN: Duration = Duration::from_millis(500);

impl PipeSource {
    pub fn new(cfg: PipeConfig) -> PipeSource {
        PipeSource {
            cfg,
            stats: Arc::default(),
            child: None,
            feed: None,
            stderr_tail: Arc::default(),
            stderr_done: None,
        }
    }

    fn tail(&self) -> String {
        let lines = self
            .stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        if lines.is_empty() {
            "(nothing on stderr)".into()
        } else {
            lines.join(" | ")
        }
    }

    /// The program's exit status, waiting briefly for it to exit after its output closed.
    fn exit_status(&mut self) -> String {
        let Some(child) = self.child.as_mut() else {
            return "not running".into();
        };
        let until = Instant::now() + Duration::from_millis(500);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => return "still running with its output closed".into(),
                Err(e) => return format!("unknown ({e})"),
            }
        }
    }
}

/// Reads stdout into frames until end of output, an error, or `quit`. What the splitter throws
/// away (oversized images, bytes outside any image) is counted in `stats`.
fn produce(stdout: ChildStdout, cfg: PipeConfig, stats: Arc<InputStats>, tx: FeedTx) {
    let mut stdout = stdout;
    let program = cfg.program().to_owned();
    let read_error = |e: std::io::Error| SourceError::Io {
        what: format!("cannot read the output of {program}"),
        source: e,
    };
    match cfg.format.pixel_format().frame_len(cfg.width, cfg.height) {
        None => {
            let mut splitter = JpegSplitter::new(cfg.max_frame_bytes);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = match stdout.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tx.send(Err(read_error(e)));
                        return;
                    }
                };
                splitter.push(&chunk[..n]);
                while let Some(piece) = splitter.next_piece() {
                    stats.skipped(std::mem::take(&mut splitter.skipped));
                    let data = match piece {
                        // A corrupt piece goes on: the worker that fails to decode it counts it.
                        Piece::Jpeg(d) | Piece::Corrupt(d) => d,
                        Piece::Oversize(n) => {
                            stats.reject(Rejected::Oversized);
                            log::warn!(
                                "Dropped an oversized JPEG frame; raise source.max_frame_bytes if this is expected. program={program} bytes={n} limit={}",
                                cfg.max_frame_bytes
                            );
                            continue;
                        }
                    };
                    if !tx.send(Ok(Frame::new(PixelFormat::Mjpeg, 0, 0, data))) {
                        return;
                    }
                }
                stats.skipped(std::mem::take(&mut splitter.skipped));
            }
        }
        Some(len) => loop {
            let mut data = vec![0u8; len];
            let mut filled = 0;
            while filled < len {
                match stdout.read(&mut data[filled..]) {
                    Ok(0) => return,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tx.send(Err(read_error(e)));
                        return;
                    }
                }
            }
            if !tx.send(Ok(Frame::new(
                cfg.format.pixel_format(),
                cfg.width,
                cfg.height,
                data,
            ))) {
                return;
            }
        },
    }
}

/// Where `program` would run from: itself when it contains a '/', else the first executable
/// match in PATH. Checked before spawning, so a missing program is reported the same way on
/// every platform (under qemu-user emulation, spawning cannot report a failed exec).
fn find_program(program: &str) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return if executable(std::path::Path::new(program)) {
            Ok(program.into())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no executable file there",
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("not found in PATH ({})", path.to_string_lossy()),
            )
        })
}

impl FrameSource for PipeSource {
    fn describe(&self) -> String {
        format!("pipe:{}", self.cfg.program())
    }

    fn live(&self) -> bool {
        true
    }

    fn count_into(&mut self, stats: Arc<InputStats>) {
        self.stats = stats;
    }

    fn open(&mut self) -> Result<(), SourceError> {
        self.close();
        let program = self.cfg.program().to_owned();
        let not_started = |source| {
            SourceError::Io {
            what: format!("cannot start {program:?}: check `source.command` and that the program is installed and in PATH"),
            source,
        }
        };
        find_program(&program).map_err(not_started)?;
        let mut cmd = Command::new(&program);
        cmd.args(self.cfg.command.get(1..).unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, so that closing kills the program's own children too.
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(not_started)?;
        log::debug!("Program started. program={program} pid={}", child.id());
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        self.stderr_tail = Arc::clone(&tail);
        if let Some(stderr) = child.stderr.take() {
            let prog = program.clone();
            let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
            self.stderr_done = Some(done_rx);
            // Ends at end of the program's stderr (when it and its children exit); not joined.
            let spawned = std::thread::Builder::new()
                .name("pipe-stderr".into())
                .spawn(move || {
                    let _done = done_tx;
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        log::debug!("Program output. program={prog} line={line:?}");
                        if let Ok(mut t) = tail.lock() {
                            if t.len() == STDERR_TAIL {
                                t.pop_front();
                            }
                            t.push_back(line);
                        }
                    }
                });
            if let Err(e) = spawned {
                log::warn!("Cannot start the thread reading the program's stderr; its messages are lost. program={program} error={e}");
            }
        }
        let Some(stdout) = child.stdout.take() else {
            self.child = Some(child);
            self.close();
            return Err(SourceError::Input(format!(
                "{program}: no standard output pipe"
            )));
        };
        self.child = Some(child);
        let cfg = self.cfg.clone();
        let stats = Arc::clone(&self.stats);
        match Feed::spawn("pipe-reader", move |tx| produce(stdout, cfg, stats, tx)) {
            Ok(feed) => self.feed = Some(feed),
            Err(e) => {
                self.close();
                return Err(e);
            }
        }
        Ok(())
    }

    fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, SourceError> {
        let stall = Duration::from_secs_f64(self.cfg.stall_timeout_secs);
        let Some(feed) = self.feed.as_mut() else {
            return Err(SourceError::Input(format!(
                "{} is not running",
                self.cfg.program()
            )));
        };
        match feed.next(stop, stall) {
            Next::Frame(f) => Ok(Some(f)),
            Next::Stopped => Ok(None),
            Next::Failed(e) => Err(e),
            Next::Stalled(waited) => Err(SourceError::Stalled {
                what: self.describe(),
                secs: waited.as_secs_f64(),
            }),
            Next::Ended => {
                let status = self.exit_status();
                // The program's last messages may still be on their way through the pipe.
                if let Some(done) = self.stderr_done.take() {
                    let _ = done.recv_timeout(STDERR_DRAIN);
                }
                Err(SourceError::Exited {
                    program: self.cfg.program().to_owned(),
                    status,
                    stderr: self.tail(),
                })
            }
        }
    }

    fn close(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            if let Ok(None) = child.try_wait() {
                kill_group(pid);
                let _ = child.kill();
            }
            // Reap it: no zombie is left behind.
            match child.wait() {
                Ok(status) => log::debug!(
                    "Program stopped. program={} pid={pid} status={status}",
                    self.cfg.program()
                ),
                Err(e) => log::warn!(
                    "Cannot reap the program. program={} pid={pid} error={e}",
                    self.cfg.program()
                ),
            }
        }
        if let Some(mut feed) = self.feed.take() {
            feed.close(Duration::from_secs(2));
        }
    }
}

impl Drop for PipeSource {
    fn drop(&mut self) {
        self.close();
    }
}

/// Sends SIGKILL to the process group led by `pid` (the program and what it started).
fn kill_group(pid: u32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    const SIGKILL: i32 = 9;
    let Ok(pgid) = i32::try_from(pid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and has no memory effects; -pgid names the group the
    // child leads (it was started with process_group(0)), which is not ours.
    unsafe {
        kill(-pgid, SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(command: &[&str], format: PipeFormat, w: u32, h: u32) -> PipeConfig {
        PipeConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            format,
            width: w,
            height: h,
            stall_timeout_secs: 2.0,
            max_frame_bytes: default_max_frame(),
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let cases: &[(PipeConfig, &str)] = &[
            (cfg(&[], PipeFormat::Mjpeg, 0, 0), "command"),
            (
                cfg(&["ffmpeg"], PipeFormat::Rgb24, 0, 0),
                "width and height are required",
            ),
            (cfg(&["ffmpeg"], PipeFormat::Yuyv422, 321, 240), "even"),
            (
                cfg(&["ffmpeg"], PipeFormat::Nv12, 320, 241),
                "even for nv12",
            ),
            (
                PipeConfig {
                    stall_timeout_secs: 0.0,
                    ..cfg(&["x"], PipeFormat::Mjpeg, 0, 0)
                },
                "stall_timeout_secs",
            ),
        ];
        for (c, want) in cases {
            let mut p = Problems::default();
            c.validate("source", &mut p);
            assert!(
                p.0.iter()
                    .any(|x| x.message.contains(want) || x.key.contains(want)),
                "{want}: {:?}",
                p.0
            );
        }
        let mut p = Problems::default();
        cfg(&["ffmpeg", "-i", "x"], PipeFormat::Mjpeg, 0, 0).validate("source", &mut p);
        assert!(p.is_empty(), "{:?}", p.0);
    }

    #[test]
    fn raw_frames_are_cut_to_size_and_exit_is_an_error_with_stderr() {
        // 2 frames of 4x2 gray, then an error message and exit 3.
        let script = "printf 'abcdefghABCDEFGH'; echo 'camera unplugged' >&2; exit 3";
        let mut s = PipeSource::new(cfg(&["sh", "-c", script], PipeFormat::Gray, 4, 2));
        s.open().expect("starts");
        let stop = StopToken::new();
        let a = s.next_frame(&stop).expect("frame").expect("some");
        let b = s.next_frame(&stop).expect("frame").expect("some");
        assert_eq!(
            (a.data.as_slice(), b.data.as_slice()),
            (&b"abcdefgh"[..], &b"ABCDEFGH"[..])
        );
        assert_eq!((a.format, a.width, a.height), (PixelFormat::Gray8, 4, 2));
        let e = s.next_frame(&stop).expect_err("exit is an error");
        let msg = e.to_string();
        assert!(
            msg.contains("exit status: 3") && msg.contains("camera unplugged"),
            "{msg}"
        );
        s.close();
    }

    #[test]
    fn missing_program_fails_to_open_with_a_hint() {
        let mut s = PipeSource::new(cfg(&["/nonexistent/ffmpeg"], PipeFormat::Mjpeg, 0, 0));
        let e = s.open().expect_err("no such program");
        assert!(
            crate::retry::chain(&e).contains("/nonexistent/ffmpeg"),
            "{e}"
        );
        let mut s = PipeSource::new(cfg(&["lookout-no-such-program"], PipeFormat::Mjpeg, 0, 0));
        let e = crate::retry::chain(&s.open().expect_err("not in PATH"));
        assert!(
            e.contains("lookout-no-such-program") && e.contains("not found in PATH"),
            "{e}"
        );
    }

    #[test]
    fn a_silent_program_stalls_and_close_kills_it() {
        let mut c = cfg(&["sleep", "30"], PipeFormat::Mjpeg, 0, 0);
        c.stall_timeout_secs = 0.3;
        let mut s = PipeSource::new(c);
        s.open().expect("starts");
        let t0 = Instant::now();
        let e = s.next_frame(&StopToken::new()).expect_err("stall");
        assert!(matches!(e, SourceError::Stalled { .. }), "{e}");
        s.close();
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "close does not wait for the program"
        );
    }
}
