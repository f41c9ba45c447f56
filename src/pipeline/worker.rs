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
use crate::frame::{Frame, RgbBuf};
use crate::metrics::{FrameTimes, Metrics};
use crate::model::{ClassifyError, Scores, Session};
use crate::retry::chain;
use crate::source::regions::Region;

/// `sessions`: one per model of the generation, in the order of `names` (their names).
#[allow(clippy::too_many_arguments)]
pub(super) fn worker_loop(
    mut sessions: Vec<Session>,
    names: Arc<[Arc<str>]>,
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
    // run; it never waits for more (latency first). Batch 1: one frame at a time. (Several
    // models: up to the largest batch, each model's frames then run in its own batches.)
    let batch = sessions.iter().map(Session::batch).max().unwrap_or(1);
    let mut rgb = RgbBuf::default();
    // Model-run time per model, by session index.
    let model_infer: Vec<_> = names.iter().map(|n| m.models.of(n)).collect();
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
        let work: Vec<(Arc<str>, Arc<[Region]>)> = taken
            .iter()
            .map(|t| (Arc::clone(&t.model), Arc::clone(&t.regions)))
            .collect();
        let (sources, frames): (Vec<_>, Vec<Frame>) =
            taken.into_iter().map(|t| (t.source, t.frame)).unzip();
        let results = member.lead(|| classify(&mut sessions, &names, &mut rgb, &frames, &work));
        let mut closed = false;
        'frames: for (i, ((source, frame), result)) in
            sources.into_iter().zip(frames).zip(results).enumerate()
        {
            match result {
                Ok(scored) => {
                    m.inferred.fetch_add(1, Relaxed);
                    source.inferred.fetch_add(1, Relaxed);
                    let sum =
                        |f: fn(&Scores) -> Duration| scored.iter().map(|(_, _, s)| f(s)).sum();
                    for (_, model, s) in &scored {
                        if let Some(h) = model_infer.get(*model) {
                            h.record(s.infer);
                        }
                    }
                    m.record_frame(FrameTimes {
                        source: Some(Arc::clone(&source.name)),
                        queue_wait: waits.get(i).copied().unwrap_or_default(),
                        decode: sum(|s| s.decode),
                        preprocess: sum(|s| s.preprocess),
                        infer: sum(|s| s.infer),
                        total: frame.captured.elapsed(),
                    });
                    // Every region's result shares the one frame (moved, not copied).
                    let frame = Arc::new(frame);
                    let kept = keep_frames.then(|| Arc::clone(&frame));
                    let f: &Frame = &frame;
                    for (region, model, scores) in scored {
                        let rect = region
                            .as_ref()
                            .and_then(|r| work[i].1.iter().find(|x| x.name == *r).map(|x| x.rect));
                        let c = Classified {
                            source: Arc::clone(&source.name),
                            region,
                            rect,
                            model,
                            seq: f.seq,
                            captured_at: f.captured_at,
                            captured: f.captured,
                            origin: f.origin.clone(),
                            truth: f.truth.clone(),
                            probs: scores.probs,
                            frame: kept.clone(),
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

/// One frame's scores: the whole frame's (region `None`), or one per region of its source, in
/// the regions' order; each with the index of the model (session) that produced it.
type FrameScores = Result<Vec<RegionScores>, ClassifyError>;

/// A region's name (`None`: the whole frame), the index of its model, its scores.
type RegionScores = (Option<Arc<str>>, usize, Scores);

/// Each frame's scores (see [`FrameScores`]); `work`: each frame's whole-frame model and
/// regions. Whole frames of one model go through it together (in its batches); a frame's
/// regions are decoded once and each model classifies its own regions' crops.
fn classify(
    sessions: &mut [Session],
    names: &[Arc<str>],
    rgb: &mut RgbBuf,
    frames: &[Frame],
    work: &[(Arc<str>, Arc<[Region]>)],
) -> Vec<FrameScores> {
    let index = |name: &str| {
        names
            .iter()
            .position(|n| &**n == name)
            .ok_or_else(|| ClassifyError::NoModel(name.to_owned()))
    };
    let mut out: Vec<Option<FrameScores>> = (0..frames.len()).map(|_| None).collect();
    // Whole frames, by model. The usual case, one model, classifies `frames` as they are.
    let whole: Vec<usize> = (0..frames.len())
        .filter(|&i| work[i].1.is_empty())
        .collect();
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for &i in &whole {
        match index(&work[i].0) {
            Ok(m) => match groups.iter_mut().find(|(g, _)| *g == m) {
                Some((_, list)) => list.push(i),
                None => groups.push((m, vec![i])),
            },
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    for (m, list) in groups {
        let session = &mut sessions[m];
        let results = if list.len() == frames.len() {
            session.classify_frames(frames)
        } else if session.batch() > 1 {
            let group: Vec<Frame> = list.iter().map(|&i| frames[i].clone()).collect();
            session.classify_frames(&group)
        } else {
            list.iter()
                .map(|&i| session.classify_frame(&frames[i]))
                .collect()
        };
        for (&i, r) in list.iter().zip(results) {
            out[i] = Some(r.map(|s| vec![(None, m, s)]));
        }
    }
    for (i, (frame, (_, regions))) in frames.iter().zip(work).enumerate() {
        if !regions.is_empty() {
            out[i] = Some(classify_regions(sessions, &index, rgb, frame, regions));
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ClassifyError::NoModel(String::new()))))
        .collect()
}

/// One frame's regions: one model's as that session classifies regions; several models' from
/// one decode, each model on its own regions' crops.
fn classify_regions(
    sessions: &mut [Session],
    index: &dyn Fn(&str) -> Result<usize, ClassifyError>,
    rgb: &mut RgbBuf,
    frame: &Frame,
    regions: &[Region],
) -> FrameScores {
    let models: Vec<usize> = regions
        .iter()
        .map(|r| index(&r.model))
        .collect::<Result<_, _>>()?;
    let Some(&first) = models.first() else {
        return Ok(Vec::new());
    };
    if models.iter().all(|&m| m == first) {
        let rects: Vec<[f64; 4]> = regions.iter().map(|r| r.rect).collect();
        let scores = sessions[first].classify_regions(frame, &rects)?;
        return Ok(regions
            .iter()
            .map(|r| Some(Arc::clone(&r.name)))
            .zip(scores)
            .map(|(r, s)| (r, first, s))
            .collect());
    }
    lookout_engine::team::invite();
    let t0 = std::time::Instant::now();
    let rects: Vec<[f64; 4]> = regions.iter().map(|r| r.rect).collect();
    let crops = crate::model::crop::decode_crops(frame, &rects, rgb)?;
    let decode = t0.elapsed() / regions.len() as u32;
    let mut slots: Vec<Option<RegionScores>> = (0..regions.len()).map(|_| None).collect();
    let mut done: Vec<usize> = Vec::new();
    for &m in &models {
        if done.contains(&m) {
            continue;
        }
        done.push(m);
        let mine: Vec<usize> = (0..regions.len()).filter(|&k| models[k] == m).collect();
        let images: Vec<&RgbBuf> = mine.iter().map(|&k| &crops[k]).collect();
        let scores = sessions[m].classify_crops(&images, decode)?;
        for (&k, s) in mine.iter().zip(scores) {
            slots[k] = Some((Some(Arc::clone(&regions[k].name)), m, s));
        }
    }
    Ok(slots.into_iter().flatten().collect())
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
        let lane = queue.add_lane(
            m.add_source("test"),
            idle.is_some(),
            Arc::from([]),
            "default".into(),
        );
        for seq in 0..queued {
            let px = vec![90u8; 64 * 64 * 3];
            let mut frame = Frame::new(crate::frame::PixelFormat::Rgb24, 64, 64, px);
            frame.seq = seq;
            assert!(queue.put(lane, frame, &crate::stop::StopToken::new()));
        }
        queue.close(lane);
        let (class_tx, class_rx) = bounded(16);
        worker_loop(
            vec![model.session().expect("session")],
            Arc::from([Arc::from("default")]),
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

    #[test]
    fn a_frames_regions_of_two_models_each_get_their_models_scores_in_order() {
        use crate::model::ModelConfig;
        // Two models that score the same crop differently: the bundled one, and the bundled
        // one fed with other normalisation.
        let a = Arc::new(Model::load(&ModelConfig::default()).expect("model"));
        let mut other = ModelConfig::default();
        other.preprocess.mean = Some(vec![0.0, 0.0, 0.0]);
        other.preprocess.std = Some(vec![1.0, 1.0, 1.0]);
        let b = Arc::new(Model::load(&other).expect("model"));
        let mut sessions = vec![a.session().expect("session"), b.session().expect("session")];
        let names: Vec<Arc<str>> = vec!["default".into(), "other".into()];
        let region = |name: &str, x: f64, model: &str| Region {
            name: name.into(),
            rect: [x, 0.0, 0.5, 1.0],
            model: model.into(),
        };
        let regions: Arc<[Region]> = Arc::from(vec![
            region("left", 0.0, "default"),
            region("right", 0.5, "other"),
            region("left-again", 0.0, "other"),
        ]);
        let mut px = Vec::with_capacity(96 * 48 * 3);
        for i in 0..96 * 48 {
            px.extend_from_slice(&[(i % 251) as u8, (i % 97) as u8 * 2, 60]);
        }
        let frame = Frame::new(crate::frame::PixelFormat::Rgb24, 96, 48, px);
        let work = [("default".into(), Arc::clone(&regions))];
        let mut rgb = RgbBuf::default();
        let got = classify(
            &mut sessions,
            &names,
            &mut rgb,
            std::slice::from_ref(&frame),
            &work,
        )
        .pop()
        .expect("one frame")
        .expect("classified");
        let order: Vec<(&str, usize)> = got
            .iter()
            .map(|(r, m, _)| (r.as_deref().expect("a region"), *m))
            .collect();
        assert_eq!(order, [("left", 0), ("right", 1), ("left-again", 1)]);
        // Each region's scores are those its model gives the crop alone.
        for ((_, m, scores), r) in got.iter().zip(regions.iter()) {
            let alone = sessions[*m]
                .classify_regions(&frame, &[r.rect])
                .expect("classified")
                .remove(0);
            assert_eq!(scores.probs, alone.probs, "{}", r.name);
        }
        assert_ne!(
            got[0].2.probs, got[2].2.probs,
            "the two models differ on one crop"
        );
        // A model no session runs: the frame fails, named.
        let lost = [("nope".into(), Arc::from(Vec::new()))];
        let err = classify(&mut sessions, &names, &mut rgb, &[frame], &lost)
            .pop()
            .expect("one frame")
            .expect_err("no such model");
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }
}
