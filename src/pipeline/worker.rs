//! The worker loop: one thread per worker, each with its own model session. A worker takes
//! frames from the shared frame queue (round-robin across sources; a live source's newest when
//! no other worker waits, see [`FairQueue`]), classifies them, and sends the scores to the
//! dispatcher; while it has no frame it helps a busy worker with its model run (the engine's
//! team).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use lookout_engine::team::{self, Member};

use super::fair::FairQueue;
use super::{Classified, Throttled};
use crate::frame::Frame;
use crate::metrics::{FrameTimes, Metrics};
use crate::model::{ClassifyError, Scores, Session};
use crate::retry::chain;
use crate::source::regions::Region;

#[allow(clippy::too_many_arguments)]
pub(super) fn worker_loop(
    mut session: Session,
    member: Member,
    queue: Arc<FairQueue>,
    class_tx: Sender<Classified>,
    m: Arc<Metrics>,
    keep_frames: bool,
    idle: Arc<AtomicUsize>,
    quit: Arc<AtomicBool>,
) {
    let mut warn = Throttled::new(Duration::from_secs(10));
    // A model with a fixed batch takes the frames already waiting, up to its batch, in one
    // run; it never waits for more (latency first). Batch 1: one frame at a time.
    let batch = session.batch();
    let mut waits = Vec::with_capacity(batch);
    // Workers waiting for a frame, this one included: with no other one waiting, a live
    // source's newest frame is taken and the older ones dropped (under overload a frame taken
    // is at most one frame interval old); while another waits, the next frame is left to it.
    idle.fetch_add(1, Relaxed);
    while !quit.load(Relaxed) {
        let newest = idle.load(Relaxed) <= 1;
        let taken = queue.take(batch, newest);
        if taken.is_empty() {
            if queue.finished() {
                break;
            }
            // Nothing waiting: help another worker with its frame until one comes.
            crossbeam_channel::select! {
                recv(queue.ready()) -> _ => {},
                recv(member.invitations()) -> gang => {
                    if let Ok(gang) = gang {
                        team::help(&gang, || !queue.is_empty() || quit.load(Relaxed));
                    }
                },
                default(crate::stop::POLL) => {},
            }
            continue;
        }
        idle.fetch_sub(1, Relaxed);
        waits.clear();
        for t in &taken {
            let wait = t.frame.captured.elapsed();
            m.queue_wait.record(wait);
            waits.push(wait);
            let newer = t
                .source
                .captured
                .load(Relaxed)
                .saturating_sub(t.frame.seq + 1);
            m.max_staleness.fetch_max(newer, Relaxed);
        }
        let regions: Vec<Arc<[Region]>> = taken.iter().map(|t| Arc::clone(&t.regions)).collect();
        let (sources, frames): (Vec<_>, Vec<Frame>) =
            taken.into_iter().map(|t| (t.source, t.frame)).unzip();
        let results = member.lead(|| classify(&mut session, &frames, &regions));
        let mut closed = false;
        'frames: for (i, ((source, frame), result)) in
            sources.into_iter().zip(frames).zip(results).enumerate()
        {
            match result {
                Ok(scored) => {
                    m.inferred.fetch_add(1, Relaxed);
                    source.inferred.fetch_add(1, Relaxed);
                    let sum = |f: fn(&Scores) -> Duration| scored.iter().map(|(_, s)| f(s)).sum();
                    m.record_frame(FrameTimes {
                        source: Some(Arc::clone(&source.name)),
                        queue_wait: waits.get(i).copied().unwrap_or_default(),
                        decode: sum(|s| s.decode),
                        preprocess: sum(|s| s.preprocess),
                        infer: sum(|s| s.infer),
                        total: frame.captured.elapsed(),
                    });
                    let n = scored.len();
                    let mut frame = Some(frame);
                    for (k, (region, scores)) in scored.into_iter().enumerate() {
                        let Some(f) = frame.as_ref() else { break };
                        let c = Classified {
                            source: Arc::clone(&source.name),
                            region,
                            seq: f.seq,
                            captured_at: f.captured_at,
                            captured: f.captured,
                            origin: f.origin.clone(),
                            truth: f.truth.clone(),
                            probs: scores.probs,
                            // The last region takes the frame itself; the others a copy.
                            frame: if !keep_frames {
                                None
                            } else if k + 1 == n {
                                frame.take()
                            } else {
                                Some(f.clone())
                            },
                        };
                        if class_tx.send(c).is_err() {
                            closed = true;
                            break 'frames;
                        }
                    }
                }
                Err(e) => {
                    m.failed.fetch_add(1, Relaxed);
                    source.failed.fetch_add(1, Relaxed);
                    let origin = frame
                        .origin
                        .as_deref()
                        .map(|o| format!(" file={o}"))
                        .unwrap_or_default();
                    warn.warn(format_args!(
                        "Frame skipped: it could not be classified. source={} frame={} format={}{origin} error={}",
                        source.name,
                        frame.seq,
                        frame.format.name(),
                        chain(&e)
                    ));
                }
            }
        }
        idle.fetch_add(1, Relaxed);
        if closed {
            break;
        }
    }
}

/// One frame's scores: the whole frame's (region `None`), or one per region of its source.
type FrameScores = Result<Vec<(Option<Arc<str>>, Scores)>, ClassifyError>;

/// Each frame's scores (see [`FrameScores`]).
fn classify(
    session: &mut Session,
    frames: &[Frame],
    regions: &[Arc<[Region]>],
) -> Vec<FrameScores> {
    if regions.iter().all(|r| r.is_empty()) {
        return session
            .classify_frames(frames)
            .into_iter()
            .map(|r| r.map(|s| vec![(None, s)]))
            .collect();
    }
    frames
        .iter()
        .zip(regions)
        .map(|(frame, regions)| {
            if regions.is_empty() {
                return session.classify_frame(frame).map(|s| vec![(None, s)]);
            }
            let rects: Vec<[f64; 4]> = regions.iter().map(|r| r.rect).collect();
            let scores = session.classify_regions(frame, &rects)?;
            Ok(regions
                .iter()
                .map(|r| Some(Arc::clone(&r.name)))
                .zip(scores)
                .collect())
        })
        .collect()
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
        let m = Arc::new(Metrics::new(&[]));
        let queue = Arc::new(FairQueue::new(queued as usize, Arc::clone(&m)));
        let lane = queue.add_lane(m.add_source("test"), idle.is_some(), Arc::from([]));
        for seq in 0..queued {
            let px = vec![90u8; 64 * 64 * 3];
            let mut frame = Frame::new(crate::frame::PixelFormat::Rgb24, 64, 64, px);
            frame.seq = seq;
            assert!(queue.put(lane, frame, &crate::stop::StopToken::new()));
        }
        queue.close(lane);
        let (class_tx, class_rx) = bounded(16);
        worker_loop(
            model.session().expect("session"),
            Team::new(1).member(),
            queue,
            class_tx,
            Arc::clone(&m),
            false,
            Arc::new(AtomicUsize::new(idle.unwrap_or(0))),
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
