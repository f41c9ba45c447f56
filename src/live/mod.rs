//! What the live view shows, per source: the latest classified frame, its top-k (of the whole
//! frame, or of each region and merged over them), a short history of scores, and the recent
//! events. Written by the dispatcher, read by the HTTP server; `source` keeps one source's state.
//!
//! Memory is bounded, per source: one frame (the latest) and its JPEG, the latest top-k of each
//! region (at most [`crate::source::regions::MAX_REGIONS`]), [`HISTORY_POINTS`] score points of
//! at most top-k entries each (one per [`HISTORY_STEP_MS`] at most, so ~5 minutes) and
//! [`RECENT_EVENTS`] events; plus [`RECENT_EVENTS`] events of all sources. The sources are the
//! configured ones ([`Live::set_sources`], called at start and on each reload; a source removed
//! by a reload is forgotten), so N sources hold N times that. The JPEG of a source's latest
//! frame is encoded on demand, once per frame.

mod source;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::event::{Event, TopEntry};
use crate::frame::{decode_rgb, Frame, PixelFormat, RgbBuf};
use crate::source::regions::Region;
use source::SourceLive;
pub use source::{RegionCounts, RegionView, SourceCounts, SourceView};

/// Score points kept for each source's timeline.
pub const HISTORY_POINTS: usize = 1200;
/// Minimum spacing of timeline points, milliseconds.
pub const HISTORY_STEP_MS: u64 = 250;
/// Events kept for `/api/events` (of all sources, and of each source).
pub const RECENT_EVENTS: usize = 200;

/// One timeline point: capture time (ms since the Unix epoch) and the top-k of that frame as
/// `[label, score]` pairs (for a source with regions, each label's best score over the frame's
/// regions, whichever model scored it). Labels, not class indices: a source's regions may use
/// models with different label lists.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t: u64,
    pub top: Vec<(String, f32)>,
}

/// A source's latest classified frame, as `/api/live` returns it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latest {
    pub seq: u64,
    pub captured_at: String,
    pub top: Vec<TopEntry>,
    /// Frame size, when the frame had it or once its JPEG was served (else 0).
    pub width: u32,
    pub height: u32,
}

/// A configured source as the live view is told it.
#[derive(Debug, Clone)]
pub struct LiveSource {
    pub name: String,
    /// Its regions; empty: the whole frame.
    pub regions: Vec<Region>,
    /// The configuration entry (any text that changes when the entry changes): a changed entry
    /// restarts the source's frame numbers, so its live state starts afresh.
    pub key: String,
}

/// A source name that the daemon does not have (`/frame.jpg?source=`, a 404).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no source named {name:?}; the sources are: {}", .known.join(", "))]
pub struct UnknownSource {
    pub name: String,
    pub known: Vec<String>,
}

#[derive(Default)]
struct Inner {
    /// In configuration order; the first is the default of `?source=`.
    sources: Vec<SourceLive>,
    events: VecDeque<Arc<Event>>,
    /// Events ever recorded; the oldest kept one has number `events_total - events.len()`.
    events_total: u64,
}

/// A frame's sequence number and its JPEG bytes.
pub type Jpeg = (u64, Arc<Vec<u8>>);

/// Shared by the dispatcher (writer) and the HTTP server (readers) behind one lock, held only
/// to copy or record (never while a JPEG is encoded).
#[derive(Default)]
pub struct Live {
    /// Written by the dispatcher thread (each classification and event) and by the daemon's
    /// reload ([`Live::set_sources`]); read by the HTTP handler threads. Held for copies and
    /// plain assignments only.
    inner: Mutex<Inner>,
}

impl Live {
    /// A live view that learns its sources from the frames it is given (no region rectangles
    /// until [`Live::set_sources`]).
    pub fn new() -> Arc<Live> {
        Arc::new(Live::default())
    }

    /// A live view of these sources, in this order.
    pub fn with_sources(sources: &[LiveSource]) -> Arc<Live> {
        let live = Live::default();
        live.set_sources(sources);
        Arc::new(live)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (plain assignments): go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The daemon's sources (at start, and after a reload): unlisted ones are forgotten, new
    /// ones added, a listed one keeps its state unless its entry changed.
    pub fn set_sources(&self, sources: &[LiveSource]) {
        let mut g = self.lock();
        let mut old = std::mem::take(&mut g.sources);
        g.sources = sources
            .iter()
            .map(|s| {
                let kept = old
                    .iter()
                    .position(|o| *o.name == *s.name && o.key.as_ref().is_none_or(|k| *k == s.key));
                match kept {
                    Some(i) => {
                        let mut o = old.swap_remove(i);
                        o.key = Some(s.key.clone());
                        o.set_regions(&s.regions);
                        o
                    }
                    None => {
                        SourceLive::new(s.name.as_str().into(), Some(s.key.clone()), &s.regions)
                    }
                }
            })
            .collect();
    }

    /// Records a classification of a source's whole frame (`region` `None`) or of one of its
    /// regions (dispatcher). A source the live view was not told of is added.
    #[allow(clippy::too_many_arguments)]
    pub fn classified(
        &self,
        source: &str,
        region: Option<&str>,
        seq: u64,
        captured_ms: u64,
        captured_at: &str,
        top: &[TopEntry],
        frame: Option<Arc<Frame>>,
    ) {
        let (width, height) = frame.as_ref().map_or((0, 0), |f| (f.width, f.height));
        let latest = Latest {
            seq,
            captured_at: captured_at.to_owned(),
            top: top.to_vec(),
            width,
            height,
        };
        let mut g = self.lock();
        let i = match g.sources.iter().position(|s| &*s.name == source) {
            Some(i) => i,
            None => {
                g.sources.push(SourceLive::new(source.into(), None, &[]));
                g.sources.len() - 1
            }
        };
        g.sources[i].classified(region, latest, captured_ms, frame);
    }

    /// Records an event (dispatcher).
    pub fn event(&self, e: &Arc<Event>) {
        let mut g = self.lock();
        if g.events.len() == RECENT_EVENTS {
            g.events.pop_front();
        }
        g.events.push_back(Arc::clone(e));
        g.events_total += 1;
        if let Some(s) = g.sources.iter_mut().find(|s| *s.name == *e.source) {
            s.event(e);
        }
    }

    /// The canonical name of `source`, or of the first source when `None`.
    pub fn resolve(&self, source: Option<&str>) -> Result<Arc<str>, UnknownSource> {
        let g = self.lock();
        let found = match source {
            Some(name) => g.sources.iter().find(|s| &*s.name == name),
            None => g.sources.first(),
        };
        found
            .map(|s| Arc::clone(&s.name))
            .ok_or_else(|| UnknownSource {
                name: source.unwrap_or("").to_owned(),
                known: g.sources.iter().map(|s| s.name.to_string()).collect(),
            })
    }

    fn with_source<T>(
        &self,
        source: Option<&str>,
        f: impl FnOnce(&SourceLive) -> T,
    ) -> Result<T, UnknownSource> {
        let name = self.resolve(source)?;
        let g = self.lock();
        match g.sources.iter().find(|s| s.name == name) {
            Some(s) => Ok(f(s)),
            None => Err(UnknownSource {
                name: name.to_string(),
                known: g.sources.iter().map(|s| s.name.to_string()).collect(),
            }),
        }
    }

    /// The first source's latest frame (what `/api/live` always returned at its top level).
    pub fn latest(&self) -> Option<Latest> {
        self.lock().sources.first().and_then(|s| s.latest())
    }

    /// Every source's latest state, in configuration order.
    pub fn sources(&self) -> Vec<SourceView> {
        self.lock().sources.iter().map(|s| s.view()).collect()
    }

    /// Every source's counters and latest best scores, for `/metrics`.
    pub fn counts(&self) -> Vec<SourceCounts> {
        self.lock().sources.iter().map(|s| s.counts()).collect()
    }

    /// Timeline points of `source` (default the first) captured after `since` (ms since the
    /// Unix epoch).
    pub fn history_since(
        &self,
        source: Option<&str>,
        since: u64,
    ) -> Result<Vec<Point>, UnknownSource> {
        self.with_source(source, |s| s.history_since(since))
    }

    /// The last `limit` events, oldest first, and the total recorded so far: of all sources
    /// (`None`) or of one.
    pub fn recent_events(
        &self,
        source: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Arc<Event>>, u64), UnknownSource> {
        if source.is_some() {
            return self.with_source(source, |s| s.recent_events(limit));
        }
        let g = self.lock();
        let skip = g.events.len().saturating_sub(limit);
        Ok((
            g.events.iter().skip(skip).cloned().collect(),
            g.events_total,
        ))
    }

    /// The latest frame of `source` (default the first) as JPEG with its sequence number,
    /// encoded once per frame: an MJPEG frame is served as captured. `Ok(None)`: no frame yet.
    pub fn jpeg(
        &self,
        source: Option<&str>,
    ) -> Result<Option<Result<Jpeg, String>>, UnknownSource> {
        let (name, frame, cached) = {
            let name = self.resolve(source)?;
            let g = self.lock();
            let Some(s) = g.sources.iter().find(|s| s.name == name) else {
                return Ok(None);
            };
            let Some(frame) = s.frame.clone() else {
                return Ok(None);
            };
            (name, frame, s.jpeg.clone())
        };
        if let Some((seq, bytes)) = cached {
            if seq == frame.seq {
                return Ok(Some(Ok((seq, bytes))));
            }
        }
        let (bytes, size) = if frame.format == PixelFormat::Mjpeg {
            // The header alone gives the size (for the regions' pixel boxes).
            let size = image::ImageReader::new(std::io::Cursor::new(&frame.data))
                .with_guessed_format()
                .ok()
                .and_then(|r| r.into_dimensions().ok());
            (frame.data.clone(), size)
        } else {
            let mut rgb = RgbBuf::default();
            if let Err(e) = decode_rgb(&frame, None, &mut rgb) {
                return Ok(Some(Err(format!("cannot decode frame {}: {e}", frame.seq))));
            }
            match crate::frame::encode_jpeg(&rgb, 80) {
                Ok(b) => (b, Some((rgb.width, rgb.height))),
                Err(e) => return Ok(Some(Err(format!("cannot encode frame {}: {e}", frame.seq)))),
            }
        };
        let bytes = Arc::new(bytes);
        let mut g = self.lock();
        if let Some(s) = g.sources.iter_mut().find(|s| s.name == name) {
            s.jpeg = Some((frame.seq, Arc::clone(&bytes)));
            if size.is_some() {
                s.decoded_size = size;
            }
        }
        Ok(Some(Ok((frame.seq, bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(score: f32) -> Vec<TopEntry> {
        vec![TopEntry {
            index: 1,
            label: "scratch".into(),
            score,
        }]
    }

    fn entries(list: &[(usize, f32)]) -> Vec<TopEntry> {
        list.iter()
            .map(|&(index, score)| TopEntry {
                index,
                label: format!("class_{index}"),
                score,
            })
            .collect()
    }

    fn source(name: &str, regions: &[&str], key: &str) -> LiveSource {
        LiveSource {
            name: name.into(),
            regions: regions
                .iter()
                .enumerate()
                .map(|(i, r)| Region {
                    name: (*r).into(),
                    rect: [i as f64 * 0.5, 0.0, 0.5, 1.0],
                    model: "default".into(),
                })
                .collect(),
            key: key.into(),
        }
    }

    fn gray(seq: u64, level: u8) -> Arc<Frame> {
        let mut f = Frame::new(PixelFormat::Gray8, 16, 8, vec![level; 128]);
        f.seq = seq;
        Arc::new(f)
    }

    #[test]
    fn history_is_spaced_bounded_and_incremental() {
        let live = Live::default();
        for i in 0..(HISTORY_POINTS as u64 + 50) {
            // Two frames per step: only one point each.
            let t = 1000 + i * HISTORY_STEP_MS;
            live.classified("cam", None, 2 * i, t, "t", &top(0.5), None);
            live.classified("cam", None, 2 * i + 1, t + 10, "t", &top(0.6), None);
        }
        let all = live.history_since(None, 0).expect("source");
        assert_eq!(all.len(), HISTORY_POINTS);
        let last = all.last().expect("points").t;
        assert_eq!(live.history_since(None, last).expect("source").len(), 0);
        assert_eq!(
            live.history_since(Some("cam"), last - HISTORY_STEP_MS)
                .expect("source")
                .len(),
            1
        );
        assert_eq!(
            live.latest().expect("latest").seq,
            2 * (HISTORY_POINTS as u64 + 49) + 1
        );
    }

    #[test]
    fn an_older_frame_does_not_replace_the_latest() {
        let live = Live::default();
        live.classified("cam", None, 5, 1, "a", &top(0.9), None);
        live.classified("cam", None, 4, 2, "b", &top(0.1), None);
        assert_eq!(live.latest().expect("latest").seq, 5);
    }

    #[test]
    fn events_are_bounded_and_counted() {
        let live = Live::default();
        for seq in 0..(RECENT_EVENTS as u64 + 5) {
            let mut e = Event::example();
            e.frame_seq = seq;
            live.event(&Arc::new(e));
        }
        let (events, total) = live.recent_events(None, 3).expect("all sources");
        assert_eq!(total, RECENT_EVENTS as u64 + 5);
        let seqs: Vec<u64> = events.iter().map(|e| e.frame_seq).collect();
        assert_eq!(seqs, vec![202, 203, 204]);
    }

    #[test]
    fn jpeg_is_encoded_once_per_frame() {
        let live = Live::default();
        assert!(live.jpeg(None).is_err(), "no source yet");
        live.classified("cam", None, 3, 1, "t", &top(0.5), Some(gray(3, 100)));
        let (seq, a) = live
            .jpeg(None)
            .expect("source")
            .expect("frame")
            .expect("encodes");
        let (_, b) = live
            .jpeg(Some("cam"))
            .expect("source")
            .expect("frame")
            .expect("cached");
        assert_eq!(seq, 3);
        assert!(Arc::ptr_eq(&a, &b));
        let img = image::load_from_memory(&a).expect("JPEG");
        assert_eq!((img.width(), img.height()), (16, 8));
    }

    #[test]
    fn each_source_keeps_its_own_frame_scores_and_history() {
        let live = Live::with_sources(&[source("a", &[], "1"), source("b", &[], "1")]);
        assert_eq!(live.sources().len(), 2);
        assert!(
            live.jpeg(Some("b")).expect("known").is_none(),
            "no frame yet"
        );
        live.classified("a", None, 7, 1000, "t", &top(0.9), Some(gray(7, 20)));
        live.classified("b", None, 2, 1001, "t", &top(0.2), Some(gray(2, 220)));
        live.classified("b", None, 3, 2000, "t", &top(0.3), Some(gray(3, 230)));
        let views = live.sources();
        assert_eq!(views[0].latest.as_ref().map(|l| l.seq), Some(7));
        assert_eq!(views[1].latest.as_ref().map(|l| l.seq), Some(3));
        // The top level (and the default of `?source=`) is the first source.
        assert_eq!(live.latest().map(|l| l.seq), Some(7));
        let (seq_a, jpeg_a) = live.jpeg(None).expect("a").expect("frame").expect("jpeg");
        let (seq_b, jpeg_b) = live
            .jpeg(Some("b"))
            .expect("b")
            .expect("frame")
            .expect("jpeg");
        assert_eq!((seq_a, seq_b), (7, 3));
        let level = |j: &[u8]| {
            image::load_from_memory(j)
                .expect("JPEG")
                .to_luma8()
                .get_pixel(4, 4)
                .0[0]
        };
        assert!(level(jpeg_a.as_slice()) < 60 && level(jpeg_b.as_slice()) > 180);
        assert_eq!(live.history_since(Some("a"), 0).expect("a").len(), 1);
        assert_eq!(live.history_since(Some("b"), 0).expect("b").len(), 2);
        let err = live.history_since(Some("c"), 0).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "no source named \"c\"; the sources are: a, b"
        );
        assert!(live.jpeg(Some("c")).is_err() && live.recent_events(Some("c"), 5).is_err());
    }

    #[test]
    fn regions_keep_their_top_and_merge_into_the_sources() {
        let live = Live::with_sources(&[source("lanes", &["left", "right"], "1")]);
        let frame = Frame::new(PixelFormat::Gray8, 200, 100, vec![0; 20_000]);
        live.classified(
            "lanes",
            Some("left"),
            0,
            1000,
            "t",
            &entries(&[(0, 0.7), (1, 0.2)]),
            None,
        );
        // Half a frame: the source has no complete frame yet.
        assert!(live.sources()[0].latest.is_none());
        live.classified(
            "lanes",
            Some("right"),
            0,
            1000,
            "t",
            &entries(&[(1, 0.8), (0, 0.1)]),
            Some(Arc::new(frame)),
        );
        let view = &live.sources()[0];
        let latest = view.latest.as_ref().expect("the frame is complete");
        assert_eq!(
            latest.top,
            entries(&[(1, 0.8), (0, 0.7)]),
            "each label's best"
        );
        assert_eq!((latest.width, latest.height), (200, 100));
        let names: Vec<&str> = view.regions.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["left", "right"]);
        assert_eq!(view.regions[0].top[0].score, 0.7);
        assert_eq!(view.regions[1].top[0].index, 1);
        assert_eq!(view.regions[1].rect, Some([0.5, 0.0, 0.5, 1.0]));
        assert_eq!(view.regions[1].pixels, Some([100, 0, 100, 100]));
        assert_eq!(live.history_since(None, 0).expect("lanes").len(), 1);
        // A frame whose second region never comes is complete when the next frame starts.
        live.classified(
            "lanes",
            Some("left"),
            1,
            2000,
            "t",
            &entries(&[(2, 0.9)]),
            None,
        );
        live.classified(
            "lanes",
            Some("left"),
            2,
            3000,
            "t",
            &entries(&[(3, 0.6)]),
            None,
        );
        assert_eq!(live.latest().map(|l| l.seq), Some(1));
        let counts = live.counts();
        assert_eq!(counts[0].regions[0].classified, 3);
        assert_eq!(counts[0].regions[1].classified, 1);
        assert_eq!(counts[0].regions[0].top.as_ref().map(|t| t.index), Some(3));
        assert!(
            counts[0].top.is_none(),
            "a source with regions has no whole-frame top"
        );
    }

    #[test]
    fn events_are_kept_per_source_and_counted_per_region() {
        let live = Live::with_sources(&[source("a", &["left"], "1"), source("b", &[], "1")]);
        for (src, region) in [("a", Some("left")), ("b", None), ("a", Some("left"))] {
            let mut e = Event::example();
            e.source = src.into();
            e.region = region.map(str::to_owned);
            live.event(&Arc::new(e));
        }
        let (a, total_a) = live.recent_events(Some("a"), 10).expect("a");
        assert_eq!((a.len(), total_a), (2, 2));
        assert!(a.iter().all(|e| e.source == "a"));
        assert_eq!(live.recent_events(None, 10).expect("all").1, 3);
        let counts = live.counts();
        assert_eq!(
            (counts[0].frame_events, counts[0].regions[0].events),
            (0, 2)
        );
        assert_eq!(counts[1].frame_events, 1);
    }

    #[test]
    fn a_reload_forgets_removed_sources_and_restarts_changed_ones() {
        let live = Live::with_sources(&[source("a", &[], "1"), source("b", &[], "1")]);
        live.classified("a", None, 40, 1, "t", &top(0.5), None);
        live.classified("b", None, 50, 1, "t", &top(0.5), None);
        live.set_sources(&[
            source("b", &[], "2"),
            source("a", &[], "1"),
            source("c", &["x"], "1"),
        ]);
        let views = live.sources();
        let names: Vec<&str> = views.iter().map(|v| &*v.name).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert!(
            views[0].latest.is_none(),
            "b changed: its numbering starts over"
        );
        assert_eq!(views[1].latest.as_ref().map(|l| l.seq), Some(40), "a kept");
        live.classified("b", None, 0, 2, "t", &top(0.5), None);
        assert_eq!(live.latest().map(|l| l.seq), Some(0));
        live.set_sources(&[source("c", &["x"], "1")]);
        assert!(live.resolve(Some("a")).is_err());
        assert_eq!(live.resolve(None).as_deref(), Ok("c"));
    }
}
