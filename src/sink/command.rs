//! The `command` sink: runs a program for each event, never through a shell.
//!
//! `command = ["/usr/local/bin/open-gate", "--fast"]` is executed directly (argv[0] is looked up
//! in `PATH` when it has no '/'), with the event as `LOOKOUT_*` environment variables and the
//! event JSON on its stdin; its stdout and stderr go to the daemon's. At most one runs per sink:
//! the sink's thread waits for it, so events arriving meanwhile wait in the sink's pipeline queue
//! (`[pipeline] sink_queue`; when full, the dispatcher drops and counts them).
//!
//! Each program starts in its own process group, so that whatever it starts (a shell's children)
//! can be stopped with it. A run longer than `timeout_secs`, or one still running when the
//! pipeline's stop deadline is near (the abort token, see [`Sink::abort_on`]), gets SIGTERM sent
//! to its whole group, then SIGKILL after `kill_grace_secs` if any process of the group is left,
//! and is reaped; the log says which signals were sent and when. A program that exits but leaves
//! processes in its group (`sleep 300 &` in a script) has them stopped the same way as soon as
//! it has exited: a program's work ends when it exits. Once the abort token is set, no
//! new program is started: the events still queued fail. A non-zero exit, a kill or a program
//! that cannot be started is a failed delivery (logged, throttled, and counted by the pipeline).
//! A program that leaves the group on purpose (`setsid`) is beyond this; the systemd unit's
//! `KillMode=control-group` is the second line for it.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::process_group::{alive, signal as signal_group};
use super::{Sink, SinkError};
use crate::event::Event;
use crate::problems::Problems;
use crate::stop::StopToken;

/// `type = "command"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSinkConfig {
    /// Sink name. Default "command".
    #[serde(default)]
    pub name: Option<String>,
    /// Program and arguments, e.g. `["/usr/local/bin/alarm", "--zone", "3"]`. Not a shell
    /// line: no quoting, globbing or `$VAR` expansion.
    pub command: Vec<String>,
    /// Kill the program after this many seconds. Default 10.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Working directory. Default: the daemon's.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// After SIGTERM (timeout or shutdown), wait this long for the program's process group to
    /// exit before SIGKILL. 0..3 s; default 2.
    #[serde(default = "default_kill_grace")]
    pub kill_grace_secs: f64,
}

fn default_timeout() -> f64 {
    10.0
}
fn default_kill_grace() -> f64 {
    2.0
}

/// The longest `kill_grace_secs`: TERM, grace and KILL must fit in the pipeline's abort margin
/// ([`crate::pipeline::ABORT_MARGIN`]) before the stop deadline.
pub const MAX_KILL_GRACE_SECS: f64 = 3.0;

/// After SIGKILL, how long to wait for the group's last processes to be gone.
const KILL_WAIT: Duration = Duration::from_millis(500);

/// How often a running program is checked for exit.
const POLL: Duration = Duration::from_millis(10);

impl CommandSinkConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        match self.command.first() {
            None => p.push(
                format!("{key}.command"),
                "must name a program: [\"/path/to/program\", \"arg\", ...]",
            ),
            Some(prog) if prog.is_empty() => p.push(
                format!("{key}.command"),
                "the program (first element) must not be empty",
            ),
            _ => {}
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 86_400.0) {
            p.push(
                format!("{key}.timeout_secs"),
                format!("expected 0..86400, got {}", self.timeout_secs),
            );
        }
        if !(self.kill_grace_secs >= 0.0 && self.kill_grace_secs <= MAX_KILL_GRACE_SECS) {
            p.push(
                format!("{key}.kill_grace_secs"),
                format!(
                    "expected 0..{MAX_KILL_GRACE_SECS} (it must fit in the shutdown deadline), got {}",
                    self.kill_grace_secs
                ),
            );
        }
    }
}

/// The environment given to the program: `LOOKOUT_DEVICE`, `LOOKOUT_SOURCE`, `LOOKOUT_RULE`
/// (empty without rules), `LOOKOUT_LABEL`, `LOOKOUT_SCORE`, `LOOKOUT_FRAME_SEQ`,
/// `LOOKOUT_CAPTURED_AT`, `LOOKOUT_LATENCY_MS`, and when known `LOOKOUT_REGION`,
/// `LOOKOUT_FILE`, `LOOKOUT_TRUTH`, `LOOKOUT_SNAPSHOT`.
pub fn event_env(e: &Event) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("LOOKOUT_DEVICE", e.device.clone()),
        ("LOOKOUT_SOURCE", e.source.clone()),
        ("LOOKOUT_RULE", e.rule.clone().unwrap_or_default()),
        ("LOOKOUT_LABEL", e.label.clone()),
        ("LOOKOUT_SCORE", format!("{:.4}", e.score)),
        ("LOOKOUT_FRAME_SEQ", e.frame_seq.to_string()),
        ("LOOKOUT_CAPTURED_AT", e.captured_at.clone()),
        ("LOOKOUT_LATENCY_MS", format!("{:.1}", e.latency_ms)),
    ];
    for (k, v) in [
        ("LOOKOUT_REGION", &e.region),
        ("LOOKOUT_FILE", &e.file),
        ("LOOKOUT_TRUTH", &e.truth),
        ("LOOKOUT_SNAPSHOT", &e.snapshot),
    ] {
        if let Some(v) = v {
            env.push((k, v.clone()));
        }
    }
    env
}

pub struct CommandSink {
    name: String,
    argv: Vec<String>,
    timeout: Duration,
    grace: Duration,
    cwd: Option<PathBuf>,
    /// Set by the pipeline near its stop deadline (see [`Sink::abort_on`]); read here only.
    abort: StopToken,
}

/// How a run ended.
enum Outcome {
    Exited(ExitStatus),
    /// Stopped by us (`why`: the timeout or the shutdown); `killed`: SIGKILL was needed.
    Stopped {
        why: &'static str,
        killed: bool,
    },
}

impl CommandSink {
    pub fn new(cfg: &CommandSinkConfig) -> Result<CommandSink, SinkError> {
        let name = cfg.name.clone().unwrap_or_else(|| "command".into());
        let Some(prog) = cfg.command.first() else {
            return Err(SinkError::Build {
                what: format!("command sink {name:?}: command is empty; name a program"),
            });
        };
        if prog.contains('/') && !std::path::Path::new(prog).is_file() {
            return Err(SinkError::Build {
                what: format!(
                    "command sink {name:?}: program {prog:?} does not exist; check command[0]"
                ),
            });
        }
        Ok(CommandSink {
            name,
            argv: cfg.command.clone(),
            timeout: Duration::from_secs_f64(cfg.timeout_secs),
            grace: Duration::from_secs_f64(cfg.kill_grace_secs.clamp(0.0, MAX_KILL_GRACE_SECS)),
            cwd: cfg.cwd.clone(),
            abort: StopToken::new(),
        })
    }

    /// Waits for the program; stops its group on timeout or abort.
    fn wait(&self, child: &mut Child, started: Instant) -> Result<Outcome, std::io::Error> {
        let until = started + self.timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.stop_leftovers(child, started)?;
                return Ok(Outcome::Exited(status));
            }
            let why = if self.abort.is_stopped() {
                "lookout is stopping"
            } else if Instant::now() >= until {
                "timeout"
            } else {
                std::thread::sleep(POLL);
                continue;
            };
            let killed = self.stop_group(child, started, why)?;
            return Ok(Outcome::Stopped { why, killed });
        }
    }

    /// After the program exited by itself: whatever it left running in its process group (a
    /// background child, `sleep 300 &`) is stopped like a program past its timeout, TERM then
    /// KILL. The program itself is already reaped; the members it left are children of init,
    /// which reaps them. Its group id cannot name another group meanwhile: a pid is not reused
    /// while a process group of that id has members.
    fn stop_leftovers(&self, child: &mut Child, started: Instant) -> std::io::Result<()> {
        let pgid = child.id() as libc::pid_t;
        if alive(pgid)? {
            log::warn!(
                "The program exited but left processes running in its process group; stopping them. sink={} pgid={pgid} ms_since_start={}",
                self.name,
                started.elapsed().as_millis()
            );
            self.stop_group(child, started, "the program exited and left them running")?;
        }
        Ok(())
    }

    /// SIGTERM to the program's group; SIGKILL after the grace period if any process of the
    /// group is left; reaps the program (if not reaped already). Returns whether SIGKILL was
    /// sent.
    fn stop_group(&self, child: &mut Child, started: Instant, why: &str) -> std::io::Result<bool> {
        // The child is its own group leader (process_group(0)), so its pid is the group id.
        let pgid = child.id() as libc::pid_t;
        let ms = || started.elapsed().as_millis();
        signal_group(pgid, libc::SIGTERM)?;
        log::warn!(
            "Sent SIGTERM to the program's process group. sink={} pgid={pgid} reason={why:?} ms_since_start={}",
            self.name,
            ms()
        );
        let grace_until = Instant::now() + self.grace;
        let mut reaped = false;
        loop {
            if !reaped {
                reaped = child.try_wait()?.is_some();
            }
            // Done once the program is reaped and no other member runs (zombies left to
            // init do not count).
            if reaped && !alive(pgid)? {
                log::info!(
                    "The program's process group exited after SIGTERM. sink={} pgid={pgid} ms_since_start={}",
                    self.name,
                    ms()
                );
                return Ok(false);
            }
            if Instant::now() >= grace_until {
                break;
            }
            std::thread::sleep(POLL);
        }
        signal_group(pgid, libc::SIGKILL)?;
        log::warn!(
            "Sent SIGKILL to the program's process group after the grace period. sink={} pgid={pgid} grace_ms={} ms_since_start={}",
            self.name,
            self.grace.as_millis(),
            ms()
        );
        if !reaped {
            child.wait()?;
        }
        // Killed members other than the leader are reaped by init; wait, bounded, until gone.
        let gone_until = Instant::now() + KILL_WAIT;
        while alive(pgid)? && Instant::now() < gone_until {
            std::thread::sleep(POLL);
        }
        Ok(true)
    }
}

impl Sink for CommandSink {
    fn abort_on(&mut self, abort: StopToken) {
        self.abort = abort;
    }

    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        if self.abort.is_stopped() {
            return Err(SinkError::Command {
                sink: self.name.clone(),
                what: "was not started: lookout is stopping".into(),
            });
        }
        let json = serde_json::to_vec(event)?;
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .envs(event_env(event))
            .stdin(Stdio::piped())
            // Its own group: TERM and KILL reach whatever it starts, too.
            .process_group(0);
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        // ETXTBSY: the program file is still open for writing somewhere, most often a copy of
        // the descriptor that a fork elsewhere in this process holds for the moment before its
        // exec (a script just written or updated). It clears within milliseconds: retry a few
        // times before calling the delivery failed.
        let mut tries = 0;
        let spawned = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 10 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other,
            }
        };
        let mut child = spawned.map_err(|source| SinkError::Io {
            what: format!(
                "command sink {:?} cannot start {:?}",
                self.name, self.argv[0]
            ),
            source,
        })?;
        // stdin on its own thread: a program that never reads it cannot block us past the timeout.
        let writer = child.stdin.take().map(|mut stdin| {
            std::thread::spawn(move || {
                let _ = stdin.write_all(&json);
            })
        });
        let started = Instant::now();
        let result = self.wait(&mut child, started);
        if let Some(w) = writer {
            // The child has exited or been killed: its end of the pipe is closed, so this returns.
            let _ = w.join();
        }
        let status = result.map_err(|source| SinkError::Io {
            what: format!("command sink {:?} cannot wait for its program", self.name),
            source,
        })?;
        match status {
            Outcome::Exited(s) if s.success() => {
                log::debug!(
                    "Command finished. sink={} frame={} status=0 ms={}",
                    self.name,
                    event.frame_seq,
                    started.elapsed().as_millis()
                );
                Ok(())
            }
            Outcome::Exited(s) => Err(SinkError::Command {
                sink: self.name.clone(),
                what: format!("exited with {s}"),
            }),
            Outcome::Stopped { why, killed } => Err(SinkError::Command {
                sink: self.name.clone(),
                what: format!(
                    "killed ({why}; timeout {:.1} s) after {:.1} s: SIGTERM to its process group{}",
                    self.timeout.as_secs_f64(),
                    started.elapsed().as_secs_f64(),
                    if killed {
                        ", then SIGKILL after the grace period"
                    } else {
                        ""
                    }
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_carries_the_event() {
        let e = Event {
            device: "d".into(),
            source: "s".into(),
            region: None,
            rule: None,
            label: "dent".into(),
            score: 0.91234,
            top: vec![],
            frame_seq: 7,
            captured_at: "t".into(),
            latency_ms: 3.25,
            file: None,
            truth: Some("dent".into()),
            snapshot: None,
            model: None,
            drift: None,
        };
        let env = event_env(&e);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("LOOKOUT_RULE"), Some(""));
        assert_eq!(get("LOOKOUT_SCORE"), Some("0.9123"));
        assert_eq!(get("LOOKOUT_FRAME_SEQ"), Some("7"));
        assert_eq!(get("LOOKOUT_TRUTH"), Some("dent"));
        assert_eq!(get("LOOKOUT_FILE"), None);
    }

    #[test]
    fn empty_or_missing_program_is_rejected() {
        let mut p = Problems::default();
        let c = CommandSinkConfig {
            name: None,
            command: vec![],
            timeout_secs: 1.0,
            cwd: None,
            kill_grace_secs: 2.0,
        };
        c.validate("sinks[0]", &mut p);
        assert_eq!(p.0[0].key, "sinks[0].command");
        let c = CommandSinkConfig {
            name: None,
            command: vec!["/nonexistent/prog".into()],
            timeout_secs: 1.0,
            cwd: None,
            kill_grace_secs: 2.0,
        };
        let e = CommandSink::new(&c).err().expect("missing program");
        assert!(e.to_string().contains("/nonexistent/prog"), "{e}");
    }
}
