//! The `command` sink: runs a program for each event, never through a shell.
//!
//! `command = ["/usr/local/bin/open-gate", "--fast"]` is executed directly (argv[0] is looked up
//! in `PATH` when it has no '/'), with the event as `LOOKOUT_*` environment variables and the
//! event JSON on its stdin; its stdout and stderr go to the daemon's. At most one runs per sink:
//! the sink's thread waits for it, so events arriving meanwhile wait in the sink's pipeline queue
//! (`[pipeline] sink_queue`; when full, the dispatcher drops and counts them). A run longer than
//! `timeout_secs` is killed (SIGKILL) and reaped. A non-zero exit, a kill or a program that cannot
//! be started is a failed delivery (logged, throttled, and counted by the pipeline).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Sink, SinkError};
use crate::event::Event;
use crate::problems::Problems;

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
}

fn default_timeout() -> f64 {
    10.0
}

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
    }
}

/// The environment given to the program: `LOOKOUT_DEVICE`, `LOOKOUT_SOURCE`, `LOOKOUT_RULE`
/// (empty without rules), `LOOKOUT_LABEL`, `LOOKOUT_SCORE`, `LOOKOUT_FRAME_SEQ`,
/// `LOOKOUT_CAPTURED_AT`, `LOOKOUT_LATENCY_MS`, and when known `LOOKOUT_FILE`,
/// `LOOKOUT_TRUTH`, `LOOKOUT_SNAPSHOT`.
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
    cwd: Option<PathBuf>,
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
            cwd: cfg.cwd.clone(),
        })
    }

    fn wait(&self, child: &mut Child) -> Result<Option<ExitStatus>, std::io::Error> {
        let until = Instant::now() + self.timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= until {
                let _ = child.kill();
                child.wait()?;
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Sink for CommandSink {
    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let json = serde_json::to_vec(event)?;
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .envs(event_env(event))
            .stdin(Stdio::piped());
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|source| SinkError::Io {
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
        let result = self.wait(&mut child);
        if let Some(w) = writer {
            // The child has exited or been killed: its end of the pipe is closed, so this returns.
            let _ = w.join();
        }
        let status = result.map_err(|source| SinkError::Io {
            what: format!("command sink {:?} cannot wait for its program", self.name),
            source,
        })?;
        match status {
            Some(s) if s.success() => {
                log::debug!(
                    "Command finished. sink={} frame={} status=0 ms={}",
                    self.name,
                    event.frame_seq,
                    started.elapsed().as_millis()
                );
                Ok(())
            }
            Some(s) => Err(SinkError::Command {
                sink: self.name.clone(),
                what: format!("exited with {s}"),
            }),
            None => Err(SinkError::Command {
                sink: self.name.clone(),
                what: format!(
                    "killed after the timeout of {:.1} s",
                    self.timeout.as_secs_f64()
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
        };
        c.validate("sinks[0]", &mut p);
        assert_eq!(p.0[0].key, "sinks[0].command");
        let c = CommandSinkConfig {
            name: None,
            command: vec!["/nonexistent/prog".into()],
            timeout_secs: 1.0,
            cwd: None,
        };
        let e = CommandSink::new(&c).err().expect("missing program");
        assert!(e.to_string().contains("/nonexistent/prog"), "{e}");
    }
}
