//! The `jsonl` sink: appends each event as one JSON line, rotating by size.
//!
//! Lines are buffered and flushed whenever the sink's queue is empty and at shutdown, so a burst
//! costs one write and an idle daemon has everything on disk. When the file would pass
//! `max_bytes`, it is renamed `<path>.1` (older ones shift to `.2` ... `.<keep>`, the oldest is
//! deleted) and a new file is started. A failed write (disk full, file removed) is reported for
//! that event, and the file is reopened on the next event.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Sink, SinkError};
use crate::event::Event;
use crate::problems::Problems;

/// `type = "jsonl"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSinkConfig {
    /// Sink name. Default "jsonl".
    #[serde(default)]
    pub name: Option<String>,
    /// File to append to; its directory must exist.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes; 0 = never. Default 10000000.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`<path>.1` is the newest). Default 5.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_max_bytes() -> u64 {
    10_000_000
}
fn default_keep() -> u32 {
    5
}

impl JsonlSinkConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if self.path.as_os_str().is_empty() {
            p.push(format!("{key}.path"), "must not be empty");
        }
        p.range(&format!("{key}.keep"), self.keep, 0, 1000);
    }
}

pub struct JsonlSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// `None` after a failed write: reopened on the next event.
    file: Option<BufWriter<File>>,
    /// Current file size, including buffered bytes.
    size: u64,
    line: Vec<u8>,
}

fn open(path: &Path) -> Result<(BufWriter<File>, u64), SinkError> {
    let file = OpenOptions::new().create(true).append(true).open(path).map_err(|source| SinkError::Io {
        what: format!("cannot open JSONL file {} for appending: check that its directory exists and is writable", path.display()),
        source,
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((BufWriter::with_capacity(64 * 1024, file), size))
}

impl JsonlSink {
    pub fn open(cfg: &JsonlSinkConfig) -> Result<JsonlSink, SinkError> {
        let (file, size) = open(&cfg.path)?;
        Ok(JsonlSink {
            path: cfg.path.clone(),
            max_bytes: cfg.max_bytes,
            keep: cfg.keep,
            file: Some(file),
            size,
            line: Vec::new(),
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        if let Some(mut f) = self.file.take() {
            f.flush()
                .map_err(|source| self.io_err("cannot flush", source))?;
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path)
                .map_err(|source| self.io_err("cannot remove", source))?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))
                        .map_err(|source| self.io_err("cannot rotate", source))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))
                .map_err(|source| self.io_err("cannot rotate", source))?;
        }
        let (file, size) = open(&self.path)?;
        self.file = Some(file);
        self.size = size;
        Ok(())
    }

    fn io_err(&self, what: &str, source: std::io::Error) -> SinkError {
        SinkError::Io {
            what: format!("{what} JSONL file {}", self.path.display()),
            source,
        }
    }
}

impl Sink for JsonlSink {
    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, event)?;
        self.line.push(b'\n');
        if self.file.is_none() {
            let (file, size) = open(&self.path)?;
            self.file = Some(file);
            self.size = size;
        }
        if self.max_bytes > 0
            && self.size > 0
            && self.size + self.line.len() as u64 > self.max_bytes
        {
            self.rotate()?;
        }
        let result = match self.file.as_mut() {
            Some(f) => f.write_all(&self.line),
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                self.size += self.line.len() as u64;
                Ok(())
            }
            Err(source) => {
                self.file = None;
                Err(self.io_err("cannot write to", source))
            }
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let result = match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        };
        result.map_err(|source| {
            self.file = None;
            self.io_err("cannot write to", source)
        })
    }
}

impl Drop for JsonlSink {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            ::log::error!(
                "JSONL sink lost buffered events at shutdown. path={} error={e}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Event {
        Event {
            device: "d".into(),
            source: "s".into(),
            region: None,
            rule: Some("r".into()),
            label: "scratch".into(),
            score: 0.9,
            top: vec![],
            frame_seq: seq,
            captured_at: "2026-11-23T00:00:00.000Z".into(),
            latency_ms: 1.0,
            file: None,
            truth: None,
            snapshot: None,
            model: None,
            drift: None,
        }
    }

    #[test]
    fn appends_lines_and_rotates_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let line_len = serde_json::to_string(&event(10)).expect("json").len() as u64 + 1;
        let cfg = JsonlSinkConfig {
            name: None,
            path: path.clone(),
            max_bytes: line_len * 3,
            keep: 2,
        };
        let mut sink = JsonlSink::open(&cfg).expect("open");
        for seq in 10..20 {
            sink.send(&event(seq)).expect("send");
        }
        sink.flush().expect("flush");
        let read = |p: &Path| -> Vec<u64> {
            std::fs::read_to_string(p)
                .expect("read")
                .lines()
                .map(|l| {
                    serde_json::from_str::<Event>(l)
                        .expect("valid JSON line")
                        .frame_seq
                })
                .collect()
        };
        assert_eq!(read(&path), vec![19]);
        assert_eq!(read(&sink.rotated(1)), vec![16, 17, 18]);
        assert_eq!(read(&sink.rotated(2)), vec![13, 14, 15]);
        assert!(
            !sink.rotated(3).exists(),
            "only `keep` rotated files are kept"
        );
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let cfg = JsonlSinkConfig {
            name: None,
            path: "/nonexistent/dir/e.jsonl".into(),
            max_bytes: 0,
            keep: 1,
        };
        let e = JsonlSink::open(&cfg).err().expect("cannot open");
        assert!(e.to_string().contains("/nonexistent/dir/e.jsonl"), "{e}");
    }
}
