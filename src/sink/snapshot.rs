//! The `snapshot` sink: writes the frame that triggered an event as a JPEG into a directory,
//! keeping at most `max_files` files and `max_mb` megabytes.
//!
//! The dispatcher names the file (so every sink's copy of the event carries it in `snapshot`)
//! only when this sink's queue has room for the event; the file is then written on this sink's
//! thread: decoded, optionally annotated with a banner (rule, label, score, time), encoded with
//! libjpeg-turbo and renamed into place, so readers never see half a file. An MJPEG frame with
//! `annotate = false` is stored as captured, without re-encoding.
//!
//! File names sort by capture time: `20261123T073812.345Z_00001234_defect.jpg` (time, frame
//! sequence, label). Retention counts only files named like that, so other files in the
//! directory are never deleted; on start the existing ones are counted, oldest deleted first.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Sink, SinkError};
use crate::event::Event;
use crate::frame::{decode_rgb, encode_jpeg, Frame, PixelFormat, RgbBuf};
use crate::problems::Problems;

/// `type = "snapshot"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSinkConfig {
    /// Sink name. Default "snapshot".
    #[serde(default)]
    pub name: Option<String>,
    /// Directory the JPEGs are written to; created if missing.
    pub dir: PathBuf,
    /// Keep at most this many snapshots (oldest deleted first). Default 1000.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    /// Keep at most this many megabytes (10^6 bytes) of snapshots. Default 500.
    #[serde(default = "default_max_mb")]
    pub max_mb: f64,
    /// JPEG quality, 1..100. Default 85.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Draw a banner with the rule, label, score and capture time on the image. Default true.
    #[serde(default = "default_annotate")]
    pub annotate: bool,
}

fn default_max_files() -> usize {
    1000
}
fn default_max_mb() -> f64 {
    500.0
}
fn default_quality() -> u8 {
    85
}
fn default_annotate() -> bool {
    true
}

impl SnapshotSinkConfig {
    pub fn validate(&self, key: &str, p: &mut Problems) {
        if self.dir.as_os_str().is_empty() {
            p.push(format!("{key}.dir"), "must not be empty");
        }
        p.range(&format!("{key}.max_files"), self.max_files, 1, 10_000_000);
        if !(self.max_mb.is_finite() && self.max_mb > 0.0) {
            p.push(
                format!("{key}.max_mb"),
                format!("expected a number of megabytes > 0, got {}", self.max_mb),
            );
        }
        p.range(&format!("{key}.quality"), self.quality, 1, 100);
    }
}

/// The file name for the snapshot of frame `seq` captured at `captured_at` (RFC 3339 with
/// milliseconds) that fired `label`: sortable by time, safe on any file system. `place`: the
/// source and region (`cam-2.r0c1`) where a daemon has several sources or regions, else empty
/// (and the name is as it always was).
pub fn file_name(captured_at: &str, seq: u64, place: &str, label: &str) -> String {
    let time: String = captured_at
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let safe = |s: &str, keep: &[char]| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || keep.contains(&c) {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect()
    };
    let mut label = safe(label, &['-']);
    if label.is_empty() {
        label.push('_');
    }
    if place.is_empty() {
        format!("{time}_{seq:08}_{label}.jpg")
    } else {
        format!("{time}_{}_{seq:08}_{label}.jpg", safe(place, &['-', '.']))
    }
}

/// Whether `name` is a snapshot this sink wrote (`file_name`'s shape), so retention never
/// touches other files.
fn is_snapshot_name(name: &str) -> bool {
    let b = name.as_bytes();
    name.ends_with(".jpg")
        && b.len() > 21
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'.'
        && b[19] == b'Z'
        && b[20] == b'_'
}

pub struct SnapshotSink {
    dir: PathBuf,
    max_files: usize,
    max_bytes: u64,
    quality: u8,
    annotate: bool,
    /// Snapshots on disk in name (capture time) order, oldest first, with their sizes.
    kept: VecDeque<(String, u64)>,
    bytes: u64,
    rgb: RgbBuf,
}

impl SnapshotSink {
    pub fn open(cfg: &SnapshotSinkConfig) -> Result<SnapshotSink, SinkError> {
        fs::create_dir_all(&cfg.dir).map_err(|source| SinkError::Io {
            what: format!(
                "cannot create snapshot directory {} (check the path and that the service may write there)",
                cfg.dir.display()
            ),
            source,
        })?;
        let mut kept = Vec::new();
        let entries = fs::read_dir(&cfg.dir).map_err(|source| SinkError::Io {
            what: format!("cannot list snapshot directory {}", cfg.dir.display()),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_snapshot_name(&name) {
                let size = entry.metadata().map_or(0, |m| m.len());
                kept.push((name, size));
            }
        }
        kept.sort();
        let bytes = kept.iter().map(|(_, s)| s).sum();
        let mut sink = SnapshotSink {
            dir: cfg.dir.clone(),
            max_files: cfg.max_files,
            max_bytes: (cfg.max_mb * 1e6) as u64,
            quality: cfg.quality,
            annotate: cfg.annotate,
            kept: kept.into(),
            bytes,
            rgb: RgbBuf::default(),
        };
        sink.enforce_limits();
        Ok(sink)
    }

    /// Files currently kept, oldest first.
    pub fn kept(&self) -> impl Iterator<Item = &str> {
        self.kept.iter().map(|(n, _)| n.as_str())
    }

    fn enforce_limits(&mut self) {
        while self.kept.len() > self.max_files
            || (self.bytes > self.max_bytes && self.kept.len() > 1)
        {
            let Some((name, size)) = self.kept.pop_front() else {
                break;
            };
            self.bytes -= size;
            let path = self.dir.join(&name);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!(
                        "Cannot delete old snapshot. file={} error={e}",
                        path.display()
                    );
                }
            }
        }
    }

    fn jpeg(&mut self, event: &Event, frame: &Frame) -> Result<Vec<u8>, SinkError> {
        if !self.annotate && frame.format == PixelFormat::Mjpeg {
            return Ok(frame.data.clone());
        }
        decode_rgb(frame, None, &mut self.rgb).map_err(|e| SinkError::Io {
            what: format!("cannot decode frame {} for its snapshot", frame.seq),
            source: std::io::Error::other(e.to_string()),
        })?;
        if self.annotate {
            let text = format!(
                "{} {} {:.2}  {}",
                event.rule.as_deref().unwrap_or("-"),
                event.label,
                event.score,
                event.captured_at
            );
            banner(&mut self.rgb, &text);
        }
        encode_jpeg(&self.rgb, self.quality).map_err(|source| SinkError::Io {
            what: format!("cannot encode frame {} as JPEG", frame.seq),
            source,
        })
    }

    fn write(&self, name: &str, jpeg: &[u8]) -> Result<(), SinkError> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(name);
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(jpeg)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)
        })();
        result.map_err(|source| {
            let _ = fs::remove_file(&tmp);
            SinkError::Io {
                what: format!(
                    "cannot write snapshot {} (disk full or directory not writable?)",
                    path.display()
                ),
                source,
            }
        })
    }
}

impl Sink for SnapshotSink {
    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        Err(SinkError::Build {
            what: format!(
                "snapshot sink got frame {} without its image (internal: the dispatcher attaches frames for this sink)",
                event.frame_seq
            ),
        })
    }

    fn wants_frames(&self) -> bool {
        true
    }

    fn send_with_frame(&mut self, event: &Event, frame: &Frame) -> Result<(), SinkError> {
        let Some(name) = event.snapshot.as_deref() else {
            return Err(SinkError::Build {
                what: format!("event for frame {} has no snapshot name", event.frame_seq),
            });
        };
        let jpeg = self.jpeg(event, frame)?;
        self.write(name, &jpeg)?;
        self.bytes += jpeg.len() as u64;
        // Workers finish out of order: keep the list in name (= capture time) order, so the
        // oldest frames go first.
        let at = self.kept.partition_point(|(n, _)| n.as_str() < name);
        self.kept.insert(at, (name.to_owned(), jpeg.len() as u64));
        self.enforce_limits();
        Ok(())
    }
}

/// Draws `text` in white on a black band across the top of the image, with the 8x8 font scaled
/// to the image width (1x up to 400 px wide, then 2x, 3x ...). Characters outside ASCII are
/// drawn as `?`; text that does not fit is cut.
pub fn banner(img: &mut RgbBuf, text: &str) {
    let (w, h) = (img.width as usize, img.height as usize);
    let scale = (w / 400).max(1);
    let glyph = 8 * scale;
    let band = (glyph + 2 * scale).min(h);
    for px in img.data[..band * w * 3].chunks_exact_mut(3) {
        for c in px {
            *c /= 4;
        }
    }
    for (i, ch) in text.chars().enumerate() {
        let x0 = scale + i * glyph;
        if x0 + glyph > w {
            break;
        }
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            b'?' as usize
        };
        let rows = font8x8::legacy::BASIC_LEGACY[code];
        for (gy, bits) in rows.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 0 {
                    continue;
                }
                for sy in 0..scale {
                    let y = scale + gy * scale + sy;
                    if y >= band {
                        continue;
                    }
                    for sx in 0..scale {
                        let o = (y * w + x0 + gx * scale + sx) * 3;
                        img.data[o..o + 3].fill(255);
                    }
                }
            }
        }
    }
}

/// Snapshot directory entries in name order (for tests and tools).
pub fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_snapshot_name(n))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, name: &str) -> Event {
        let mut e = Event::example();
        e.frame_seq = seq;
        e.snapshot = Some(name.to_owned());
        e
    }

    fn frame(w: u32, h: u32, level: u8) -> Frame {
        Frame::new(PixelFormat::Rgb24, w, h, vec![level; (w * h * 3) as usize])
    }

    #[test]
    fn names_sort_by_time_and_are_recognised() {
        let a = file_name("2026-11-23T07:38:12.345Z", 7, "", "leaf blight/ä");
        assert_eq!(a, "20261123T073812.345Z_00000007_leaf_blight__.jpg");
        assert!(is_snapshot_name(&a));
        let b = file_name("2026-11-23T07:38:12.346Z", 8, "", "");
        assert!(a < b && is_snapshot_name(&b), "{b}");
        // Several sources or regions: the place comes after the time.
        let c = file_name("2026-11-23T07:38:12.346Z", 8, "cam-2.r0c1", "dent");
        assert_eq!(c, "20261123T073812.346Z_cam-2.r0c1_00000008_dent.jpg");
        assert!(b < c && is_snapshot_name(&c), "{c}");
        assert!(!is_snapshot_name("holiday.jpg"));
        assert!(!is_snapshot_name(
            ".20261123T073812.345Z_00000007_x.jpg.tmp"
        ));
    }

    #[test]
    fn retention_keeps_the_newest_files_within_both_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("keep-me.jpg"), b"not ours").expect("write");
        let cfg = SnapshotSinkConfig {
            name: None,
            dir: dir.path().to_owned(),
            max_files: 5,
            max_mb: 1.0,
            quality: 80,
            annotate: true,
        };
        let mut sink = SnapshotSink::open(&cfg).expect("open");
        let mut names = Vec::new();
        // Out of order, as two workers deliver: retention still goes by capture time.
        for seq in [3, 4, 5, 6, 7, 0, 1, 2] {
            let name = file_name(
                &format!("2026-11-23T07:38:{:02}.000Z", seq),
                seq,
                "",
                "defect",
            );
            sink.send_with_frame(&event(seq, &name), &frame(64, 48, (30 * seq) as u8))
                .expect("snapshot");
            names.push(name);
        }
        names.sort();
        assert_eq!(list(dir.path()).expect("list"), names[3..].to_vec());
        assert!(dir.path().join("keep-me.jpg").exists(), "foreign file kept");
        // Each file is a JPEG of the frame's size.
        let img = image::open(dir.path().join(&names[7])).expect("decodable JPEG");
        assert_eq!((img.width(), img.height()), (64, 48));

        // Reopened with a byte limit smaller than what is there: the oldest go first.
        let one = fs::metadata(dir.path().join(&names[7]))
            .expect("meta")
            .len();
        let cfg = SnapshotSinkConfig {
            max_mb: (one * 2) as f64 / 1e6 + 1e-7,
            ..cfg
        };
        let sink = SnapshotSink::open(&cfg).expect("reopen");
        let kept: Vec<&str> = sink.kept().collect();
        assert!(
            kept.len() <= 3 && kept.last() == Some(&names[7].as_str()),
            "{kept:?}"
        );
        assert_eq!(list(dir.path()).expect("list").len(), kept.len());
    }

    #[test]
    fn mjpeg_without_annotation_is_stored_as_captured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = SnapshotSinkConfig {
            name: None,
            dir: dir.path().to_owned(),
            max_files: 10,
            max_mb: 10.0,
            quality: 90,
            annotate: false,
        };
        let mut sink = SnapshotSink::open(&cfg).expect("open");
        let jpeg = encode_jpeg(
            &RgbBuf {
                width: 32,
                height: 16,
                data: vec![128; 32 * 16 * 3],
            },
            90,
        )
        .expect("encode");
        let f = Frame::new(PixelFormat::Mjpeg, 0, 0, jpeg.clone());
        let name = file_name("2026-11-23T07:38:12.345Z", 1, "", "ok");
        sink.send_with_frame(&event(1, &name), &f)
            .expect("snapshot");
        assert_eq!(fs::read(dir.path().join(&name)).expect("read"), jpeg);
    }

    #[test]
    fn banner_darkens_the_band_and_draws_white_text() {
        let mut img = RgbBuf {
            width: 120,
            height: 40,
            data: vec![200; 120 * 40 * 3],
        };
        banner(&mut img, "AB");
        let px = |x: usize, y: usize| img.data[(y * 120 + x) * 3];
        // Below the band: untouched. Band background: darkened. Some glyph pixels: white.
        assert_eq!(px(5, 30), 200);
        assert_eq!(px(100, 5), 50);
        let white = (0..10)
            .flat_map(|y| (0..20).map(move |x| (x, y)))
            .filter(|&(x, y)| px(x, y) == 255)
            .count();
        assert!(white > 10, "{white} white pixels");
    }

    #[test]
    fn an_unwritable_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = SnapshotSinkConfig {
            name: None,
            dir: dir.path().join("sub"),
            max_files: 10,
            max_mb: 10.0,
            quality: 90,
            annotate: true,
        };
        let mut sink = SnapshotSink::open(&cfg).expect("open");
        fs::remove_dir(dir.path().join("sub")).expect("rmdir");
        let name = file_name("2026-11-23T07:38:12.345Z", 1, "", "ok");
        let err = sink
            .send_with_frame(&event(1, &name), &frame(8, 8, 0))
            .expect_err("directory is gone");
        assert!(err.to_string().contains("cannot write snapshot"), "{err}");
        assert_eq!(sink.kept().count(), 0);
    }
}
