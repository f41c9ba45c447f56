//! The `mqtt` sink's optional on-disk queue (`queue_dir`): each event waiting for the broker is
//! also a file, so a restart loses nothing; files are read back in order at start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::SinkError;
use super::Outbound;
use crate::event::Event;

/// The optional on-disk mirror of the queue: `<id>.msg` files, topic on the first line, payload
/// after it. Failures to write are logged (throttled) and the event is still kept in memory.
pub(super) struct DiskQueue {
    pub(super) dir: Option<PathBuf>,
    pub(super) next_id: u64,
    pub(super) last_warn: Option<Instant>,
}

impl DiskQueue {
    pub(super) fn open(dir: Option<&Path>) -> Result<DiskQueue, SinkError> {
        if let Some(d) = dir {
            std::fs::create_dir_all(d).map_err(|source| SinkError::Io {
                what: format!(
                    "cannot create MQTT queue_dir {}: check the path and its permissions",
                    d.display()
                ),
                source,
            })?;
        }
        Ok(DiskQueue {
            dir: dir.map(Path::to_path_buf),
            next_id: 1,
            last_warn: None,
        })
    }

    pub(super) fn path(&self, id: u64) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{id:020}.msg")))
    }

    /// The events left by a previous run, oldest first.
    pub(super) fn load(&mut self) -> Vec<(u64, Outbound)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let mut found: Vec<(u64, PathBuf)> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    let id = p
                        .file_name()?
                        .to_str()?
                        .strip_suffix(".msg")?
                        .parse::<u64>()
                        .ok()?;
                    Some((id, p))
                })
                .collect(),
            Err(e) => {
                log::warn!(
                    "Cannot read the MQTT queue directory; starting empty. dir={} error={e}",
                    dir.display()
                );
                Vec::new()
            }
        };
        found.sort();
        let mut out = Vec::new();
        for (id, path) in found {
            self.next_id = self.next_id.max(id + 1);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                        continue;
                    };
                    let topic = String::from_utf8_lossy(&bytes[..nl]).into_owned();
                    let payload = bytes[nl + 1..].to_vec();
                    let ev: Option<Event> = serde_json::from_slice(&payload).ok();
                    let (rule, label, score, source, region) = ev
                        .map(|e| (e.rule, e.label, e.score, e.source, e.region))
                        .unwrap_or((None, String::new(), 0.0, String::new(), None));
                    out.push((
                        id,
                        Outbound {
                            topic,
                            payload,
                            rule,
                            label,
                            score,
                            source,
                            region,
                        },
                    ));
                }
                Err(e) => log::warn!(
                    "Cannot read a queued MQTT event; skipped. file={} error={e}",
                    path.display()
                ),
            }
        }
        out
    }

    pub(super) fn push(&mut self, out: &Outbound) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(path) = self.path(id) {
            let mut bytes = Vec::with_capacity(out.topic.len() + 1 + out.payload.len());
            bytes.extend_from_slice(out.topic.as_bytes());
            bytes.push(b'\n');
            bytes.extend_from_slice(&out.payload);
            let tmp = path.with_extension("tmp");
            let result = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = result {
                if self
                    .last_warn
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                {
                    self.last_warn = Some(Instant::now());
                    log::warn!("Cannot write a queued MQTT event to disk; kept in memory only. file={} error={e}", path.display());
                }
            }
        }
        id
    }

    pub(super) fn remove(&mut self, id: u64) {
        if let Some(path) = self.path(id) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_queue_survives_a_restart_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut q = DiskQueue::open(Some(dir.path())).expect("open");
        let out = |n: u8| Outbound {
            topic: format!("t/{n}"),
            payload: vec![b'{', b'}'],
            rule: None,
            label: String::new(),
            score: 0.0,
            source: String::new(),
            region: None,
        };
        let a = q.push(&out(1));
        let _b = q.push(&out(2));
        let _c = q.push(&out(3));
        q.remove(a);
        let mut again = DiskQueue::open(Some(dir.path())).expect("reopen");
        let loaded = again.load();
        let topics: Vec<&str> = loaded.iter().map(|(_, o)| o.topic.as_str()).collect();
        assert_eq!(topics, ["t/2", "t/3"]);
        assert!(
            again.push(&out(4)) > loaded[1].0,
            "ids keep growing across restarts"
        );
    }
}
