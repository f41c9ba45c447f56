//! One source as the live view keeps it: its latest frame (one), the latest top-k of the whole
//! frame or of each of its regions, the merged top-k of its latest complete frame, its score
//! timeline and its recent events. Owned by [`super::Live`], behind its lock; this module does
//! no locking and no encoding.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;

use super::{Latest, Point, HISTORY_POINTS, HISTORY_STEP_MS, RECENT_EVENTS};
use crate::event::{Event, TopEntry};
use crate::frame::Frame;
use crate::source::regions::Region;

/// A region's latest classification, as `/api/live` returns it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegionView {
    pub name: String,
    /// `[x, y, width, height]`, fractions of the frame from the top left; `null` only for a
    /// region seen in a frame before the daemon told the live view its rectangle (a reload).
    pub rect: Option<[f64; 4]>,
    /// The same rectangle in pixels of the frame, when its size is known.
    #[serde(rename = "box", skip_serializing_if = "Option::is_none")]
    pub pixels: Option<[u32; 4]>,
    /// Frame number of the latest classification (absent before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The region's top-k, best first (empty before its first classification).
    pub top: Vec<TopEntry>,
}

/// A source's latest state for `/api/live` (health is added by the HTTP server).
#[derive(Debug, Clone, Serialize)]
pub struct SourceView {
    pub name: String,
    /// The latest complete frame: `seq`, `captured_at`, `top` (for a source with regions each
    /// label's best score over its regions), `width`, `height`; absent before the first.
    #[serde(flatten)]
    pub latest: Option<Latest>,
    /// Events recorded for this source.
    pub events: u64,
    /// Empty: the whole frame is classified.
    pub regions: Vec<RegionView>,
}

/// Counters and latest scores of a source for `/metrics`.
#[derive(Debug, Clone)]
pub struct SourceCounts {
    pub name: Arc<str>,
    /// Events of its whole frames (a source without regions).
    pub frame_events: u64,
    /// The latest whole frame's best entry (a source without regions).
    pub top: Option<TopEntry>,
    pub regions: Vec<RegionCounts>,
}

/// Counters and latest score of one region for `/metrics`.
#[derive(Debug, Clone)]
pub struct RegionCounts {
    pub name: Arc<str>,
    pub classified: u64,
    pub events: u64,
    pub top: Option<TopEntry>,
}

#[derive(Debug)]
pub(super) struct RegionLive {
    name: Arc<str>,
    rect: Option<[f64; 4]>,
    latest: Option<(u64, Vec<TopEntry>)>,
    classified: u64,
    events: u64,
}

/// The regions of one frame being merged into the source's top-k as they arrive.
#[derive(Debug)]
struct Pending {
    latest: Latest,
    ms: u64,
    /// Regions of this frame seen so far.
    seen: usize,
    /// How many entries the merged top-k keeps (the top-k size).
    k: usize,
}

pub(super) struct SourceLive {
    pub(super) name: Arc<str>,
    /// The configuration entry this state belongs to (`None`: learnt from a frame); a
    /// different one (a source changed by a reload, numbering its frames from 0 again) starts
    /// afresh.
    pub(super) key: Option<String>,
    regions: Vec<RegionLive>,
    latest: Option<Latest>,
    pending: Option<Pending>,
    /// The latest frame (one per source), for `/frame.jpg?source=`.
    pub(super) frame: Option<Arc<Frame>>,
    /// Its JPEG, encoded on demand, with the frame's number and decoded size.
    pub(super) jpeg: Option<(u64, Arc<Vec<u8>>)>,
    /// The decoded size of the latest encoded frame served (a camera's JPEG frames carry no
    /// size until decoded).
    pub(super) decoded_size: Option<(u32, u32)>,
    history: VecDeque<Point>,
    events: VecDeque<Arc<Event>>,
    events_total: u64,
    frame_events: u64,
}

impl SourceLive {
    pub(super) fn new(name: Arc<str>, key: Option<String>, regions: &[Region]) -> SourceLive {
        SourceLive {
            name,
            key,
            regions: regions
                .iter()
                .map(|r| RegionLive::new(Arc::clone(&r.name), Some(r.rect)))
                .collect(),
            latest: None,
            pending: None,
            frame: None,
            jpeg: None,
            decoded_size: None,
            history: VecDeque::new(),
            events: VecDeque::new(),
            events_total: 0,
            frame_events: 0,
        }
    }

    /// Takes the configured regions: a region kept with the same name and rectangle keeps its
    /// latest scores and counters.
    pub(super) fn set_regions(&mut self, regions: &[Region]) {
        let mut old = std::mem::take(&mut self.regions);
        self.regions = regions
            .iter()
            .map(|r| {
                match old
                    .iter()
                    .position(|o| o.name == r.name && o.rect.is_none_or(|x| x == r.rect))
                {
                    Some(i) => {
                        let mut o = old.swap_remove(i);
                        o.rect = Some(r.rect);
                        o
                    }
                    None => RegionLive::new(Arc::clone(&r.name), Some(r.rect)),
                }
            })
            .collect();
        self.pending = None;
    }

    /// Records one classification: the whole frame (`region` `None`) or one region of it.
    /// `frame` is kept when it is at least as new as the one held.
    pub(super) fn classified(
        &mut self,
        region: Option<&str>,
        latest: Latest,
        ms: u64,
        frame: Option<Arc<Frame>>,
    ) {
        if let Some(f) = frame {
            if self.frame.as_ref().is_none_or(|h| h.seq <= f.seq) {
                self.frame = Some(f);
            }
        }
        let Some(region) = region else {
            if self.latest.as_ref().is_some_and(|l| l.seq > latest.seq) {
                return; // a slower worker's older frame
            }
            self.complete(latest, ms);
            return;
        };
        let i = match self.regions.iter().position(|r| &*r.name == region) {
            Some(i) => i,
            None if self.regions.len() < crate::source::regions::MAX_REGIONS => {
                self.regions.push(RegionLive::new(region.into(), None));
                self.regions.len() - 1
            }
            None => return,
        };
        let r = &mut self.regions[i];
        r.classified += 1;
        if r.latest.as_ref().is_some_and(|(seq, _)| *seq > latest.seq) {
            return;
        }
        r.latest = Some((latest.seq, latest.top.clone()));
        let regions = self.regions.len();
        match self.pending.as_ref().map(|p| p.latest.seq.cmp(&latest.seq)) {
            Some(Ordering::Equal) => {
                if let Some(p) = self.pending.as_mut() {
                    p.seen += 1;
                    merge(&mut p.latest.top, &latest.top, p.k);
                    if p.latest.width == 0 {
                        (p.latest.width, p.latest.height) = (latest.width, latest.height);
                    }
                }
            }
            Some(Ordering::Greater) => return, // an older frame's region
            _ => {
                // A new frame: the previous one (some of its regions never came) is done.
                if let Some(p) = self.pending.take() {
                    self.complete(p.latest, p.ms);
                }
                let k = latest.top.len();
                self.pending = Some(Pending {
                    latest,
                    ms,
                    seen: 1,
                    k,
                });
            }
        }
        if self.pending.as_ref().is_some_and(|p| p.seen >= regions) {
            if let Some(p) = self.pending.take() {
                self.complete(p.latest, p.ms);
            }
        }
    }

    /// A complete frame: the latest, and a timeline point when one is due.
    fn complete(&mut self, latest: Latest, ms: u64) {
        if self.latest.as_ref().is_some_and(|l| l.seq > latest.seq) {
            return;
        }
        if self
            .history
            .back()
            .is_none_or(|p| ms >= p.t + HISTORY_STEP_MS)
        {
            if self.history.len() == HISTORY_POINTS {
                self.history.pop_front();
            }
            self.history.push_back(Point {
                t: ms,
                top: latest
                    .top
                    .iter()
                    .map(|e| (e.label.clone(), e.score))
                    .collect(),
            });
        }
        self.latest = Some(latest);
    }

    pub(super) fn event(&mut self, e: &Arc<Event>) {
        if self.events.len() == RECENT_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Arc::clone(e));
        self.events_total += 1;
        match e.region.as_deref() {
            None => self.frame_events += 1,
            Some(name) => {
                if let Some(r) = self.regions.iter_mut().find(|r| &*r.name == name) {
                    r.events += 1;
                }
            }
        }
    }

    pub(super) fn latest(&self) -> Option<Latest> {
        self.latest.clone().map(|mut l| {
            if l.width == 0 {
                (l.width, l.height) = self.decoded_size.unwrap_or((0, 0));
            }
            l
        })
    }

    pub(super) fn view(&self) -> SourceView {
        let latest = self.latest();
        let size = latest
            .as_ref()
            .map(|l| (l.width, l.height))
            .filter(|&(w, h)| w > 0 && h > 0);
        SourceView {
            name: self.name.to_string(),
            latest,
            events: self.events_total,
            regions: self
                .regions
                .iter()
                .map(|r| RegionView {
                    name: r.name.to_string(),
                    rect: r.rect,
                    pixels: r.rect.zip(size).map(|(rect, (w, h))| {
                        let (x, y, pw, ph) = crate::frame::rect::pixels(rect, w, h);
                        [x, y, pw, ph]
                    }),
                    seq: r.latest.as_ref().map(|(seq, _)| *seq),
                    top: r
                        .latest
                        .as_ref()
                        .map(|(_, t)| t.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    pub(super) fn counts(&self) -> SourceCounts {
        let first = |t: &Vec<TopEntry>| t.first().cloned();
        SourceCounts {
            name: Arc::clone(&self.name),
            frame_events: self.frame_events,
            top: if self.regions.is_empty() {
                self.latest.as_ref().and_then(|l| first(&l.top))
            } else {
                None
            },
            regions: self
                .regions
                .iter()
                .map(|r| RegionCounts {
                    name: Arc::clone(&r.name),
                    classified: r.classified,
                    events: r.events,
                    top: r.latest.as_ref().and_then(|(_, t)| first(t)),
                })
                .collect(),
        }
    }

    pub(super) fn history_since(&self, since: u64) -> Vec<Point> {
        let start = self.history.partition_point(|p| p.t <= since);
        self.history.range(start..).cloned().collect()
    }

    pub(super) fn recent_events(&self, limit: usize) -> (Vec<Arc<Event>>, u64) {
        let skip = self.events.len().saturating_sub(limit);
        (
            self.events.iter().skip(skip).cloned().collect(),
            self.events_total,
        )
    }
}

impl RegionLive {
    fn new(name: Arc<str>, rect: Option<[f64; 4]>) -> RegionLive {
        RegionLive {
            name,
            rect,
            latest: None,
            classified: 0,
            events: 0,
        }
    }
}

/// Merges a region's top-k into a frame's: each label keeps its best score; best first, at most
/// `k` entries. Entries match by label, not index: regions of one frame may use different models,
/// whose class indices mean different labels (an entry keeps the index in its own model).
fn merge(into: &mut Vec<TopEntry>, more: &[TopEntry], k: usize) {
    for e in more {
        match into.iter_mut().find(|x| x.label == e.label) {
            Some(x) if x.score < e.score => x.score = e.score,
            Some(_) => {}
            None => into.push(e.clone()),
        }
    }
    into.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.label.cmp(&b.label))
    });
    into.truncate(k.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: usize, score: f32) -> TopEntry {
        TopEntry {
            index,
            label: format!("class_{index}"),
            score,
        }
    }

    #[test]
    fn merged_top_keeps_each_labels_best_score() {
        let mut top = vec![entry(0, 0.6), entry(2, 0.3)];
        merge(&mut top, &[entry(2, 0.9), entry(1, 0.05)], 2);
        assert_eq!(top, vec![entry(2, 0.9), entry(0, 0.6)]);
        let mut top = vec![entry(0, 0.6)];
        merge(&mut top, &[entry(0, 0.1)], 1);
        assert_eq!(top, vec![entry(0, 0.6)]);
    }

    #[test]
    fn regions_of_two_models_merge_by_label_not_index() {
        let named = |index: usize, label: &str, score: f32| TopEntry {
            index,
            label: label.to_owned(),
            score,
        };
        // Model A: 0 = ok, 1 = scratch. Model B: 0 = blight, 1 = ok.
        let mut top = vec![named(0, "ok", 0.7), named(1, "scratch", 0.3)];
        merge(&mut top, &[named(0, "blight", 0.8), named(1, "ok", 0.2)], 3);
        assert_eq!(
            top,
            vec![
                named(0, "blight", 0.8),
                named(0, "ok", 0.7),
                named(1, "scratch", 0.3)
            ]
        );
    }
}
