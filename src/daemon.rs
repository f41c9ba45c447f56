//! The daemon: builds every component from a validated [`Config`], handles SIGINT/SIGTERM, and
//! runs the pipeline until the source ends or a signal stops it.
//!
//! Startup errors (model, labels in rules, sinks, opening the source) are returned before any
//! frame flows; the binary prints them and exits non-zero. A second SIGINT/SIGTERM while
//! shutting down exits at once.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::metrics::Snapshot;
use crate::model::{Model, ModelError};
use crate::pipeline::{self, Parts, Running, StartError};
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
    #[error("invalid rule")]
    Rule(#[from] UnknownLabel),
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
}

impl DaemonError {
    /// Exit code: 2 for problems in the configuration or the files it names, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Model(_) | DaemonError::Rule(_) => 2,
            _ => 1,
        }
    }
}

/// Loads the model and builds rules and sinks. `extra_sinks` are added after the configured
/// ones (a recording sink in tests, for instance); rules without a `sinks` list reach them too.
pub fn build(
    config: &Config,
    extra_sinks: Vec<(String, Box<dyn Sink>)>,
) -> Result<Parts, DaemonError> {
    let model = Arc::new(Model::load(&config.model)?);
    log::info!(
        "Model loaded. model={} input={:?} layout={:?} dtype={:?} classes={} labels_from=\"{}\" quantization=\"{}\" load_ms={:.0}",
        model.name,
        model.input.shape(),
        model.input.layout,
        model.input.dtype,
        model.classes(),
        model.labels_from,
        model.quantization.describe(),
        model.load_time.as_secs_f64() * 1000.0
    );
    let device = config.device_id();
    let mut sinks: Vec<(String, Box<dyn Sink>)> = Vec::new();
    for cfg in &config.sinks {
        let sink = cfg.build(&device).map_err(|source| DaemonError::Sink {
            name: cfg.name().to_owned(),
            source,
        })?;
        sinks.push((cfg.name().to_owned(), sink));
    }
    sinks.extend(extra_sinks);
    let names: Vec<String> = sinks.iter().map(|(n, _)| n.clone()).collect();
    let rules = RuleSet::build(&config.rules, &model.labels, &names)?;
    let summary = config.log.summary_secs;
    Ok(Parts {
        source: config.source.build(),
        model,
        rules,
        sinks,
        workers: config.pipeline.worker_count(),
        frame_queue: config.pipeline.frame_queue,
        sink_queue: config.pipeline.sink_queue,
        top_k: config.pipeline.top_k,
        device: config.device_id(),
        summary_every: (summary > 0.0).then(|| Duration::from_secs_f64(summary)),
        reconnect: (
            Duration::from_secs_f64(config.pipeline.reconnect_min_secs),
            Duration::from_secs_f64(config.pipeline.reconnect_max_secs),
        ),
    })
}

/// Builds and starts the pipeline; `stop` ends it.
pub fn start(
    config: &Config,
    extra_sinks: Vec<(String, Box<dyn Sink>)>,
    stop: StopToken,
) -> Result<Running, DaemonError> {
    let parts = build(config, extra_sinks)?;
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
pub fn run(config: &Config) -> Result<Snapshot, DaemonError> {
    let stop = StopToken::new();
    install_signals(&stop)?;
    let running = start(config, Vec::new(), stop.clone())?;
    let snapshot = running.wait(SHUTDOWN_DEADLINE);
    log::info!("Stopped. {}", snapshot.summary_line());
    Ok(snapshot)
}
