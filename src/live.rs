//! What the live view shows: the latest classified frame and its top-k, a short history of
//! scores, and the recent events. Written by the dispatcher, read by the HTTP server.
//!
//! Memory is bounded: one frame (the latest), [`HISTORY_POINTS`] score points of at most top-k
//! entries each (one per [`HISTORY_STEP_MS`] at most, so ~5 minutes), and [`RECENT_EVENTS`]
//! events. The JPEG of the latest frame is encoded on demand, once per frame.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::event::{Event, TopEntry};
use crate::frame::{decode_rgb, Frame, PixelFormat, RgbBuf};

/// Score points kept for the timeline.
pub const HISTORY_POINTS: usize = 1200;
/// Minimum spacing of timeline points, milliseconds.
pub const HISTORY_STEP_MS: u64 = 250;
/// Events kept for `/api/events`.
pub const RECENT_EVENTS: usize = 200;

/// One timeline point: capture time (ms since the Unix epoch) and the top-k of that frame.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t: u64,
    pub top: Vec<(usize, f32)>,
}

/// The latest classification, as `/api/live` returns it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latest {
    pub seq: u64,
    pub captured_at: String,
    pub top: Vec<TopEntry>,
    /// Frame size, when the frame had it (0 for encoded frames until decoded).
    pub width: u32,
    pub height: u32,
}

#[derive(Default)]
struct Inner {
    latest: Option<Latest>,
    frame: Option<Arc<Frame>>,
    jpeg: Option<(u64, Arc<Vec<u8>>)>,
    history: VecDeque<Point>,
    events: VecDeque<Arc<Event>>,
    /// Events ever recorded; the oldest kept one has number `events_total - events.len()`.
    events_total: u64,
}

/// A frame's sequence number and its JPEG bytes.
pub type Jpeg = (u64, Arc<Vec<u8>>);

/// Shared by the dispatcher (writer) and the HTTP server (readers).
#[derive(Default)]
pub struct Live {
    inner: Mutex<Inner>,
}

impl Live {
    pub fn new() -> Arc<Live> {
        Arc::new(Live::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (plain assignments): go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a classified frame (dispatcher).
    pub fn classified(
        &self,
        seq: u64,
        captured_ms: u64,
        captured_at: &str,
        top: &[TopEntry],
        frame: Option<Arc<Frame>>,
    ) {
        let mut g = self.lock();
        if g.latest.as_ref().is_some_and(|l| l.seq > seq) {
            return; // a slower worker's older frame
        }
        let (width, height) = frame.as_ref().map_or((0, 0), |f| (f.width, f.height));
        g.latest = Some(Latest {
            seq,
            captured_at: captured_at.to_owned(),
            top: top.to_vec(),
            width,
            height,
        });
        if frame.is_some() {
            g.frame = frame;
        }
        if g.history
            .back()
            .is_none_or(|p| captured_ms >= p.t + HISTORY_STEP_MS)
        {
            if g.history.len() == HISTORY_POINTS {
                g.history.pop_front();
            }
            g.history.push_back(Point {
                t: captured_ms,
                top: top.iter().map(|e| (e.index, e.score)).collect(),
            });
        }
    }

    /// Records an event (dispatcher).
    pub fn event(&self, e: &Arc<Event>) {
        let mut g = self.lock();
        if g.events.len() == RECENT_EVENTS {
            g.events.pop_front();
        }
        g.events.push_back(Arc::clone(e));
        g.events_total += 1;
    }

    pub fn latest(&self) -> Option<Latest> {
        self.lock().latest.clone()
    }

    /// Timeline points captured after `since` (ms since the Unix epoch).
    pub fn history_since(&self, since: u64) -> Vec<Point> {
        let g = self.lock();
        let start = g.history.partition_point(|p| p.t <= since);
        g.history.range(start..).cloned().collect()
    }

    /// The last `limit` events, oldest first, and the total recorded so far.
    pub fn recent_events(&self, limit: usize) -> (Vec<Arc<Event>>, u64) {
        let g = self.lock();
        let skip = g.events.len().saturating_sub(limit);
        (
            g.events.iter().skip(skip).cloned().collect(),
            g.events_total,
        )
    }

    /// The latest frame as JPEG with its sequence number, encoded once per frame: an MJPEG
    /// frame is served as captured.
    pub fn jpeg(&self) -> Option<Result<Jpeg, String>> {
        let (frame, cached) = {
            let g = self.lock();
            (g.frame.clone()?, g.jpeg.clone())
        };
        if let Some((seq, bytes)) = cached {
            if seq == frame.seq {
                return Some(Ok((seq, bytes)));
            }
        }
        let bytes = if frame.format == PixelFormat::Mjpeg {
            frame.data.clone()
        } else {
            let mut rgb = RgbBuf::default();
            if let Err(e) = decode_rgb(&frame, None, &mut rgb) {
                return Some(Err(format!("cannot decode frame {}: {e}", frame.seq)));
            }
            match crate::frame::encode_jpeg(&rgb, 80) {
                Ok(b) => b,
                Err(e) => return Some(Err(format!("cannot encode frame {}: {e}", frame.seq))),
            }
        };
        let bytes = Arc::new(bytes);
        self.lock().jpeg = Some((frame.seq, Arc::clone(&bytes)));
        Some(Ok((frame.seq, bytes)))
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

    #[test]
    fn history_is_spaced_bounded_and_incremental() {
        let live = Live::default();
        for i in 0..(HISTORY_POINTS as u64 + 50) {
            // Two frames per step: only one point each.
            live.classified(2 * i, 1000 + i * HISTORY_STEP_MS, "t", &top(0.5), None);
            live.classified(
                2 * i + 1,
                1000 + i * HISTORY_STEP_MS + 10,
                "t",
                &top(0.6),
                None,
            );
        }
        let all = live.history_since(0);
        assert_eq!(all.len(), HISTORY_POINTS);
        let last = all.last().expect("points").t;
        assert_eq!(live.history_since(last).len(), 0);
        assert_eq!(live.history_since(last - HISTORY_STEP_MS).len(), 1);
        assert_eq!(
            live.latest().expect("latest").seq,
            2 * (HISTORY_POINTS as u64 + 49) + 1
        );
    }

    #[test]
    fn an_older_frame_does_not_replace_the_latest() {
        let live = Live::default();
        live.classified(5, 1, "a", &top(0.9), None);
        live.classified(4, 2, "b", &top(0.1), None);
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
        let (events, total) = live.recent_events(3);
        assert_eq!(total, RECENT_EVENTS as u64 + 5);
        let seqs: Vec<u64> = events.iter().map(|e| e.frame_seq).collect();
        assert_eq!(seqs, vec![202, 203, 204]);
    }

    #[test]
    fn jpeg_is_encoded_once_per_frame() {
        let live = Live::default();
        assert!(live.jpeg().is_none());
        let mut f = Frame::new(PixelFormat::Gray8, 16, 8, vec![100; 128]);
        f.seq = 3;
        live.classified(3, 1, "t", &top(0.5), Some(Arc::new(f)));
        let (seq, a) = live.jpeg().expect("frame").expect("encodes");
        let (_, b) = live.jpeg().expect("frame").expect("cached");
        assert_eq!(seq, 3);
        assert!(Arc::ptr_eq(&a, &b));
        let img = image::load_from_memory(&a).expect("JPEG");
        assert_eq!((img.width(), img.height()), (16, 8));
    }
}
