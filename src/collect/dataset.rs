//! The collected frames on disk: an image-folder dataset, `DIR/<label>/<file>.jpg`, and
//! `DIR/manifest.jsonl`, one JSON line per change (a frame kept or imported, labelled, deleted,
//! or evicted by the bounds). The manifest is read back on start, so the index (what each
//! file is, why it was kept, whether a person reviewed it) survives restarts; it is rewritten
//! compactly when most of its lines describe files that are gone.
//!
//! Bounds apply to the frames the collector keeps and nobody has reviewed yet: beyond
//! `max_files` or `max_mb` the oldest of those are deleted first (counted, and recorded as
//! `evict`). A frame a person labelled, and an imported one, is never deleted by the bounds.
//! `lookout train --data DIR` reads the same folders (it skips `manifest.jsonl` and dot
//! folders, where files are written before they are renamed into place).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The manifest's file name inside the dataset folder.
pub const MANIFEST: &str = "manifest.jsonl";
/// Where files are written before they are renamed into their label's folder.
const TMP: &str = ".tmp";
/// Longest label a person may give.
const MAX_LABEL: usize = 100;

/// Why a frame was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Its top-1 score was below `below_score`.
    LowScore,
    /// Its top-1 score led the top-2 by less than `below_margin`.
    SmallMargin,
    /// One of every `sample_every` confident frames of its label.
    Sample,
    /// It fired an event.
    Event,
    /// `lookout dataset import`.
    Import,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::LowScore => "low_score",
            Why::SmallMargin => "small_margin",
            Why::Sample => "sample",
            Why::Event => "event",
            Why::Import => "import",
        }
    }
    pub const ALL: [Why; 5] = [
        Why::LowScore,
        Why::SmallMargin,
        Why::Sample,
        Why::Event,
        Why::Import,
    ];
}

/// One file of the dataset, as the manifest and `/api/collect` describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The path inside the dataset folder, `<label folder>/<name>.jpg`.
    pub file: String,
    /// Its label: the folder it is in (the model's prediction until a person changes it).
    pub label: String,
    /// The model's top-1 label when it was kept (`None` for an imported image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<String>,
    /// The top-k scores, `[label, score]`, best first (empty for an imported image).
    #[serde(default)]
    pub top: Vec<(String, f32)>,
    /// Capture time (RFC 3339), or when it was imported.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The model's name ("default" for `[model]`) and the sha256 of its file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    pub why: Why,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// A person confirmed or gave its label (on `/collect`, or by importing a labelled folder).
    #[serde(default)]
    pub reviewed: bool,
}

impl Item {
    /// The top-1 score, when the model scored it.
    pub fn score(&self) -> Option<f32> {
        self.top.first().map(|t| t.1)
    }
    /// Whether the bounds may delete it: kept by the collector and not reviewed.
    fn evictable(&self) -> bool {
        !self.reviewed && self.why != Why::Import
    }
}

/// One manifest line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    /// A file added (collected or imported).
    Keep(Item),
    /// A person gave `file` the label `label`; it is now `to`.
    Label {
        file: String,
        to: String,
        label: String,
        time: String,
    },
    /// A person deleted `file`.
    Delete { file: String, time: String },
    /// The bounds deleted `file`.
    Evict { file: String, time: String },
}

/// Why a change to the dataset was refused.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the dataset has no file {0:?} (deleted meanwhile? reload the page)")]
    Unknown(String),
    #[error("label {0:?} cannot be a folder name: use 1 to {MAX_LABEL} characters without '/', '\\' or control characters, not starting with '.'")]
    BadLabel(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DatasetError + 'a {
    move |source| DatasetError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The bounds on collected (unreviewed) frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub max_files: usize,
    pub max_bytes: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames kept, by [`Why`] (in [`Why::ALL`]'s order).
    pub kept: [AtomicU64; 5],
    /// Frames not kept: a near duplicate of one kept recently at the same place.
    pub near_duplicates: AtomicU64,
    /// Frames not looked at: the collector was busy (its queue full).
    pub busy: AtomicU64,
    /// Frames deleted by the bounds.
    pub evicted: AtomicU64,
    /// Frames that could not be decoded, encoded or written.
    pub errors: AtomicU64,
    /// Manifest lines that could not be read on start (skipped).
    pub bad_lines: AtomicU64,
}

/// The dataset folder, shared by the collector thread and the `/collect` page's requests.
pub struct Dataset {
    dir: PathBuf,
    inner: Mutex<Inner>,
    pub stats: Stats,
}

struct Inner {
    items: BTreeMap<String, Item>,
    /// Evictable files, oldest first (may still name files since labelled or deleted).
    order: VecDeque<String>,
    /// Count and bytes of the evictable files.
    files: usize,
    bytes: u64,
    manifest: File,
    /// How much of the manifest has been read or written by this process.
    known_len: u64,
}

/// What `/api/collect` shows of the whole dataset.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub dir: String,
    /// Files per label folder.
    pub labels: BTreeMap<String, usize>,
    pub files: usize,
    pub reviewed: usize,
    /// Frames the bounds may still delete (collected, unreviewed), their bytes, and the bounds.
    pub unreviewed_bytes: u64,
}

impl Dataset {
    /// Opens (or creates) the dataset at `dir`: reads its manifest, forgets files that are no
    /// longer on disk, and compacts the manifest when most of it is history.
    pub fn open(dir: &Path) -> Result<Dataset, DatasetError> {
        fs::create_dir_all(dir.join(TMP)).map_err(io("create the dataset folder", dir))?;
        let path = dir.join(MANIFEST);
        let stats = Stats::default();
        let manifest = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("write", &path))?;
        let mut inner = Inner {
            items: BTreeMap::new(),
            order: VecDeque::new(),
            files: 0,
            bytes: 0,
            manifest,
            known_len: 0,
        };
        let lines = inner.read_new(dir, &stats)?;
        inner.items.retain(|file, _| dir.join(file).is_file());
        inner.recount();
        if lines > 2 * inner.items.len() + 100 {
            let tmp = dir.join(TMP).join(MANIFEST);
            let mut out = File::create(&tmp).map_err(io("write", &tmp))?;
            // Oldest first, as the bounds delete them.
            let mut items: Vec<&Item> = inner.items.values().collect();
            items.sort_by(|a, b| name_of(&a.file).cmp(name_of(&b.file)));
            for item in items {
                let line = serde_json::to_string(&Line::Keep(item.clone())).unwrap_or_default();
                writeln!(out, "{line}").map_err(io("write", &tmp))?;
            }
            out.sync_all().map_err(io("write", &tmp))?;
            fs::rename(&tmp, &path).map_err(io("replace", &path))?;
            inner.manifest = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io("write", &path))?;
            inner.known_len = fs::metadata(&path).map_or(0, |m| m.len());
            log::info!(
                "Collect manifest compacted. file={} lines={lines} files={}",
                path.display(),
                inner.items.len()
            );
        }
        Ok(Dataset {
            dir: dir.to_owned(),
            inner: Mutex::new(inner),
            stats,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index, with what another process (`lookout dataset import`) appended to the
    /// manifest since it was last read.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = g.read_new(&self.dir, &self.stats) {
            log::warn!("Collect manifest not re-read. error={e}");
        }
        g
    }

    /// Adds `data` as `name` in `item.label`'s folder (`item.file` is set here), records it,
    /// and, when it is evictable, deletes the oldest evictable files beyond `bounds`.
    /// Returns the stored item.
    pub fn add(
        &self,
        mut item: Item,
        name: &str,
        data: &[u8],
        bounds: Option<Bounds>,
    ) -> Result<Item, DatasetError> {
        let folder = folder_for(&item.label);
        let dest_dir = self.dir.join(&folder);
        fs::create_dir_all(&dest_dir).map_err(io("create", &dest_dir))?;
        let mut name = name.to_owned();
        if dest_dir.join(&name).exists() {
            name = unique(&dest_dir, &name);
        }
        // Written aside and renamed into place: a reader never sees half a file.
        let tmp = self.dir.join(TMP).join(&name);
        fs::write(&tmp, data).map_err(io("write", &tmp))?;
        let dest = dest_dir.join(&name);
        fs::rename(&tmp, &dest).map_err(io("move into place", &dest))?;
        item.file = format!("{folder}/{name}");
        item.bytes = data.len() as u64;
        let mut g = self.lock();
        g.record(&Line::Keep(item.clone()), &self.dir)?;
        if item.evictable() {
            g.order.push_back(item.file.clone());
            g.files += 1;
            g.bytes += item.bytes;
        }
        g.items.insert(item.file.clone(), item.clone());
        if let Some(b) = bounds {
            g.evict(&self.dir, b, &self.stats);
        }
        Ok(item)
    }

    /// A person gives `file` the label `label`: the file moves to that label's folder (stays
    /// when it is already there) and is marked reviewed, so the bounds never delete it.
    pub fn relabel(&self, file: &str, label: &str) -> Result<Item, DatasetError> {
        check_label(label)?;
        let mut g = self.lock();
        let Some(item) = g.items.get(file).cloned() else {
            return Err(DatasetError::Unknown(file.to_owned()));
        };
        let to = if item.label == label && folder_of(file) == label {
            file.to_owned()
        } else {
            let dest_dir = self.dir.join(label);
            fs::create_dir_all(&dest_dir).map_err(io("create", &dest_dir))?;
            let name = unique(&dest_dir, name_of(file));
            let dest = dest_dir.join(&name);
            let from = self.dir.join(file);
            fs::rename(&from, &dest).map_err(io("move", &from))?;
            format!("{label}/{name}")
        };
        let line = Line::Label {
            file: file.to_owned(),
            to: to.clone(),
            label: label.to_owned(),
            time: crate::event::rfc3339(std::time::SystemTime::now()),
        };
        g.record(&line, &self.dir)?;
        let mut item = g.forget(file).unwrap_or(item);
        item.file = to.clone();
        item.label = label.to_owned();
        item.reviewed = true;
        g.items.insert(to, item.clone());
        Ok(item)
    }

    /// A person deletes `file`.
    pub fn delete(&self, file: &str) -> Result<(), DatasetError> {
        let mut g = self.lock();
        if !g.items.contains_key(file) {
            return Err(DatasetError::Unknown(file.to_owned()));
        }
        let path = self.dir.join(file);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("delete", &path)(e)),
        }
        let line = Line::Delete {
            file: file.to_owned(),
            time: crate::event::rfc3339(std::time::SystemTime::now()),
        };
        g.record(&line, &self.dir)?;
        g.forget(file);
        Ok(())
    }

    /// The items, filtered by label folder and reviewed state, lowest top-1 score first
    /// (imported images, without a score, last), at most `limit`.
    pub fn list(&self, label: Option<&str>, reviewed: Option<bool>, limit: usize) -> Vec<Item> {
        let g = self.lock();
        let mut out: Vec<Item> = g
            .items
            .values()
            .filter(|i| label.is_none_or(|l| folder_of(&i.file) == l))
            .filter(|i| reviewed.is_none_or(|r| i.reviewed == r))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            let key = |i: &Item| i.score().unwrap_or(f32::INFINITY);
            key(a).total_cmp(&key(b)).then_with(|| a.file.cmp(&b.file))
        });
        out.truncate(limit);
        out
    }

    /// Whether `file` is one of the dataset's files (the only ones `/collect` serves).
    pub fn path_of(&self, file: &str) -> Option<PathBuf> {
        self.lock()
            .items
            .contains_key(file)
            .then(|| self.dir.join(file))
    }

    pub fn summary(&self) -> Summary {
        let g = self.lock();
        let mut labels = BTreeMap::new();
        for item in g.items.values() {
            *labels.entry(folder_of(&item.file).to_owned()).or_insert(0) += 1;
        }
        Summary {
            dir: self.dir.display().to_string(),
            labels,
            files: g.items.len(),
            reviewed: g.items.values().filter(|i| i.reviewed).count(),
            unreviewed_bytes: g.bytes,
        }
    }

    /// Count and bytes of the frames the bounds apply to.
    pub fn evictable(&self) -> (usize, u64) {
        let g = self.lock();
        (g.files, g.bytes)
    }
}

impl Inner {
    fn record(&mut self, line: &Line, dir: &Path) -> Result<(), DatasetError> {
        let mut text = serde_json::to_string(line).unwrap_or_default();
        text.push('\n');
        let path = dir.join(MANIFEST);
        self.manifest
            .write_all(text.as_bytes())
            .map_err(io("append to", &path))?;
        self.known_len += text.len() as u64;
        Ok(())
    }

    /// Applies the manifest's lines past `known_len` (all of it on open); returns how many
    /// lines it read. A line that is not an entry is skipped, counted and logged.
    fn read_new(&mut self, dir: &Path, stats: &Stats) -> Result<usize, DatasetError> {
        let path = dir.join(MANIFEST);
        let len = fs::metadata(&path).map_or(0, |m| m.len());
        if len <= self.known_len {
            return Ok(0);
        }
        let mut f = File::open(&path).map_err(io("read", &path))?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(self.known_len))
            .map_err(io("read", &path))?;
        let mut reader = BufReader::new(f);
        let mut lines = 0;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io("read", &path))?;
            // A line still being written (no newline yet) is read next time.
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            self.known_len += n as u64;
            if line.trim().is_empty() {
                continue;
            }
            lines += 1;
            match serde_json::from_str::<Line>(&line) {
                Ok(l) => self.apply(l),
                Err(e) => {
                    stats.bad_lines.fetch_add(1, Relaxed);
                    log::warn!(
                        "Collect manifest line skipped: not a manifest entry. file={} line={lines} error={e}",
                        path.display(),
                    );
                }
            }
        }
        Ok(lines)
    }

    fn apply(&mut self, line: Line) {
        match line {
            Line::Keep(item) => {
                self.forget(&item.file);
                if item.evictable() {
                    self.order.push_back(item.file.clone());
                    self.files += 1;
                    self.bytes += item.bytes;
                }
                self.items.insert(item.file.clone(), item);
            }
            Line::Label {
                file, to, label, ..
            } => {
                if let Some(mut item) = self.forget(&file) {
                    item.file = to.clone();
                    item.label = label;
                    item.reviewed = true;
                    self.items.insert(to, item);
                }
            }
            Line::Delete { file, .. } | Line::Evict { file, .. } => {
                self.forget(&file);
            }
        }
    }

    /// The bounds' totals and order from the items (after files gone from disk are dropped).
    fn recount(&mut self) {
        let items = &self.items;
        let mut seen = std::collections::HashSet::new();
        self.order
            .retain(|f| items.get(f).is_some_and(Item::evictable) && seen.insert(f.clone()));
        self.files = self.order.len();
        self.bytes = self.order.iter().map(|f| items[f].bytes).sum();
    }

    /// Removes `file` from the index (and from the bounds' totals when it counted there).
    fn forget(&mut self, file: &str) -> Option<Item> {
        let item = self.items.remove(file)?;
        if item.evictable() {
            self.files -= 1;
            self.bytes -= item.bytes;
        }
        Some(item)
    }

    fn evict(&mut self, dir: &Path, b: Bounds, stats: &Stats) {
        while self.files > b.max_files || self.bytes > b.max_bytes {
            let Some(file) = self.order.pop_front() else {
                break;
            };
            if !self.items.get(&file).is_some_and(Item::evictable) {
                continue; // labelled or deleted since
            }
            let path = dir.join(&file);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!(
                        "Collected frame could not be deleted; it stays. file={} error={e}",
                        path.display()
                    );
                    stats.errors.fetch_add(1, Relaxed);
                    continue;
                }
            }
            let line = Line::Evict {
                file: file.clone(),
                time: crate::event::rfc3339(std::time::SystemTime::now()),
            };
            if let Err(e) = self.record(&line, dir) {
                log::warn!("Collect manifest not written. error={e}");
            }
            self.forget(&file);
            stats.evicted.fetch_add(1, Relaxed);
        }
    }
}

/// The folder a label's files go in: the label, with what a file system or a path cannot
/// hold replaced by '_'.
pub fn folder_for(label: &str) -> String {
    let mut s: String = label
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .take(MAX_LABEL)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}

/// A label a person gives must be its own folder name.
pub fn check_label(label: &str) -> Result<(), DatasetError> {
    if label.is_empty() || label.chars().count() > MAX_LABEL || folder_for(label) != label {
        return Err(DatasetError::BadLabel(label.to_owned()));
    }
    Ok(())
}

fn folder_of(file: &str) -> &str {
    file.split_once('/').map_or("", |(f, _)| f)
}

fn name_of(file: &str) -> &str {
    file.rsplit_once('/').map_or(file, |(_, n)| n)
}

/// `name`, or `stem-2.ext`, `stem-3.ext`, ... : the first not taken in `dir`.
fn unique(dir: &Path, name: &str) -> String {
    if !dir.join(name).exists() {
        return name.to_owned();
    }
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    (2..)
        .map(|n| {
            if ext.is_empty() {
                format!("{stem}-{n}")
            } else {
                format!("{stem}-{n}.{ext}")
            }
        })
        .find(|n| !dir.join(n).exists())
        .unwrap_or_else(|| name.to_owned())
}

#[cfg(test)]
mod tests;
