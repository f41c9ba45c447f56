//! The worker loop: one thread per worker, each with its own model session. A worker takes
//! frames from the frame queue (the newest when the source is live and no other worker waits),
//! classifies them, and sends the scores to the dispatcher; while it has no frame it helps a
//! busy worker with its model run (the engine's team).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use lookout_engine::team::{self, Member};

use super::{Classified, Throttled};
use crate::frame::Frame;
use crate::metrics::{FrameTimes, Metrics};
use crate::model::Session;
use crate::retry::chain;

#[allow(clippy::too_many_arguments)]
pub(super) fn worker_loop(
    mut session: Session,
    member: Member,
    frame_rx: Receiver<Frame>,
    class_tx: Sender<Classified>,
    m: Arc<Metrics>,
    keep_frames: bool,
    idle: Option<Arc<AtomicUsize>>,
    quit: Arc<AtomicBool>,
) {
    let mut warn = Throttled::new(Duration::from_secs(10));
    // A model with a fixed batch takes the frames already waiting, up to its batch, in one
    // run; it never waits for more (latency first). Batch 1: one frame at a time.
    let batch = session.batch();
    let mut frames = Vec::with_capacity(batch);
    let mut waits = Vec::with_capacity(batch);
    if let Some(idle) = &idle {
        idle.fetch_add(1, Relaxed);
    }
    while !quit.load(Relaxed) {
        // A frame of its own, or else another worker's frame to help with until one comes.
        let frame = crossbeam_channel::select! {
            recv(frame_rx) -> f => match f {
                Ok(f) => f,
                Err(_) => break,
            },
            recv(member.invitations()) -> gang => {
                if let Ok(gang) = gang {
                    team::help(&gang, || !frame_rx.is_empty() || quit.load(Relaxed));
                }
                continue;
            },
            default(crate::stop::POLL) => continue,
        };
        frames.push(frame);
        // A live source's worker with no other worker waiting takes the newest frames waiting
        // and drops the older ones (the queue is first in, first out): under overload a frame
        // taken is at most one frame interval old, not `frame_queue` intervals. While another
        // worker waits, the next frame is left to it. Any other source's frames are all
        // classified, in turn.
        let newest = idle
            .as_ref()
            .is_some_and(|idle| idle.fetch_sub(1, Relaxed) == 1);
        while newest || frames.len() < batch {
            match frame_rx.try_recv() {
                Ok(f) => frames.push(f),
                Err(_) => break,
            }
        }
        if frames.len() > batch {
            let stale = frames.len() - batch;
            frames.drain(..stale);
            m.dropped.fetch_add(stale as u64, Relaxed);
        }
        waits.clear();
        for frame in &frames {
            let wait = frame.captured.elapsed();
            m.queue_wait.record(wait);
            waits.push(wait);
            let newer = m.captured.load(Relaxed).saturating_sub(frame.seq + 1);
            m.max_staleness.fetch_max(newer, Relaxed);
        }
        let results = member.lead(|| session.classify_frames(&frames));
        let mut closed = false;
        for (i, (frame, result)) in frames.drain(..).zip(results).enumerate() {
            match result {
                Ok(scores) => {
                    m.inferred.fetch_add(1, Relaxed);
                    m.record_frame(FrameTimes {
                        queue_wait: waits.get(i).copied().unwrap_or_default(),
                        decode: scores.decode,
                        preprocess: scores.preprocess,
                        infer: scores.infer,
                        total: frame.captured.elapsed(),
                    });
                    let c = Classified {
                        seq: frame.seq,
                        captured_at: frame.captured_at,
                        captured: frame.captured,
                        origin: frame.origin.clone(),
                        truth: frame.truth.clone(),
                        probs: scores.probs,
                        frame: keep_frames.then_some(frame),
                    };
                    if class_tx.send(c).is_err() {
                        closed = true;
                        break;
                    }
                }
                Err(e) => {
                    m.failed.fetch_add(1, Relaxed);
                    let origin = frame
                        .origin
                        .as_deref()
                        .map(|o| format!(" file={o}"))
                        .unwrap_or_default();
                    warn.warn(format_args!(
                    "Frame skipped: it could not be classified. frame={} format={}{origin} error={}",
                    frame.seq,
                    frame.format.name(),
                    chain(&e)
                ));
                }
            }
        }
        if let Some(idle) = &idle {
            idle.fetch_add(1, Relaxed);
        }
        if closed {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;
    use lookout_engine::team::Team;

    use crate::model::Model;

    /// One worker of the bundled model over `queued` frames already waiting (the source then
    /// ends). `idle`: a live source's count of other workers waiting for a frame; None: a
    /// source that is not live. Returns the frames classified, in order, and those dropped.
    fn one_worker(queued: u64, idle: Option<usize>) -> (Vec<u64>, u64) {
        let model = Arc::new(Model::load(&crate::model::ModelConfig::default()).expect("model"));
        let (frame_tx, frame_rx) = bounded(queued as usize);
        for seq in 0..queued {
            let px = vec![90u8; 64 * 64 * 3];
            let mut frame = Frame::new(crate::frame::PixelFormat::Rgb24, 64, 64, px);
            frame.seq = seq;
            frame_tx.send(frame).expect("queued");
        }
        drop(frame_tx);
        let (class_tx, class_rx) = bounded(16);
        let m = Arc::new(Metrics::new(&[]));
        worker_loop(
            model.session().expect("session"),
            Team::new(1).member(),
            frame_rx,
            class_tx,
            Arc::clone(&m),
            false,
            idle.map(|n| Arc::new(AtomicUsize::new(n))),
            Arc::new(AtomicBool::new(false)),
        );
        let seqs = class_rx.try_iter().map(|c| c.seq).collect();
        (seqs, m.dropped.load(Relaxed))
    }

    #[test]
    fn a_live_sources_worker_takes_the_newest_frame_when_no_other_waits() {
        // Three frames waiting and no other worker idle: the two older ones are stale.
        assert_eq!(one_worker(3, Some(0)), (vec![2], 2));
        // Another worker waits: the next frame is left to it, nothing is dropped (here the
        // same worker comes back for each).
        assert_eq!(one_worker(3, Some(1)), (vec![0, 1, 2], 0));
        // Not live (files, a finite replay): every frame, in turn.
        assert_eq!(one_worker(3, None), (vec![0, 1, 2], 0));
    }
}
