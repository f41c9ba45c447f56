//! The `files` source: images from disk, in name order, once or looping.
//!
//! `path` is a directory (walked recursively), one file, or a glob pattern. The listing is made
//! at `open`; an unreadable directory or an empty listing is an error there. Files are read on
//! the capture thread and handed over still encoded; a file that is not an image is found by the
//! worker that decodes it, logged with its path, counted as failed and skipped. With
//! `labels_from_dirs`, each frame's true label is the name of the folder holding it (as in
//! `plant/<class>/leaf.jpg`), so the daemon reports accuracy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{validate_fps, FrameSource, Pacer, SourceError};
use crate::frame::{Frame, PixelFormat};
use crate::problems::Problems;
use crate::stop::StopToken;

/// `type = "files"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// A directory (recursive), one image file, or a glob pattern such as "photos/*.jpg".
    pub path: String,
    /// Start again from the first file after the last. Default false (the daemon stops at the end).
    #[serde(default, rename = "loop")]
    pub repeat: bool,
    /// Frames per second, emulating a camera (frames are dropped when workers fall behind).
    /// 0 = as fast as the workers take them, every file processed. Default 0.
    #[serde(default)]
    pub fps: f64,
    /// Use each file's folder name as its true label, for accuracy figures. Default false.
    #[serde(default)]
    pub labels_from_dirs: bool,
}

impl FilesConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if self.path.trim().is_empty() {
            p.push(
                format!("{key}.path"),
                "must name a directory, a file or a glob pattern",
            );
        }
        if is_glob(&self.path) {
            if let Err(e) = glob::Pattern::new(&self.path) {
                p.push(format!("{key}.path"), format!("invalid glob pattern: {e}"));
            }
        }
        validate_fps(key, self.fps, p);
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

pub struct FilesSource {
    cfg: FilesConfig,
    files: Vec<PathBuf>,
    next: usize,
    pacer: Pacer,
}

impl FilesSource {
    pub fn new(cfg: FilesConfig) -> FilesSource {
        let pacer = Pacer::new(cfg.fps);
        FilesSource {
            cfg,
            files: Vec::new(),
            next: 0,
            pacer,
        }
    }

    /// Files in the order they will be delivered (after `open`).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SourceError {
    move |source| SourceError::Io { what, source }
}

/// Lists regular files under `dir`, recursively, skipping hidden entries; sorted by path.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let entries = std::fs::read_dir(dir).map_err(io(format!(
        "cannot read directory {}: check that it exists and that the daemon's user may read it",
        dir.display()
    )))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("cannot list directory {}", dir.display())))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let meta =
            std::fs::metadata(&path).map_err(io(format!("cannot read {}", path.display())))?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

impl FrameSource for FilesSource {
    fn describe(&self) -> String {
        format!("files:{}", self.cfg.path)
    }

    fn live(&self) -> bool {
        self.cfg.fps > 0.0
    }

    fn open(&mut self) -> Result<(), SourceError> {
        let mut files = Vec::new();
        let path = Path::new(&self.cfg.path);
        if is_glob(&self.cfg.path) {
            let paths = glob::glob(&self.cfg.path).map_err(|e| {
                SourceError::Input(format!("invalid glob pattern {:?}: {e}", self.cfg.path))
            })?;
            for p in paths {
                let p = p.map_err(|e| {
                    SourceError::Input(format!("cannot read {}: {}", e.path().display(), e.error()))
                })?;
                if p.is_file() {
                    files.push(p);
                }
            }
        } else {
            let meta = std::fs::metadata(path).map_err(io(format!(
                "cannot open {}: check `source.path` (a directory, an image file or a glob pattern)",
                path.display()
            )))?;
            if meta.is_dir() {
                walk(path, &mut files)?;
            } else {
                files.push(path.to_owned());
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(SourceError::Input(format!(
                "no files found at {:?}: check `source.path`",
                self.cfg.path
            )));
        }
        self.files = files;
        self.next = 0;
        Ok(())
    }

    fn next_frame(&mut self, stop: &StopToken) -> Result<Option<Frame>, SourceError> {
        loop {
            if self.next >= self.files.len() {
                if !self.cfg.repeat {
                    return Ok(None);
                }
                self.next = 0;
            }
            if self.pacer.wait(stop) {
                return Ok(None);
            }
            let path = &self.files[self.next];
            self.next += 1;
            match std::fs::read(path) {
                Ok(data) => {
                    let format = if data.starts_with(&[0xFF, 0xD8]) {
                        PixelFormat::Mjpeg
                    } else {
                        PixelFormat::Encoded
                    };
                    let mut frame = Frame::new(format, 0, 0, data);
                    frame.origin = Some(Arc::from(path.display().to_string()));
                    if self.cfg.labels_from_dirs {
                        frame.truth = path
                            .parent()
                            .and_then(Path::file_name)
                            .map(|n| Arc::from(n.to_string_lossy().into_owned()));
                    }
                    return Ok(Some(frame));
                }
                // A file that vanished or cannot be read is skipped, not a broken source.
                Err(e) => log::warn!(
                    "Skipping unreadable file. path={} error={e}",
                    path.display()
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(path: &str) -> FilesConfig {
        FilesConfig {
            path: path.into(),
            repeat: false,
            fps: 0.0,
            labels_from_dirs: true,
        }
    }

    #[test]
    fn lists_recursively_in_order_with_folder_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (sub, name) in [("b", "2.png"), ("a", "1.png"), ("a", ".hidden")] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
            std::fs::write(dir.path().join(sub).join(name), b"x").expect("write");
        }
        let mut s = FilesSource::new(cfg(dir.path().to_str().expect("utf8")));
        s.open().expect("open");
        let stop = StopToken::new();
        let a = s.next_frame(&stop).expect("frame").expect("some");
        let b = s.next_frame(&stop).expect("frame").expect("some");
        assert_eq!(a.truth.as_deref(), Some("a"));
        assert_eq!(b.truth.as_deref(), Some("b"));
        assert!(s.next_frame(&stop).expect("end").is_none());
    }

    #[test]
    fn glob_and_missing_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("x.jpg"), b"x").expect("write");
        std::fs::write(dir.path().join("y.txt"), b"y").expect("write");
        let pattern = format!("{}/*.jpg", dir.path().display());
        let mut s = FilesSource::new(cfg(&pattern));
        s.open().expect("glob");
        assert_eq!(s.files().len(), 1);
        let mut s = FilesSource::new(cfg("/nonexistent/images"));
        let e = s.open().expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/images"), "{e}");
        let mut s = FilesSource::new(cfg(&format!("{}/*.png", dir.path().display())));
        assert!(s
            .open()
            .expect_err("empty")
            .to_string()
            .contains("no files"));
    }
}
