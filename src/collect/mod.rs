//! Collecting the frames worth labelling: the dispatcher offers every classification to a
//! [`Tap`], which decides in a few comparisons whether the frame is worth keeping (an unsure
//! or close call, one of every N confident frames of its label, an event) and hands it to the
//! collector thread through a small bounded queue (full: the frame is skipped and counted, so
//! the dispatcher and the workers never wait). The collector decodes it (a region as its
//! crop), drops near duplicates of the frames kept recently at the same source and region by
//! a perceptual hash, and stores the rest in the [`Dataset`].
//!
//! - `config`: the `[collect]` table.
//! - `dataset`: the folder, its manifest, bounds, relabelling and deleting.
//! - `phash`: the difference hash.
//! - `import`: `lookout dataset import`.

pub mod config;
pub mod dataset;
pub mod import;
pub mod phash;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

pub use config::CollectConfig;
pub use dataset::{Bounds, Dataset, DatasetError, Item, Why};

use crate::event::TopEntry;
use crate::frame::{decode_rgb, encode_jpeg, jpeg_data, Frame, RgbBuf};

/// The dataset the daemon collects into, if any: shared with the HTTP server, and replaced
/// when a reload changes `[collect] dir`.
pub type Shelf = Arc<Mutex<Option<Arc<Dataset>>>>;

/// What a pipeline collects with: the settings and the open dataset.
pub struct Collecting {
    pub cfg: CollectConfig,
    pub dataset: Arc<Dataset>,
}

/// `config`'s `[collect]` with its dataset: `current` when it is the same folder (the running
/// one, shared with the HTTP server), else the folder opened.
pub fn collecting(
    config: Option<&CollectConfig>,
    current: Option<&Arc<Dataset>>,
) -> Result<Option<Collecting>, DatasetError> {
    let Some(cfg) = config else {
        return Ok(None);
    };
    let dataset = match current {
        Some(d) if d.dir() == cfg.dir => Arc::clone(d),
        _ => Arc::new(Dataset::open(&cfg.dir)?),
    };
    Ok(Some(Collecting {
        cfg: cfg.clone(),
        dataset,
    }))
}

/// Frames waiting for the collector.
const QUEUE: usize = 4;
/// Hashes of the latest frames kept per source and region that a new one is compared with.
const RECENT: usize = 16;
/// A whole JPEG frame is hashed at a reduced DCT scale no smaller than this.
const HASH_SIZE: u32 = 64;

/// What the collector needs of each model: its name and file (for the manifest's hash).
#[derive(Debug, Clone)]
pub struct ModelRef {
    pub name: String,
    pub path: String,
}

/// A classification offered to the collector.
pub struct Offer<'a> {
    pub source: &'a Arc<str>,
    pub region: Option<&'a Arc<str>>,
    /// The region's rectangle (fractions of the frame); `None` for the whole frame.
    pub rect: Option<[f64; 4]>,
    pub model: usize,
    pub top: &'a [TopEntry],
    /// Whether the classification fired an event.
    pub event: bool,
    pub seq: u64,
    pub captured_at: SystemTime,
    pub frame: Option<&'a Arc<Frame>>,
}

/// A source and region (`None`: the whole frame).
type Place = (Arc<str>, Option<Arc<str>>);

struct Job {
    item: Item,
    name: String,
    place: Place,
    rect: Option<[f64; 4]>,
    frame: Arc<Frame>,
    model: usize,
}

/// The dispatcher's side: decides, counts the per-label samples, and queues.
pub struct Tap {
    cfg: CollectConfig,
    tx: Sender<Job>,
    dataset: Arc<Dataset>,
    models: Vec<ModelRef>,
    /// Confident frames seen per (model, label index), for `sample_every`.
    confident: HashMap<(usize, usize), u64>,
}

/// The collector thread's side.
pub struct Collector {
    cfg: CollectConfig,
    rx: Receiver<Job>,
    dataset: Arc<Dataset>,
    models: Vec<ModelRef>,
}

/// A tap and the collector it feeds (run [`Collector::run`] on a thread of its own).
pub fn channel(
    cfg: CollectConfig,
    dataset: Arc<Dataset>,
    models: Vec<ModelRef>,
) -> (Tap, Collector) {
    let (tx, rx) = bounded(QUEUE);
    (
        Tap {
            cfg: cfg.clone(),
            tx,
            dataset: Arc::clone(&dataset),
            models: models.clone(),
            confident: HashMap::new(),
        },
        Collector {
            cfg,
            rx,
            dataset,
            models,
        },
    )
}

impl Tap {
    /// Why `o` is worth keeping, if it is (and counts it toward its label's sample).
    fn why(&mut self, o: &Offer) -> Option<Why> {
        let c = &self.cfg;
        let best = o.top.first()?;
        let second = o.top.get(1).map_or(0.0, |t| t.score);
        if o.event && c.events {
            return Some(Why::Event);
        }
        if best.score < c.below_score {
            return Some(Why::LowScore);
        }
        if best.score - second < c.below_margin {
            return Some(Why::SmallMargin);
        }
        if c.sample_every > 0 {
            let seen = self.confident.entry((o.model, best.index)).or_insert(0);
            *seen += 1;
            if (*seen - 1).is_multiple_of(c.sample_every) {
                return Some(Why::Sample);
            }
        }
        None
    }

    /// Offers one classification; never blocks.
    pub fn offer(&mut self, o: Offer) {
        if let Some(only) = &self.cfg.sources {
            if !only.iter().any(|s| **s == **o.source) {
                return;
            }
        }
        let Some(frame) = o.frame else {
            return;
        };
        let Some(why) = self.why(&o) else {
            return;
        };
        let time = crate::event::rfc3339(o.captured_at);
        let place = match o.region {
            Some(r) => format!("{}.{r}", o.source),
            None => o.source.to_string(),
        };
        let predicted = o.top[0].label.clone();
        let item = Item {
            file: String::new(),
            label: predicted.clone(),
            predicted: Some(predicted),
            top: o.top.iter().map(|t| (t.label.clone(), t.score)).collect(),
            time: time.clone(),
            source: Some(o.source.to_string()),
            region: o.region.map(|r| r.to_string()),
            model: self.models.get(o.model).map(|m| m.name.clone()),
            model_sha256: None,
            why,
            bytes: 0,
            reviewed: false,
        };
        let job = Job {
            name: file_name(&time, &place, o.seq),
            item,
            place: (Arc::clone(o.source), o.region.cloned()),
            rect: o.rect,
            frame: Arc::clone(frame),
            model: o.model,
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(job) {
            self.dataset.stats.busy.fetch_add(1, Relaxed);
        }
    }
}

/// `20261123T073812.345Z_cam-2.left_00001234.jpg`: sorts by capture time.
fn file_name(captured_at: &str, place: &str, seq: u64) -> String {
    let time: String = captured_at
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{time}_{place}_{seq:08}.jpg")
}

impl Collector {
    /// Runs until the tap is dropped (the dispatcher ends).
    pub fn run(self) {
        let hashes: Vec<Option<String>> =
            self.models.iter().map(|m| model_sha256(&m.path)).collect();
        let bounds = Bounds {
            max_files: self.cfg.max_files,
            max_bytes: self.cfg.max_bytes(),
        };
        let mut recent: HashMap<Place, VecDeque<u64>> = HashMap::new();
        let mut rgb = RgbBuf::default();
        while let Ok(mut job) = self.rx.recv() {
            let stats = &self.dataset.stats;
            let (hash, crop) = match look(&job, &mut rgb) {
                Ok(v) => v,
                Err(e) => {
                    stats.errors.fetch_add(1, Relaxed);
                    log::warn!(
                        "Frame not collected: it could not be decoded. source={} frame={} error={e}",
                        job.place.0,
                        job.frame.seq
                    );
                    continue;
                }
            };
            let seen = recent.entry(job.place.clone()).or_default();
            if self.cfg.min_distance > 0
                && seen
                    .iter()
                    .any(|&h| phash::distance(h, hash) <= self.cfg.min_distance)
            {
                stats.near_duplicates.fetch_add(1, Relaxed);
                continue;
            }
            // Only a frame that is kept is encoded: a whole JPEG frame is stored as captured,
            // a region's crop or a raw frame (decoded whole into `rgb`) as a new JPEG.
            let data: std::borrow::Cow<[u8]> = match (&crop, jpeg_data(&job.frame)) {
                (None, Some(jpeg)) if job.rect.is_none() => jpeg.into(),
                (c, _) => match encode_jpeg(c.as_ref().unwrap_or(&rgb), self.cfg.quality) {
                    Ok(d) => d.into(),
                    Err(e) => {
                        stats.errors.fetch_add(1, Relaxed);
                        log::warn!(
                            "Frame not collected: it could not be encoded. source={} frame={} error={e}",
                            job.place.0,
                            job.frame.seq
                        );
                        continue;
                    }
                },
            };
            job.item.model_sha256 = hashes.get(job.model).cloned().flatten();
            let why = job.item.why;
            match self.dataset.add(job.item, &job.name, &data, Some(bounds)) {
                Ok(_) => {
                    if seen.len() == RECENT {
                        seen.pop_front();
                    }
                    seen.push_back(hash);
                    if let Some(k) = Why::ALL.iter().position(|&w| w == why) {
                        stats.kept[k].fetch_add(1, Relaxed);
                    }
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Relaxed);
                    log::warn!("Frame not collected. error={e}");
                }
            }
        }
    }
}

/// The frame's perceptual hash, and its region's crop. A whole JPEG frame is decoded into
/// `rgb` at a reduced scale (enough for the 9x8 hash: it is stored as captured); any other
/// frame whole, into `rgb`, then cropped to its region.
fn look(job: &Job, rgb: &mut RgbBuf) -> Result<(u64, Option<RgbBuf>), String> {
    let frame = &job.frame;
    if job.rect.is_none() && jpeg_data(frame).is_some() {
        let small = |w: u32, h: u32| (w.min(HASH_SIZE), h.min(HASH_SIZE));
        decode_rgb(frame, Some(&small), rgb).map_err(|e| e.to_string())?;
        return Ok((phash::dhash(rgb), None));
    }
    decode_rgb(frame, None, rgb).map_err(|e| e.to_string())?;
    Ok(match job.rect {
        Some(rect) => {
            let crop = crate::model::crop::crop(rgb, rect);
            (phash::dhash(&crop), Some(crop))
        }
        None => (phash::dhash(rgb), None),
    })
}

/// The sha256 of a model's file, for the manifest (`None` for the bundled model's name or a
/// file that cannot be read: the manifest then says nothing rather than something wrong).
fn model_sha256(path: &str) -> Option<String> {
    if path == crate::model::BUILTIN_NAME {
        return Some(crate::digest::sha256_hex(crate::model::BUILTIN_MODEL));
    }
    std::fs::read(Path::new(path))
        .ok()
        .map(|b| crate::digest::sha256_hex(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(scores: &[(usize, f32)]) -> Vec<TopEntry> {
        scores
            .iter()
            .map(|&(index, score)| TopEntry {
                index,
                label: format!("l{index}"),
                score,
            })
            .collect()
    }

    #[test]
    fn the_tap_keeps_unsure_close_sampled_and_event_frames() {
        let dir = tempfile::tempdir().unwrap();
        let d = Arc::new(Dataset::open(dir.path()).unwrap());
        let cfg: CollectConfig = toml::from_str(&format!(
            "dir = {:?}\nbelow_score = 0.6\nbelow_margin = 0.2\nsample_every = 3",
            dir.path()
        ))
        .unwrap();
        let (mut tap, _c) = channel(cfg, d, vec![]);
        let frame = Arc::new(Frame::new(
            crate::frame::PixelFormat::Rgb24,
            1,
            1,
            vec![0; 3],
        ));
        let source: Arc<str> = "cam".into();
        let mut offer = |t: &[(usize, f32)], event: bool| {
            let t = top(t);
            tap.why(&Offer {
                source: &source,
                region: None,
                rect: None,
                model: 0,
                top: &t,
                event,
                seq: 0,
                captured_at: SystemTime::now(),
                frame: Some(&frame),
            })
        };
        assert_eq!(offer(&[(0, 0.5), (1, 0.3)], false), Some(Why::LowScore));
        assert_eq!(offer(&[(0, 0.7), (1, 0.55)], false), Some(Why::SmallMargin));
        assert_eq!(offer(&[(0, 0.7), (1, 0.55)], true), Some(Why::Event));
        // Confident frames: the first of each label, then every third of that label.
        let kept: Vec<bool> = (0..7)
            .map(|_| offer(&[(0, 0.95), (1, 0.05)], false).is_some())
            .collect();
        assert_eq!(kept, [true, false, false, true, false, false, true]);
        assert_eq!(offer(&[(1, 0.95), (0, 0.05)], false), Some(Why::Sample));
    }

    #[test]
    fn file_names_sort_by_capture_time() {
        assert_eq!(
            file_name("2026-11-23T07:38:12.345Z", "cam-2.left", 1234),
            "20261123T073812.345Z_cam-2.left_00001234.jpg"
        );
    }
}
