//! The pipeline: threads and bounded queues from source to sinks.
//!
//! ```text
//! [capture]  --frames (bounded, drop-oldest when live)-->  [worker 1..N, newest first when live]
//! [worker]   --classifications (bounded, blocking)----->  [dispatcher]
//! [dispatcher] --events (bounded per sink, drop-newest)-> [sink thread per sink]
//! ```
//!
//! Shutdown has one trigger: the [`StopToken`] (or the end of a finite source) ends the capture
//! loop, which drops its frame sender; each later stage ends when its input disconnects, after
//! finishing what it holds; sinks flush last. Nothing is lost between the dispatcher and the
//! sinks except what a full sink queue refuses, and that is counted. Run-time errors (a bad
//! frame, a failed delivery, a broken source) are logged, counted and never stop the loop.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use crate::event::{rfc3339, Event, TopEntry};
use crate::frame::Frame;
use crate::live::Live;
use crate::metrics::{FrameTimes, Metrics, SinkMetrics, Snapshot};
use crate::model::team::{self, Member, Team};
use crate::model::{postprocess::top_k, Model, ModelError, Session};
use crate::rules::RuleSet;
use crate::sink::Sink;
use crate::source::{FrameSource, SourceError};
use crate::stop::StopToken;

/// Everything a pipeline needs, built and validated by the caller.
pub struct Parts {
    pub source: Box<dyn FrameSource>,
    pub model: Arc<Model>,
    pub rules: RuleSet,
    /// Sinks with their names, in config order (rule sink indices refer to this order).
    pub sinks: Vec<(String, Box<dyn Sink>)>,
    pub workers: usize,
    /// Idle workers help a busy one with its frame's convolutions ([`team`]).
    pub assist: bool,
    pub frame_queue: usize,
    pub sink_queue: usize,
    pub top_k: usize,
    pub device: String,
    /// Interval of the `info` summary line; `None` for none.
    pub summary_every: Option<Duration>,
    /// Source reopening back-off: first delay and cap (doubling, +-20% jitter).
    pub reconnect: (Duration, Duration),
    /// Latest frame, scores and events for the live view, when the HTTP server runs.
    pub live: Option<Arc<Live>>,
    /// Keep every frame's exact stage times ([`Metrics::frame_times`]); for benchmarks.
    pub trace_frames: bool,
}

/// Errors that prevent the pipeline from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open source {source_name}")]
    Source {
        source_name: String,
        #[source]
        source: SourceError,
    },
    #[error("cannot start a model session")]
    Session(#[source] ModelError),
    #[error("cannot start thread {name}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// A classified frame, worker -> dispatcher.
struct Classified {
    seq: u64,
    captured_at: SystemTime,
    captured: Instant,
    origin: Option<Arc<str>>,
    truth: Option<Arc<str>>,
    probs: Vec<f32>,
    /// The frame itself, kept only when a sink wants frames (snapshots).
    frame: Option<Frame>,
}

/// An event on its way to one sink, dispatcher -> sink thread.
struct Delivery {
    event: Arc<Event>,
    captured: Instant,
    /// The triggering frame, for sinks that want frames.
    frame: Option<Arc<Frame>>,
}

/// A started pipeline. Dropping it without [`Running::wait`] stops the source and detaches the
/// threads.
pub struct Running {
    stop: StopToken,
    metrics: Arc<Metrics>,
    capture: Option<JoinHandle<()>>,
    /// Kept to start the workers of the next configuration on reload.
    frame_rx: Receiver<Frame>,
    generation: Option<Generation>,
    /// Closing it (drop) ends the summary thread.
    summary_done: Option<Sender<()>>,
    summary: Option<JoinHandle<()>>,
    pub source_name: String,
    /// A live source: workers take the newest waiting frame and drop the older ones.
    fresh_only: bool,
}

/// Capped exponential back-off with jitter, for reopening sources.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            next: min,
            min,
            max,
            seed,
        }
    }

    /// The next delay: doubling from `min` up to `max`, each with +-20% jitter.
    pub fn next_delay(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.8 + 0.4 * (self.seed % 1000) as f64 / 1000.0;
        let d = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Logs a recurring run-time problem at `warn` at most once per interval and at `debug`
/// otherwise, saying how many occurrences were not shown.
struct Throttled {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn new(every: Duration) -> Throttled {
        Throttled {
            every,
            last: None,
            suppressed: 0,
        }
    }

    fn warn(&mut self, msg: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= self.every)
        {
            if self.suppressed > 0 {
                log::warn!(
                    "{msg} (and {} more like it since the last report)",
                    self.suppressed
                );
            } else {
                log::warn!("{msg}");
            }
            self.last = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
            log::debug!("{msg}");
        }
    }
}

/// The whole error chain of `e` on one line: `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|source| StartError::Thread {
            name: name.to_owned(),
            source,
        })
}

/// Everything downstream of the frame queue: what a configuration reload replaces while the
/// source keeps running.
pub struct Downstream {
    pub model: Arc<Model>,
    pub rules: RuleSet,
    /// Sinks with their names, in config order (rule sink indices refer to this order).
    pub sinks: Vec<(String, Box<dyn Sink>)>,
    pub workers: usize,
    /// Idle workers help a busy one with its frame's convolutions ([`team`]).
    pub assist: bool,
    pub sink_queue: usize,
    pub top_k: usize,
    pub device: String,
    pub live: Option<Arc<Live>>,
}

/// The running workers, dispatcher and sinks of one configuration.
struct Generation {
    /// Tells the workers to stop taking frames (the frame queue stays for the next generation).
    quit: Arc<AtomicBool>,
    /// Workers, dispatcher, sinks: joined in this order.
    stages: Vec<(String, JoinHandle<()>)>,
}

/// Opens the source and starts every thread.
pub fn start(parts: Parts, stop: StopToken) -> Result<Running, StartError> {
    let Parts {
        mut source,
        model,
        rules,
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
        trace_frames,
    } = parts;
    let source_name = source.describe();
    let fresh_only = source.live();
    source.open().map_err(|e| StartError::Source {
        source_name: source_name.clone(),
        source: e,
    })?;
    let metrics = Arc::new(if trace_frames {
        Metrics::tracing(&[])
    } else {
        Metrics::new(&[])
    });

    // Frames: capture -> workers. The capture thread also holds a receiver, to drop the oldest
    // frame when the queue is full. Closes when the capture thread ends; outlives reloads.
    let (frame_tx, frame_rx) = bounded::<Frame>(frame_queue);
    let downstream = Downstream {
        model,
        rules,
        sinks,
        workers,
        assist,
        sink_queue,
        top_k,
        device,
        live,
    };
    let generation = start_generation(downstream, &frame_rx, &metrics, &source_name, fresh_only)?;

    let m = Arc::clone(&metrics);
    let st = stop.clone();
    let drop_rx = frame_rx.clone();
    let capture = spawn("capture", move || {
        capture_loop(source, frame_tx, drop_rx, m, st, reconnect)
    })?;

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
        capture: Some(capture),
        frame_rx,
        generation: Some(generation),
        summary_done,
        summary,
        source_name,
        fresh_only,
    })
}

/// Starts workers, dispatcher and sinks reading `frame_rx`.
fn start_generation(
    d: Downstream,
    frame_rx: &Receiver<Frame>,
    metrics: &Arc<Metrics>,
    source_name: &str,
    fresh_only: bool,
) -> Result<Generation, StartError> {
    let Downstream {
        model,
        rules,
        sinks,
        workers,
        assist,
        sink_queue,
        top_k: k,
        device,
        live,
    } = d;
    let sessions: Vec<Session> = (0..workers.max(1))
        .map(|_| model.session())
        .collect::<Result<_, _>>()
        .map_err(StartError::Session)?;
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
    let keep_frames = frame_sinks.contains(&true) || live.is_some();
    for ((name, sink), c) in sinks.into_iter().zip(counters.iter().cloned()) {
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
    // A live source's workers count those waiting for a frame (see `worker_loop`).
    let idle = fresh_only.then(|| Arc::new(AtomicUsize::new(0)));
    for (i, session) in sessions.into_iter().enumerate() {
        let member = team.member();
        let rx = frame_rx.clone();
        let tx = class_tx.clone();
        let m = Arc::clone(metrics);
        let q = Arc::clone(&quit);
        let idle = idle.clone();
        let name = format!("worker-{i}");
        stages.push((
            name.clone(),
            spawn(&name, move || {
                worker_loop(session, member, rx, tx, m, keep_frames, idle, q)
            })?,
        ));
    }
    drop(class_tx);

    let m = Arc::clone(metrics);
    let labels: Arc<[String]> = model.labels.clone().into();
    let src = source_name.to_owned();
    stages.push((
        "dispatcher".to_owned(),
        spawn("dispatcher", move || {
            dispatch_loop(
                class_rx,
                sink_txs,
                frame_sinks,
                counters,
                live,
                rules,
                labels,
                k,
                device,
                src,
                m,
            )
        })?,
    ));
    stages.extend(sink_threads);
    Ok(Generation { quit, stages })
}

/// Joins `stages` in order within `deadline`; names the ones left running.
fn join_stages(stages: Vec<(String, JoinHandle<()>)>, until: Instant) {
    for (name, handle) in stages {
        while !handle.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if handle.is_finished() {
            if handle.join().is_err() {
                log::error!("Pipeline thread panicked. thread={name}");
            }
        } else {
            log::error!(
                "Pipeline thread did not finish before the deadline; leaving it. thread={name}"
            );
        }
    }
}

impl Running {
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops the source; the pipeline drains. Call [`Running::wait`] to join it.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Whether every stage has ended (the source finished or was stopped, and all drained).
    pub fn is_finished(&self) -> bool {
        self.capture.as_ref().is_none_or(|h| h.is_finished())
            && self
                .generation
                .as_ref()
                .is_none_or(|g| g.stages.iter().all(|(_, h)| h.is_finished()))
    }

    /// Whether the capture thread has ended (the source finished, or stop was set).
    pub fn capture_finished(&self) -> bool {
        self.capture.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops the workers, dispatcher and sinks after they have finished what they hold: every
    /// frame a worker took is classified and every event produced is delivered (or counted),
    /// within `deadline`. The source keeps capturing into the frame queue (dropping the oldest
    /// frame when it is full). Start the next configuration with [`Running::start_downstream`].
    pub fn drain_downstream(&mut self, deadline: Duration) {
        if let Some(g) = self.generation.take() {
            g.quit.store(true, Relaxed);
            join_stages(g.stages, Instant::now() + deadline);
            let counts: Vec<String> = self
                .metrics
                .sinks()
                .iter()
                .map(|c| {
                    format!(
                        "sink.{0}.sent={1} sink.{0}.failed={2} sink.{0}.dropped={3}",
                        c.name,
                        c.sent.load(Relaxed),
                        c.failed.load(Relaxed),
                        c.dropped.load(Relaxed)
                    )
                })
                .collect();
            log::info!("Previous sinks finished. {}", counts.join(" "));
        }
    }

    /// Starts workers, dispatcher and sinks for `d` on the running source (after
    /// [`Running::drain_downstream`]).
    pub fn start_downstream(&mut self, d: Downstream) -> Result<(), StartError> {
        self.drain_downstream(Duration::from_secs(10));
        self.generation = Some(start_generation(
            d,
            &self.frame_rx,
            &self.metrics,
            &self.source_name,
            self.fresh_only,
        )?);
        Ok(())
    }

    /// Waits for the source to end (or the stop token), then for every stage to drain, in order.
    /// After `stop` is set, stages get `deadline` in all; threads still running then are left
    /// behind (and named in the log). Returns the final counters.
    pub fn wait(mut self, deadline: Duration) -> Snapshot {
        // Wait for the capture thread: until stop, or the end of a finite source.
        if let Some(capture) = &self.capture {
            while !capture.is_finished() && !self.stop.is_stopped() {
                std::thread::sleep(crate::stop::POLL);
            }
        }
        let until = Instant::now() + deadline;
        let mut stages: Vec<(String, JoinHandle<()>)> = Vec::new();
        if let Some(c) = self.capture.take() {
            stages.push(("capture".to_owned(), c));
        }
        if let Some(g) = self.generation.take() {
            stages.extend(g.stages);
        }
        join_stages(stages, until);
        self.summary_done.take();
        if let Some(h) = self.summary.take() {
            let _ = h.join();
        }
        self.metrics.snapshot()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

fn capture_loop(
    mut source: Box<dyn FrameSource>,
    frame_tx: Sender<Frame>,
    drop_rx: Receiver<Frame>,
    m: Arc<Metrics>,
    stop: StopToken,
    reconnect: (Duration, Duration),
) {
    let name = source.describe();
    let live = source.live();
    let mut seq = 0u64;
    let mut backoff = Backoff::new(reconnect.0, reconnect.1);
    'frames: while !stop.is_stopped() {
        m.capture_beat.store(crate::metrics::now_ms(), Relaxed);
        match source.next_frame(&stop) {
            Ok(Some(mut frame)) => {
                frame.seq = seq;
                seq += 1;
                m.captured.fetch_add(1, Relaxed);
                if live {
                    // Never block: make room by dropping the oldest queued frame.
                    let mut frame = frame;
                    loop {
                        match frame_tx.try_send(frame) {
                            Ok(()) => break,
                            Err(TrySendError::Full(back)) => {
                                frame = back;
                                if drop_rx.try_recv().is_ok() {
                                    m.dropped.fetch_add(1, Relaxed);
                                }
                            }
                            Err(TrySendError::Disconnected(_)) => break 'frames,
                        }
                    }
                } else {
                    // Not live: wait for a worker, every frame is processed.
                    let mut frame = frame;
                    loop {
                        match frame_tx.send_timeout(frame, crate::stop::POLL) {
                            Ok(()) => break,
                            Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                                if stop.is_stopped() {
                                    break 'frames;
                                }
                                frame = back;
                            }
                            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                                break 'frames
                            }
                        }
                    }
                }
            }
            Ok(None) => {
                if stop.is_stopped() {
                    log::info!("Source stopped. source={name} frames={seq}");
                } else {
                    log::info!("Source ended: no more frames. source={name} frames={seq}");
                }
                break;
            }
            Err(e) => {
                m.source_errors.fetch_add(1, Relaxed);
                log::warn!(
                    "Source failed; reopening with back-off. source={name} error={}",
                    chain(&e)
                );
                source.close();
                loop {
                    if stop.sleep(backoff.next_delay()) {
                        break 'frames;
                    }
                    m.capture_beat.store(crate::metrics::now_ms(), Relaxed);
                    match source.open() {
                        Ok(()) => {
                            m.reconnects.fetch_add(1, Relaxed);
                            backoff.reset();
                            log::info!("Source reopened. source={name}");
                            break;
                        }
                        Err(e) => {
                            m.source_errors.fetch_add(1, Relaxed);
                            log::debug!("Source still failing. source={name} error={}", chain(&e));
                        }
                    }
                }
            }
        }
    }
    source.close();
}

#[allow(clippy::too_many_arguments)]
fn worker_loop(
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

#[allow(clippy::too_many_arguments)]
fn dispatch_loop(
    class_rx: Receiver<Classified>,
    sink_txs: Vec<Sender<Delivery>>,
    frame_sinks: Vec<bool>,
    counters: Vec<Arc<SinkMetrics>>,
    live: Option<Arc<Live>>,
    mut rules: RuleSet,
    labels: Arc<[String]>,
    k: usize,
    device: String,
    source: String,
    m: Arc<Metrics>,
) {
    let all_sinks: Vec<usize> = (0..sink_txs.len()).collect();
    while let Ok(mut c) = class_rx.recv() {
        let frame: Option<Arc<Frame>> = c.frame.take().map(Arc::new);
        let top: Vec<TopEntry> = top_k(&c.probs, k)
            .into_iter()
            .map(|(index, score)| TopEntry {
                index,
                label: labels.get(index).cloned().unwrap_or_default(),
                score,
            })
            .collect();
        if let (Some(truth), Some(best)) = (c.truth.as_deref(), top.first()) {
            m.truth_total.fetch_add(1, Relaxed);
            if best.label == truth {
                m.truth_correct.fetch_add(1, Relaxed);
            }
        }
        let firings: Vec<(Option<String>, usize, f32, &[usize])> = if rules.is_empty() {
            top.first()
                .map(|t| (None, t.index, t.score, all_sinks.as_slice()))
                .into_iter()
                .collect()
        } else {
            let fired = rules.observe(&c.probs, c.captured);
            fired
                .into_iter()
                .map(|f| {
                    (
                        Some(rules.names[f.rule].clone()),
                        f.label,
                        f.score,
                        rules.sinks[f.rule].as_slice(),
                    )
                })
                .collect()
        };
        let captured_at = rfc3339(c.captured_at);
        if let Some(live) = &live {
            let ms = c
                .captured_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            live.classified(c.seq, ms, &captured_at, &top, frame.clone());
        }
        for (rule, label, score, targets) in firings {
            let latency = c.captured.elapsed();
            let captured_at = captured_at.clone();
            let label_name = labels.get(label).cloned().unwrap_or_default();
            // Name the snapshot only when a snapshot sink will take the event (the dispatcher
            // is the only sender, so a queue with room now still has it below).
            let snapshot = (frame.is_some()
                && targets
                    .iter()
                    .any(|&i| frame_sinks[i] && !sink_txs[i].is_full()))
            .then(|| crate::sink::snapshot::file_name(&captured_at, c.seq, &label_name));
            let event = Arc::new(Event {
                device: device.clone(),
                source: source.clone(),
                rule,
                label: label_name,
                score,
                top: top.clone(),
                frame_seq: c.seq,
                captured_at,
                latency_ms: latency.as_secs_f64() * 1000.0,
                file: c.origin.as_deref().map(str::to_owned),
                truth: c.truth.as_deref().map(str::to_owned),
                snapshot,
            });
            m.events.fetch_add(1, Relaxed);
            m.event_latency.record(latency);
            if let Some(live) = &live {
                live.event(&event);
            }
            for &i in targets {
                let delivery = Delivery {
                    event: Arc::clone(&event),
                    captured: c.captured,
                    frame: if frame_sinks[i] { frame.clone() } else { None },
                };
                if let Err(TrySendError::Full(_)) = sink_txs[i].try_send(delivery) {
                    counters[i].dropped.fetch_add(1, Relaxed);
                    log::debug!(
                        "Sink queue full; event dropped for this sink. sink={} frame={}",
                        counters[i].name,
                        c.seq
                    );
                }
            }
        }
    }
}

fn sink_loop(
    name: String,
    mut sink: Box<dyn Sink>,
    rx: Receiver<Delivery>,
    counters: Arc<SinkMetrics>,
) {
    let mut warn = Throttled::new(Duration::from_secs(10));
    loop {
        let delivery = match rx.try_recv() {
            Ok(d) => d,
            Err(TryRecvError::Empty) => {
                if let Err(e) = sink.flush() {
                    counters.failed.fetch_add(1, Relaxed);
                    warn.warn(format_args!(
                        "Sink flush failed. sink={name} error={}",
                        chain(&e)
                    ));
                }
                match rx.recv() {
                    Ok(d) => d,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let sent = match &delivery.frame {
            Some(frame) => sink.send_with_frame(&delivery.event, frame),
            None => sink.send(&delivery.event),
        };
        match sent {
            Ok(()) => {
                counters.sent.fetch_add(1, Relaxed);
                counters.latency.record(delivery.captured.elapsed());
            }
            Err(e) => {
                counters.failed.fetch_add(1, Relaxed);
                warn.warn(format_args!(
                    "Sink could not deliver an event. sink={name} frame={} error={}",
                    delivery.event.frame_seq,
                    chain(&e)
                ));
            }
        }
    }
    if let Err(e) = sink.flush() {
        counters.failed.fetch_add(1, Relaxed);
        log::error!(
            "Sink flush at shutdown failed. sink={name} error={}",
            chain(&e)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<f64> = (0..6)
            .map(|_| b.next_delay().as_secs_f64() * 1000.0)
            .collect();
        let nominal = [100.0, 200.0, 400.0, 800.0, 1000.0, 1000.0];
        for (got, want) in d.iter().zip(nominal) {
            assert!(
                *got >= want * 0.8 - 1e-9 && *got <= want * 1.2 + 1e-9,
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn chain_joins_causes() {
        let e = SourceError::Io {
            what: "cannot open x".into(),
            source: std::io::Error::other("denied"),
        };
        assert_eq!(chain(&e), "cannot open x: denied");
    }
}
