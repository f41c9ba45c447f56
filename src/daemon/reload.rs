//! Applying a configuration reload (SIGHUP, `POST /api/reload`) or a model upload
//! (`POST /api/model`) to the running pipeline, and `/api/status`'s facts about what runs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{
    build_sinks, live_sources, load_models, model_parts, reconnect_delays, source_parts,
    SHUTDOWN_DEADLINE,
};
use crate::config::Config;
use crate::http::{Control, Info, ModelInfo, Reply};
use crate::live::Live;
use crate::models::Loaded;
use crate::pipeline::{self, Downstream, Running};

/// What the HTTP server shows of the running configuration, updated by a reload.
pub(super) struct Views {
    /// The live view, when the HTTP server runs.
    pub live: Option<Arc<Live>>,
    /// `/api/status`'s facts.
    pub info: Arc<Mutex<Info>>,
    /// The `[collect]` dataset `/collect` shows.
    pub collect: crate::collect::Shelf,
}

/// Applies one request of the main loop (`None`: SIGHUP): a reload, or a model upload then a
/// reload (the previous model file put back when the reload refuses it before the running
/// workers stop). Returns the outcome and where to send it. `past_drain`: as in [`reload`].
pub(super) fn apply(
    control: Option<Control>,
    running: &mut Running,
    current: &mut Config,
    path: Option<&Path>,
    views: &Views,
    past_drain: &mut bool,
) -> (Result<String, String>, Option<Reply>) {
    match control {
        None | Some(Control::Reload(_)) => {
            log::info!(
                "Reloading the configuration. trigger={}",
                if control.is_some() {
                    "POST /api/reload"
                } else {
                    "SIGHUP"
                }
            );
            let result = reload(running, current, path, views, past_drain);
            let reply = match control {
                Some(Control::Reload(reply)) => Some(reply),
                _ => None,
            };
            (result, reply)
        }
        Some(Control::Deploy {
            model,
            bytes,
            reply,
        }) => {
            log::info!(
                "Deploying a model. trigger=\"POST /api/model\" model={model} bytes={}",
                bytes.len()
            );
            let result = match crate::deploy::install(current, &model, &bytes) {
                Err(e) => Err(crate::retry::chain(&e)),
                Ok(installed) => {
                    let done = installed.describe();
                    match reload(running, current, path, views, past_drain) {
                        Ok(msg) => Ok(format!("{done} {msg}")),
                        // The new model runs: its file stays.
                        Err(why) if *past_drain => Err(format!(
                            "{why} (the uploaded model is installed and running: {done})"
                        )),
                        Err(why) => match installed.restore() {
                            Ok(()) => {
                                Err(format!("{why}; the previous model file is back in place"))
                            }
                            Err(e) => Err(format!(
                                "{why}; and the previous model file could not be put back: {}",
                                crate::retry::chain(&e)
                            )),
                        },
                    }
                }
            };
            (result, Some(reply))
        }
    }
}

/// `/api/status`'s facts; `model`, `input`, `quantization` and `labels` are the first model's
/// (every configuration has one: each source uses a model).
pub(super) fn info(config: &Config, source: String, loaded: &[Loaded]) -> Info {
    let first = loaded.first().map(|l| &*l.model);
    Info {
        device: config.device_id(),
        source,
        model: first.map(|m| m.name.clone()).unwrap_or_default(),
        input: first.map(|m| m.input.shape().to_vec()).unwrap_or_default(),
        quantization: first
            .map(|m| m.quantization.describe().to_string())
            .unwrap_or_default(),
        labels: first.map(|m| m.labels.clone()).unwrap_or_default(),
        models: loaded
            .iter()
            .map(|l| ModelInfo {
                name: l.name.to_string(),
                path: l.model.name.clone(),
                classes: l.model.classes(),
                used_by: l.used_by.clone(),
                card_accuracy: card_accuracy(config, l),
            })
            .collect(),
        version: env!("CARGO_PKG_VERSION"),
        model_card_accuracy: loaded.first().and_then(|l| card_accuracy(config, l)),
    }
}

/// The validation accuracy on the card beside a model's file (`[model]` for "default", else
/// `[models.NAME]`), else the one `lookout train` wrote into the model's metadata.
fn card_accuracy(config: &Config, l: &Loaded) -> Option<f64> {
    let model = if &*l.name == crate::models::DEFAULT {
        Some(&config.model)
    } else {
        config.models.get(&*l.name)
    };
    model
        .and_then(|m| m.path.as_deref())
        .and_then(crate::train::card::read_accuracy)
        .or(l.model.card_accuracy)
}

/// Settings a reload cannot change while the cameras keep running: the HTTP server and
/// logging. Each changed one is named. (Sources are added, removed and restarted by a reload:
/// [`Running::update_sources`]; the frame queue and the reconnection back-off change in place.)
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if format!("{:?}", old.http) != format!("{:?}", new.http) {
        changed.push("[http]");
    }
    if format!("{:?}", old.log) != format!("{:?}", new.log) {
        changed.push("[log]");
    }
    changed
}

/// Re-reads and applies the configuration file (SIGHUP, `POST /api/reload`): the model, rules,
/// sinks, workers and `[pipeline]` queue/top-k settings change; sources are added, removed or
/// restarted as the file says (unchanged ones keep capturing). An invalid file, a model that does not load or rules that do not fit it leave everything as it
/// was. Sinks are replaced after the old ones have delivered what they hold; should a new sink
/// fail to start, the previous configuration's sinks are started again. Returns what was done,
/// or why nothing was.
/// `past_drain` is set once the running workers have been stopped: from then on the new file's
/// models run (or, should their workers fail to start, nothing), whatever the result.
pub(super) fn reload(
    running: &mut Running,
    current: &mut Config,
    path: Option<&Path>,
    views: &Views,
    past_drain: &mut bool,
) -> Result<String, String> {
    let Some(path) = path else {
        return Err("running on the embedded default configuration: there is no file to re-read (start with --config FILE)".into());
    };
    let new = Config::load(path).map_err(|e| crate::retry::chain(&e))?;
    // Every model of the new file is loaded (unchanged files too) before anything changes.
    let loaded = load_models(&new).map_err(|e| crate::retry::chain(&e))?;
    let names: Vec<String> = new.sinks.iter().map(|c| c.name().to_owned()).collect();
    let models = model_parts(&new, &loaded, &names).map_err(|e| crate::retry::chain(&e))?;
    // A new `[collect] dir` is opened (its manifest read) before anything changes.
    let running_dataset = views
        .collect
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let collect = crate::collect::collecting(new.collect.as_ref(), running_dataset.as_ref())
        .map_err(|e| format!("[collect]: {}", crate::retry::chain(&e)))?;
    // Every worker's sessions of the new models can be made (a model whose plan cannot run
    // refuses the reload here, not after the running workers have stopped).
    pipeline::try_sessions(&models, new.pipeline.worker_count())
        .map_err(|e| crate::retry::chain(&e))?;
    let kept = restart_only_changes(current, &new);
    // Sources: unchanged ones keep capturing; added or changed ones are opened first, so one
    // that does not open refuses the reload with nothing changed. (Should a new sink fail
    // below, the previous sinks come back but the sources stay as the new file says; the next
    // reload compares with what runs.)
    let changes = running
        .update_sources(source_parts(&new), SHUTDOWN_DEADLINE)
        .map_err(|e| crate::retry::chain(&e))?;
    // Point of no return: the old workers, dispatcher and sinks finish what they hold.
    running.drain_downstream(SHUTDOWN_DEADLINE);
    *past_drain = true;
    // Every frame of a removed source has been dispatched: the live view forgets it.
    let live = &views.live;
    if let Some(live) = live {
        live.set_sources(&live_sources(&new));
    }
    let device = new.device_id();
    let (applied, sinks, models, loaded, result) = match build_sinks(&new, &device) {
        Ok(sinks) => (&new, sinks, models, loaded, Ok(())),
        Err(e) => {
            let why = crate::retry::chain(&e);
            log::error!("A sink of the new configuration did not start; restarting the previous configuration's sinks. error={why}");
            // The sources now are the new file's: the previous sinks and rules run with the
            // models the new file's sources and regions name.
            let old_sinks = build_sinks(current, &current.device_id()).map_err(|e| {
                format!(
                    "{why}; and the previous sinks did not restart either: {}",
                    crate::retry::chain(&e)
                )
            })?;
            let old_names: Vec<String> = old_sinks.iter().map(|(n, _)| n.clone()).collect();
            let mut old = current.clone();
            old.model = new.model.clone();
            old.models = new.models.clone();
            old.sources = new.sources.clone();
            old.source = new.source.clone();
            let old_models =
                model_parts(&old, &loaded, &old_names).unwrap_or_else(|_| {
                    // The previous rules do not fit the new models: run without rules rather
                    // than without sinks.
                    log::error!("The previous rules do not fit the new models; running the previous sinks without rules.");
                    old.rules.clear();
                    model_parts(&old, &loaded, &old_names).unwrap_or_default()
                });
            (&*current, old_sinks, old_models, loaded, Err(why))
        }
    };
    let applied = applied.clone();
    let downstream = Downstream {
        models,
        sinks,
        workers: applied.pipeline.worker_count(),
        assist: applied.pipeline.assist,
        sink_queue: applied.pipeline.sink_queue,
        top_k: applied.pipeline.top_k,
        device: applied.device_id(),
        live: live.clone(),
        collect: if result.is_ok() {
            collect
        } else {
            crate::collect::collecting(current.collect.as_ref(), running_dataset.as_ref())
                .ok()
                .flatten()
        },
    };
    // `/collect` shows what is collected into from now on.
    *views.collect.lock().unwrap_or_else(|e| e.into_inner()) =
        downstream.collect.as_ref().map(|c| Arc::clone(&c.dataset));
    // Past the drain, only starting threads can fail here (the sessions were tried above).
    // Then nothing classifies: say so; the watchdog sees frames wait with none processed, so
    // the daemon turns unhealthy and systemd restarts it.
    running.start_downstream(downstream).map_err(|e| {
        format!(
            "{}; the workers did not start again, so nothing is classified until a reload succeeds or lookout restarts",
            crate::retry::chain(&e)
        )
    })?;
    running.set_frame_queue(applied.pipeline.frame_queue);
    let (min, max) = reconnect_delays(&applied);
    running.set_reconnect(min, max);
    *views.info.lock().unwrap_or_else(|e| e.into_inner()) =
        info(&applied, running.source_name.clone(), &loaded);
    result?;
    *current = applied;
    let described: Vec<String> = loaded
        .iter()
        .map(|l| {
            if loaded.len() == 1 {
                l.model.name.clone()
            } else {
                format!("{}:{}", l.name, l.model.name)
            }
        })
        .collect();
    let mut msg = format!(
        "Configuration reloaded. model={} rules={} sinks={} sources: {}",
        described.join(","),
        current.rules.len(),
        names.join(","),
        changes.describe()
    );
    if !kept.is_empty() {
        msg.push_str(&format!(
            "; not applied until a restart: {}",
            kept.join(", ")
        ));
    }
    Ok(msg)
}
