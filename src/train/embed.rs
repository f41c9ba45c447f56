//! Embeddings: every image through the cut backbone (lookout's own decoding, preprocessing
//! and engine, as the daemon would see the photo) on one thread per core, each with its own
//! [`Session`] on the shared model; optionally the image flipped left-right as well. A cache
//! keyed by the file's sha256 (in a folder keyed by the backbone, the feature tensor and the
//! preprocessing) makes a second run quick. An image that cannot be read or decoded is skipped
//! and reported, not fatal.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::digest::sha256_hex;
use crate::frame::{Frame, PixelFormat, RgbBuf};
use crate::model::{Model, Session};

use super::TrainError;

/// One image's embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub plain: Vec<f32>,
    /// The image flipped left-right (only when asked for).
    pub flipped: Option<Vec<f32>>,
}

/// What [`embed_all`] did.
#[derive(Debug, Default)]
pub struct Embedded {
    /// Per input file: its embedding, or why it was skipped.
    pub results: Vec<Result<Embedding, String>>,
    /// Images whose embeddings came from the cache.
    pub cached: usize,
    pub elapsed: Duration,
}

/// An embedding cache folder for one backbone, feature tensor and preprocessing.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache under `root` for `context` (anything that changes the embeddings).
    pub fn new(root: &Path, context: &str) -> Cache {
        Cache {
            dir: root.join(&sha256_hex(context.as_bytes())[..16]),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, sha: &str, flipped: bool) -> PathBuf {
        self.dir
            .join(format!("{sha}{}.f32", if flipped { "-flip" } else { "" }))
    }

    fn get(&self, sha: &str, flipped: bool, dim: Option<usize>) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.file(sha, flipped)).ok()?;
        if bytes.len() % 4 != 0 || bytes.is_empty() || dim.is_some_and(|d| d * 4 != bytes.len()) {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }

    /// Stores an embedding (written to a temporary file, then renamed: a reader never sees
    /// half of one). Failures only cost a recomputation next time.
    fn put(&self, sha: &str, flipped: bool, v: &[f32]) {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let path = self.file(sha, flipped);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let ok = std::fs::create_dir_all(&self.dir)
            .and_then(|_| std::fs::write(&tmp, &bytes))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = ok {
            log::warn!(
                "Cannot write to the embedding cache. path={} error={e}",
                path.display()
            );
        }
    }
}

/// Embeds `files` with `model` on `threads` threads; with `flip`, each flipped too. Shows a
/// progress line on stderr when it is a terminal.
pub fn embed_all(
    model: &Arc<Model>,
    files: &[PathBuf],
    flip: bool,
    cache: Option<&Cache>,
    threads: usize,
) -> Result<Embedded, TrainError> {
    let started = Instant::now();
    // The next file to take: each worker takes one with fetch_add until they run out.
    let next = AtomicUsize::new(0);
    // Files finished and files served from the cache: written by the workers, read by the
    // progress line.
    let done = AtomicUsize::new(0);
    let cached = AtomicUsize::new(0);
    // Filled by the workers, one slot per file; read after they are joined.
    let results: Mutex<Vec<Option<Result<Embedding, String>>>> =
        Mutex::new(vec![None; files.len()]);
    let mut sessions = Vec::new();
    for _ in 0..threads.clamp(1, files.len().max(1)) {
        sessions.push(model.session().map_err(TrainError::Model)?);
    }
    let progress = crate::progress::Progress::new("embedding");
    std::thread::scope(|s| {
        for mut session in sessions {
            let (next, done, cached, results) = (&next, &done, &cached, &results);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = files.get(i) else { break };
                let (r, from_cache) = embed_one(&mut session, path, flip, cache);
                if from_cache {
                    cached.fetch_add(1, Ordering::Relaxed);
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        if progress.shown() {
            loop {
                let d = done.load(Ordering::Relaxed);
                let elapsed = started.elapsed().as_secs_f64().max(1e-3);
                let rate = d as f64 / elapsed;
                let left = if rate > 0.0 {
                    (files.len() - d) as f64 / rate
                } else {
                    0.0
                };
                let c = cached.load(Ordering::Relaxed);
                progress.show(
                    d,
                    files.len(),
                    &format!(" ({c} cached) {rate:.1} img/s, {left:.0} s left "),
                );
                if d >= files.len() {
                    progress.done();
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    let results = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not embedded".into())))
        .collect();
    Ok(Embedded {
        results,
        cached: cached.into_inner(),
        elapsed: started.elapsed(),
    })
}

/// One file's embedding(s), and whether they all came from the cache.
fn embed_one(
    session: &mut Session,
    path: &Path,
    flip: bool,
    cache: Option<&Cache>,
) -> (Result<Embedding, String>, bool) {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => return (Err(format!("cannot read file: {e}")), false),
    };
    let sha = sha256_hex(&data);
    let plain_cached = cache.and_then(|c| c.get(&sha, false, None));
    let dim = plain_cached.as_ref().map(Vec::len);
    let flip_cached = if flip {
        cache.and_then(|c| c.get(&sha, true, dim))
    } else {
        None
    };
    if let Some(plain) = &plain_cached {
        if !flip || flip_cached.is_some() {
            return (
                Ok(Embedding {
                    plain: plain.clone(),
                    flipped: flip_cached,
                }),
                true,
            );
        }
    }
    let format = if data.starts_with(&[0xFF, 0xD8]) {
        PixelFormat::Mjpeg
    } else {
        PixelFormat::Encoded
    };
    let frame = Frame::new(format, 0, 0, data);
    let run = |session: &mut Session, frame: &Frame| {
        session
            .classify_frame(frame)
            .map(|s| s.raw)
            .map_err(|e| crate::retry::chain(&e))
    };
    let plain = match plain_cached {
        Some(p) => p,
        None => match run(session, &frame) {
            Ok(p) => {
                if let Some(c) = cache {
                    c.put(&sha, false, &p);
                }
                p
            }
            Err(e) => return (Err(e), false),
        },
    };
    let flipped = if flip {
        let mut rgb = RgbBuf::default();
        // Decoded as the plain embedding's frame is (a JPEG at the same reduced DCT scale), so
        // the two copies differ only by the flip.
        if let Err(e) = session.decode(&frame, &mut rgb) {
            return (Err(crate::retry::chain(&e)), false);
        }
        mirror(&mut rgb);
        let mirrored = Frame::new(PixelFormat::Rgb24, rgb.width, rgb.height, rgb.data);
        match run(session, &mirrored) {
            Ok(f) => {
                if let Some(c) = cache {
                    c.put(&sha, true, &f);
                }
                Some(f)
            }
            Err(e) => return (Err(e), false),
        }
    } else {
        None
    };
    (Ok(Embedding { plain, flipped }), false)
}

/// Flips an RGB image left-right in place.
fn mirror(rgb: &mut RgbBuf) {
    let w = rgb.width as usize;
    for row in rgb.data.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_flips_each_row() {
        let mut rgb = RgbBuf {
            width: 3,
            height: 1,
            data: vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
        };
        mirror(&mut rgb);
        assert_eq!(rgb.data, vec![7, 8, 9, 4, 5, 6, 1, 2, 3]);
    }

    #[test]
    fn cache_round_trips_and_refuses_a_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::new(dir.path(), "ctx");
        c.put("aa", false, &[1.0, -2.5]);
        assert_eq!(c.get("aa", false, None), Some(vec![1.0, -2.5]));
        assert_eq!(c.get("aa", false, Some(3)), None);
        assert_eq!(c.get("aa", true, None), None);
    }
}
