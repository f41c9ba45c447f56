//! The daemon: builds every component from a validated [`Config`], handles SIGINT/SIGTERM, and
//! runs the pipeline until the source ends or a signal stops it.
//!
//! Startup errors (model, labels in rules, sinks, opening the source) are returned before any
//! frame flows; the binary prints them and exits non-zero. A second SIGINT/SIGTERM while
//! shutting down exits at once.
//!
//! `reload` applies reloads and model uploads, and says what runs for `/api/status`.

mod reload;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::health::{Report, Watch};
use crate::http::{Control, HttpError, Server, State};
use crate::live::{Live, LiveSource};
use crate::metrics::{Metrics, Snapshot};
use crate::model::{Model, ModelError};
use crate::models::{self, Loaded};
use crate::notify::Notifier;
use crate::pipeline::{self, ModelPart, Parts, Running, SourcePart, StartError};
use crate::rules::{RuleSet, UnknownLabel};
use crate::sink::{Sink, SinkError};
use crate::stop::StopToken;

/// Time the stages get to drain after the source stops.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot load the model")]
    Model(#[from] ModelError),
    /// A `[models.NAME]` model that does not load (`[model]`'s is [`DaemonError::Model`]).
    #[error(transparent)]
    NamedModel(Box<crate::models::LoadError>),
    #[error("invalid rule")]
    Rule(#[source] Box<UnknownLabel>),
    #[error("cannot start sink {name:?}")]
    Sink {
        name: String,
        #[source]
        source: SinkError,
    },
    #[error("cannot start the pipeline")]
    Start(#[from] StartError),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("cannot start the HTTP server")]
    Http(#[from] HttpError),
    #[error("cannot open the [collect] dataset")]
    Collect(#[from] crate::collect::DatasetError),
    #[error("cannot write the input tensors to {}", path.display())]
    DumpInput {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DaemonError {
    /// Exit code: 2 for problems in the configuration or the files it names, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Model(_)
            | DaemonError::NamedModel(_)
            | DaemonError::Rule(_)
            | DaemonError::Collect(_) => 2,
            _ => 1,
        }
    }
}

/// Loads the models and builds rules and sinks. `extra_sinks` are added after the configured
/// ones (a recording sink in tests, for instance); rules without a `sinks` list reach them too.
pub fn build(
    config: &Config,
    extra_sinks: Vec<(String, Box<dyn Sink>)>,
) -> Result<Parts, DaemonError> {
    build_with_models(config, load_models(config)?, extra_sinks)
}

/// [`build`] with `[model]` already loaded (benchmarks run several pipelines on one); the
/// `[models.NAME]` that sources name are loaded here.
pub fn build_with_model(
    config: &Config,
    model: Arc<Model>,
    extra_sinks: Vec<(String, Box<dyn Sink>)>,
) -> Result<Parts, DaemonError> {
    let mut uses = models::uses(&config.model, &config.models, &config.sources());
    let used_by = match uses.first() {
        Some(u) if u.name == models::DEFAULT => uses.remove(0).used_by,
        _ => Vec::new(),
    };
    let mut loaded = vec![Loaded {
        name: models::DEFAULT.into(),
        model,
        used_by,
    }];
    loaded.extend(models::load(&uses).map_err(load_error)?);
    build_with_models(config, loaded, extra_sinks)
}

fn build_with_models(
    config: &Config,
    loaded: Vec<Loaded>,
    extra_sinks: Vec<(String, Box<dyn Sink>)>,
) -> Result<Parts, DaemonError> {
    let device = config.device_id();
    let mut sinks = build_sinks(config, &device)?;
    sinks.extend(extra_sinks);
    let names: Vec<String> = sinks.iter().map(|(n, _)| n.clone()).collect();
    let model_parts = model_parts(config, &loaded, &names)?;
    let summary = config.log.summary_secs;
    Ok(Parts {
        sources: source_parts(config),
        models: model_parts,
        sinks,
        workers: config.pipeline.worker_count(),
        assist: config.pipeline.assist,
        frame_queue: config.pipeline.frame_queue,
        sink_queue: config.pipeline.sink_queue,
        top_k: config.pipeline.top_k,
        device,
        summary_every: (summary > 0.0).then(|| Duration::from_secs_f64(summary)),
        reconnect: reconnect_delays(config),
        live: config
            .http
            .listen
            .is_some()
            .then(|| Live::with_sources(&live_sources(config))),
        collect: crate::collect::collecting(config.collect.as_ref(), None)?,
        trace_frames: false,
    })
}

/// The rules, checked against the models of what each one watches, resolved for each model
/// (`sinks`: the sink names in order).
fn model_parts(
    config: &Config,
    loaded: &[Loaded],
    sinks: &[String],
) -> Result<Vec<ModelPart>, DaemonError> {
    models::check_rules(&config.rules, &config.sources(), loaded)?;
    let drift = crate::drift::Settings::new(config.drift.as_ref(), &config.rules);
    Ok(loaded
        .iter()
        .map(|l| ModelPart {
            name: Arc::clone(&l.name),
            model: Arc::clone(&l.model),
            rules: RuleSet::build_for_model(&config.rules, &l.model.labels, sinks),
            drift: drift.as_ref().map(|s| {
                crate::drift::ModelDrift::for_model(s, Path::new(&l.model.name), &l.model.labels)
            }),
        })
        .collect())
}

/// The sources as the live view is told them: names, regions, and the entry (a changed entry
/// numbers its frames from 0 again).
fn live_sources(config: &Config) -> Vec<LiveSource> {
    config
        .sources()
        .into_iter()
        .map(|s| LiveSource {
            key: format!("{s:?}"),
            regions: s.regions(),
            name: s.name,
        })
        .collect()
}

/// Builds `[source]` / `[[sources]]` (nothing opened yet).
fn source_parts(config: &Config) -> Vec<SourcePart> {
    config
        .sources()
        .into_iter()
        .map(|s| SourcePart {
            key: format!("{s:?}"),
            regions: s.regions(),
            model: s.model_name().into(),
            source: s.source.build(),
            name: s.name,
        })
        .collect()
}

pub(crate) fn load_error(e: models::LoadError) -> DaemonError {
    if e.name == models::DEFAULT {
        DaemonError::Model(*e.source)
    } else {
        DaemonError::NamedModel(Box::new(e))
    }
}

impl From<UnknownLabel> for DaemonError {
    fn from(e: UnknownLabel) -> DaemonError {
        DaemonError::Rule(Box::new(e))
    }
}

/// Loads every model the sources and regions use, once each, and logs what each is; warns
/// about `[models.NAME]` tables nothing uses.
pub fn load_models(config: &Config) -> Result<Vec<Loaded>, DaemonError> {
    let sources = config.sources();
    for name in models::unused(&config.models, &sources) {
        log::warn!(
            "Model not loaded: no source or region names it. model={name} key=models.{name}"
        );
    }
    let loaded =
        models::load(&models::uses(&config.model, &config.models, &sources)).map_err(load_error)?;
    for l in &loaded {
        let model = &l.model;
        log::info!(
            "Model loaded. name={} model={} input={:?} layout={:?} dtype={:?} classes={} labels_from=\"{}\" quantization=\"{}\" load_ms={:.0} used_by={}",
            l.name,
            model.name,
            model.input.shape(),
            model.input.layout,
            model.input.dtype,
            model.classes(),
            model.labels_from,
            model.quantization.describe(),
            model.load_time.as_secs_f64() * 1000.0,
            l.used_by.join(",")
        );
    }
    Ok(loaded)
}

/// Sinks with their names, in config order.
type NamedSinks = Vec<(String, Box<dyn Sink>)>;

/// Builds `[[sinks]]` in config order.
fn build_sinks(config: &Config, device: &str) -> Result<NamedSinks, DaemonError> {
    let mut sinks: Vec<(String, Box<dyn Sink>)> = Vec::new();
    for cfg in &config.sinks {
        let sink = cfg.build(device).map_err(|source| DaemonError::Sink {
            name: cfg.name().to_owned(),
            source,
        })?;
        sinks.push((cfg.name().to_owned(), sink));
    }
    Ok(sinks)
}

/// Builds and starts the pipeline; `stop` ends it.
pub fn start(
    config: &Config,
    extra_sinks: Vec<(String, Box<dyn Sink>)>,
    stop: StopToken,
) -> Result<Running, DaemonError> {
    start_parts(build(config, extra_sinks)?, stop)
}

fn start_parts(parts: Parts, stop: StopToken) -> Result<Running, DaemonError> {
    let workers = parts.workers;
    let sinks: Vec<String> = parts.sinks.iter().map(|(n, _)| n.clone()).collect();
    let running = pipeline::start(parts, stop)?;
    log::info!(
        "Pipeline started. source={} workers={workers} sinks={}",
        running.source_name,
        sinks.join(",")
    );
    Ok(running)
}

/// Registers SIGINT/SIGTERM on `stop`: the first signal sets it, a second one exits at once.
pub fn install_signals(stop: &StopToken) -> Result<(), DaemonError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the conditional exit is armed before the flag is set by this signal.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.flag())
            .map_err(DaemonError::Signals)?;
        signal_hook::flag::register(sig, stop.flag()).map_err(DaemonError::Signals)?;
    }
    Ok(())
}

/// `lookout run`: runs until the source ends or SIGINT/SIGTERM; returns the final counters.
///
/// Under systemd (`notifier`), READY=1 is sent once the model is loaded and the pipeline runs,
/// WATCHDOG=1 while [`Watch`] sees progress, and STOPPING=1 when a signal arrives.
pub fn run(
    config: &Config,
    path: Option<&Path>,
    notifier: Notifier,
) -> Result<Snapshot, DaemonError> {
    let stop = StopToken::new();
    install_signals(&stop)?;
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .map_err(DaemonError::Signals)?;
    let loaded = load_models(config)?;
    let parts = build_with_models(config, loaded.clone(), Vec::new())?;
    let names: Vec<&str> = parts.sources.iter().map(|s| s.name.as_str()).collect();
    let views = reload::Views {
        live: parts.live.clone(),
        info: Arc::new(Mutex::new(reload::info(config, names.join(","), &loaded))),
        collect: Arc::new(Mutex::new(
            parts.collect.as_ref().map(|c| Arc::clone(&c.dataset)),
        )),
    };
    let live = views.live.clone();
    let mut running = start_parts(parts, stop.clone())?;
    let health = Arc::new(Mutex::new(Report::default()));
    let (reload_tx, reload_rx) = crossbeam_channel::bounded::<Control>(4);
    let server = match &live {
        Some(live) => {
            let state = State {
                metrics: Arc::clone(running.metrics()),
                live: Arc::clone(live),
                health: Arc::clone(&health),
                info: Arc::clone(&views.info),
                reload: Some(reload_tx),
                collect: Arc::clone(&views.collect),
            };
            match Server::start(&config.http, state) {
                Ok(s) => s,
                Err(e) => {
                    running.stop();
                    running.wait(SHUTDOWN_DEADLINE);
                    return Err(e.into());
                }
            }
        }
        None => None,
    };
    notifier.ready(&format!("Running. source={}", running.source_name));
    // Stuck means no frame processed for a minute (or two watchdog intervals) while frames
    // arrive, or a capture thread gone longer than its longest back-off plus two minutes.
    let watchdog = notifier.watchdog_interval();
    let stall = watchdog.map_or(STALL, |w| (w * 2).max(STALL));
    let capture_limit_at_start = capture_limit(config);
    let done = Arc::new(AtomicBool::new(false));
    let capture_limit_ms;
    let supervisor = {
        let (m, stop, done) = (
            Arc::clone(running.metrics()),
            stop.clone(),
            Arc::clone(&done),
        );
        let watch = Watch::new(stall, capture_limit_at_start);
        capture_limit_ms = watch.capture_limit();
        std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || supervise(notifier, watch, &m, &stop, &done, &health))
            .map_err(|source| {
                DaemonError::Start(StartError::Thread {
                    name: "supervisor".into(),
                    source,
                })
            })?
    };
    // Until the source ends or a signal stops it: apply reload requests as they come.
    let mut current = config.clone();
    while !running.capture_finished() && !stop.is_stopped() {
        let control = match reload_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(c) => Some(c),
            Err(_) if hup.swap(false, Ordering::Relaxed) => None,
            Err(_) => continue,
        };
        let mut past_drain = false;
        let (result, reply) = reload::apply(
            control,
            &mut running,
            &mut current,
            path,
            &views,
            &mut past_drain,
        );
        capture_limit_ms.store(
            capture_limit(&current).as_millis() as u64,
            Ordering::Relaxed,
        );
        let m = running.metrics();
        match &result {
            Ok(msg) => {
                m.reloads.fetch_add(1, Ordering::Relaxed);
                log::info!("{msg}");
            }
            Err(why) if past_drain => {
                m.reload_failures.fetch_add(1, Ordering::Relaxed);
                log::error!("Reload failed after the running workers stopped. reason={why}");
            }
            Err(why) => {
                m.reload_failures.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "Configuration not reloaded; the running configuration stays. reason={why}"
                );
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
    let snapshot = running.wait(SHUTDOWN_DEADLINE);
    done.store(true, Ordering::Relaxed);
    let _ = supervisor.join();
    if let Some(server) = server {
        server.stop();
    }
    log::info!("Stopped. {}", snapshot.summary_line());
    Ok(snapshot)
}

/// The reopening back-off's first delay and cap.
fn reconnect_delays(config: &Config) -> (Duration, Duration) {
    (
        Duration::from_secs_f64(config.pipeline.reconnect_min_secs),
        Duration::from_secs_f64(config.pipeline.reconnect_max_secs),
    )
}

/// Longest a capture thread may stay away: the longest back-off delay (+20% jitter, rounded
/// up) and the longest a source read or open may take.
fn capture_limit(config: &Config) -> Duration {
    Duration::from_secs_f64(config.pipeline.reconnect_max_secs * 1.25) + CAPTURE_GRACE
}

/// Longest time frames may arrive with none processed before the pipeline counts as stuck.
const STALL: Duration = Duration::from_secs(60);
/// Added to the longest back-off delay: the longest a source read or open may take.
const CAPTURE_GRACE: Duration = Duration::from_secs(120);

/// Checks progress every second: pings the watchdog while healthy, logs when the pipeline gets
/// stuck and when it recovers, keeps systemd's status line current, and says STOPPING.
fn supervise(
    notifier: Notifier,
    mut watch: Watch,
    m: &Metrics,
    stop: &StopToken,
    done: &AtomicBool,
    health: &Mutex<Report>,
) {
    let ping_every = notifier
        .watchdog_interval()
        .map(|w| (w / 2).max(Duration::from_millis(100)));
    let mut last_ping = Instant::now();
    let mut last_check = Instant::now();
    let mut last_status = Instant::now();
    let mut stuck = false;
    let mut healthy = true;
    while !done.load(Ordering::Relaxed) {
        if stop.is_stopped() {
            notifier.stopping();
            return;
        }
        if last_check.elapsed() >= Duration::from_secs(1) {
            last_check = Instant::now();
            let report = watch.report(m);
            *health.lock().unwrap_or_else(|e| e.into_inner()) = report.clone();
            match report.reason.filter(|_| report.stuck) {
                None => {
                    healthy = true;
                    if stuck {
                        stuck = false;
                        log::info!("Pipeline making progress again.");
                    }
                }
                Some(why) => {
                    healthy = false;
                    if !stuck {
                        stuck = true;
                        log::error!(
                            "Pipeline {why}.{}",
                            if ping_every.is_some() {
                                " Watchdog pings stopped: systemd will restart the service."
                            } else {
                                ""
                            }
                        );
                        notifier.status(&why);
                    }
                }
            }
        }
        if let Some(every) = ping_every {
            if healthy && last_ping.elapsed() >= every {
                notifier.watchdog();
                last_ping = Instant::now();
            }
        }
        if healthy && notifier.active() && last_status.elapsed() >= Duration::from_secs(10) {
            notifier.status(&m.snapshot().summary_line());
            last_status = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The pipeline may drain between two polls.
    if stop.is_stopped() {
        notifier.stopping();
    }
}
