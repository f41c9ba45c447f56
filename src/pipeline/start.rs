//! Starting a pipeline: the sources are opened, then the sinks, workers and dispatcher of one
//! configuration (a generation), then a capture thread per source and the summary thread.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use lookout_engine::team::Team;

use super::capture::Reconnect;
use super::deliver::sink_loop;
use super::dispatch::{dispatch_loop, Scored};
use super::fair::FairQueue;
use super::running::{Generation, Running};
use super::sources::{open_all, start_capture, OnFailure};
use super::worker::worker_loop;
use super::{spawn, Classified, Delivery, Downstream, ModelPart, Parts, StartError};
use crate::metrics::Metrics;
use crate::model::Session;
use crate::stop::StopToken;

/// Opens the sources and starts every thread.
pub fn start(parts: Parts, stop: StopToken) -> Result<Running, StartError> {
    let Parts {
        sources,
        models,
        sinks,
        workers,
        assist,
        frame_queue,
        sink_queue,
        top_k,
        device,
        summary_every,
        reconnect,
        live,
        collect,
        trace_frames,
    } = parts;
    let metrics = Arc::new(if trace_frames {
        Metrics::tracing(&[])
    } else {
        Metrics::new(&[])
    });
    // Frames: capture threads -> workers, one lane per source. Outlives reloads.
    let queue = Arc::new(FairQueue::new(frame_queue, Arc::clone(&metrics)));
    // With several sources, one that does not open is reopened by its capture thread while
    // the others run; a lone source that does not open is a startup error.
    let on_failure = if sources.len() > 1 {
        OnFailure::Reopen
    } else {
        OnFailure::Refuse
    };
    let opened = open_all(sources, &queue, &metrics, on_failure)?;
    let source_names: Vec<String> = opened.iter().map(|o| o.name().to_owned()).collect();

    let downstream = Downstream {
        models,
        sinks,
        workers,
        assist,
        sink_queue,
        top_k,
        device,
        live,
        collect,
    };
    let generation = start_generation(downstream, &queue, &metrics)?;

    let reconnect = Arc::new(Reconnect::new(reconnect));
    let mut captures = Vec::with_capacity(opened.len());
    for o in opened {
        captures.push(start_capture(o, &queue, &metrics, &stop, &reconnect)?);
    }

    let (summary_done, summary) = match summary_every {
        Some(every) => {
            let (tx, rx) = bounded::<()>(0);
            let m = Arc::clone(&metrics);
            let h = spawn("summary", move || {
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    log::info!("{}", m.snapshot().summary_line());
                }
            })?;
            (Some(tx), Some(h))
        }
        None => (None, None),
    };
    Ok(Running {
        stop,
        metrics,
        captures,
        queue,
        generation: Some(generation),
        summary_done,
        summary,
        source_name: source_names.join(","),
        source_names,
        reconnect,
    })
}

/// Each worker's sessions: one per model, in the order of `models` (`Classified::model`).
fn sessions(models: &[ModelPart], workers: usize) -> Result<Vec<Vec<Session>>, StartError> {
    let mut sessions: Vec<Vec<Session>> = Vec::with_capacity(workers.max(1));
    for _ in 0..workers.max(1) {
        let mut own = Vec::with_capacity(models.len());
        for m in models {
            own.push(m.model.session().map_err(|source| StartError::Session {
                model: m.name.to_string(),
                source,
            })?);
        }
        sessions.push(own);
    }
    Ok(sessions)
}

/// Makes (and drops) every session `workers` workers would need for `models`, so that a reload
/// finds a model that cannot run before it stops the running workers: made while the running
/// ones still hold theirs, they will be made again once those are gone (with more memory free).
pub fn try_sessions(models: &[ModelPart], workers: usize) -> Result<(), StartError> {
    sessions(models, workers).map(drop)
}

/// Starts workers, dispatcher and sinks reading `queue`.
pub(super) fn start_generation(
    d: Downstream,
    queue: &Arc<FairQueue>,
    metrics: &Arc<Metrics>,
) -> Result<Generation, StartError> {
    let Downstream {
        models,
        sinks,
        workers,
        assist,
        sink_queue,
        top_k: k,
        device,
        live,
        collect,
    } = d;
    let sessions = sessions(&models, workers)?;
    let names: Arc<[Arc<str>]> = models.iter().map(|m| Arc::clone(&m.name)).collect();
    metrics
        .models
        .keep(&names.iter().map(|n| &**n).collect::<Vec<_>>());
    let sink_names: Vec<String> = sinks.iter().map(|(n, _)| n.clone()).collect();
    let counters = metrics.replace_sinks(&sink_names);
    let quit = Arc::new(AtomicBool::new(false));
    // Classifications: workers -> dispatcher. Workers block when it is full (the dispatcher is
    // fast). Closes when the last worker ends.
    let (class_tx, class_rx) = bounded::<Classified>(workers.max(1) * 4);
    let mut stages = Vec::new();

    // Sinks first, so the dispatcher has somewhere to send.
    let mut sink_txs: Vec<Sender<Delivery>> = Vec::new();
    let mut sink_threads = Vec::new();
    let frame_sinks: Vec<bool> = sinks.iter().map(|(_, s)| s.wants_frames()).collect();
    let keep_frames = frame_sinks.contains(&true) || live.is_some() || collect.is_some();
    // Set near the join deadline (see `join_stages`): the sinks give up blocking work.
    let abort = StopToken::new();
    for ((name, mut sink), c) in sinks.into_iter().zip(counters.iter().cloned()) {
        sink.abort_on(abort.clone());
        *c.link.lock().unwrap_or_else(|e| e.into_inner()) = sink.link_stats();
        // Events: dispatcher -> this sink. Full: the dispatcher drops the event for this sink and
        // counts it. Closes when the dispatcher ends.
        let (tx, rx) = bounded::<Delivery>(sink_queue);
        sink_txs.push(tx);
        let thread_name = format!("sink-{name}");
        sink_threads.push((
            thread_name.clone(),
            spawn(&thread_name, move || sink_loop(name, sink, rx, c))?,
        ));
    }

    // One worker: no one to help. Several with `assist` off: each on its own.
    let team = Team::new(if assist { sessions.len() } else { 1 });
    // The workers waiting for a frame (see `worker_loop`).
    let idle = Arc::new(AtomicUsize::new(0));
    for (i, session) in sessions.into_iter().enumerate() {
        let member = team.member();
        let rx = Arc::clone(queue);
        let tx = class_tx.clone();
        let m = Arc::clone(metrics);
        let q = Arc::clone(&quit);
        let idle = idle.clone();
        let names = Arc::clone(&names);
        let name = format!("worker-{i}");
        stages.push((
            name.clone(),
            spawn(&name, move || {
                worker_loop(session, names, member, rx, tx, m, keep_frames, idle, q)
            })?,
        ));
    }
    drop(class_tx);

    // The collector: fed by the dispatcher, ends when the dispatcher drops its tap.
    let (tap, collector) = match collect {
        Some(c) => {
            let refs = models
                .iter()
                .map(|p| crate::collect::ModelRef {
                    name: p.name.to_string(),
                    path: p.model.name.clone(),
                })
                .collect();
            let (tap, collector) = crate::collect::channel(c.cfg, c.dataset, refs);
            (Some(tap), Some(collector))
        }
        None => (None, None),
    };
    let m = Arc::clone(metrics);
    let drift = crate::drift::Monitor::new(
        models
            .iter()
            .map(|p| (Arc::clone(&p.name), p.drift.clone()))
            .collect(),
        Arc::clone(&metrics.drift),
    );
    let models: Vec<Scored> = models
        .into_iter()
        .map(|p| Scored {
            event_name: (&*p.name != crate::models::DEFAULT).then(|| p.name.to_string()),
            labels: p.model.labels.clone().into(),
            rules: p.rules,
        })
        .collect();
    // Snapshot file names then say which source a frame came from.
    let several_sources = queue.lanes() > 1;
    stages.push((
        "dispatcher".to_owned(),
        spawn("dispatcher", move || {
            dispatch_loop(
                class_rx,
                sink_txs,
                frame_sinks,
                counters,
                live,
                models,
                k,
                device,
                several_sources,
                drift,
                tap,
                m,
            )
        })?,
    ));
    if let Some(collector) = collector {
        stages.push((
            "collect".to_owned(),
            spawn("collect", move || collector.run())?,
        ));
    }
    stages.extend(sink_threads);
    Ok(Generation {
        quit,
        stages,
        abort,
    })
}
