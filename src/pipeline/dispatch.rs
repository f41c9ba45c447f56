//! The dispatcher loop: one thread that turns each classified frame into events with the
//! rules (each source and region with rule state of its own) and the drift monitor's rules, feeds the live view (per source and region), and fans each event out to its sinks' bounded queues (a full
//! queue drops the event for that sink and counts it; the dispatcher never waits for a sink).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{Classified, Delivery};
use crate::collect::{Offer, Tap};
use crate::drift::{Figures, Monitor};
use crate::event::{rfc3339, Event, TopEntry};
use crate::frame::Frame;
use crate::live::Live;
use crate::metrics::{Metrics, SinkMetrics};
use crate::model::postprocess::top_k;
use crate::rules::RuleSet;

/// What the dispatcher needs of one model: how its scores read.
pub(super) struct Scored {
    /// The event's `model`: the `[models.NAME]` name, `None` for `[model]`.
    pub(super) event_name: Option<String>,
    pub(super) labels: Arc<[String]>,
    /// The rules as they apply to this model's labels.
    pub(super) rules: RuleSet,
}

/// Whose rule state: source, region (`None`: whole frames), model (an index into `models`).
type RuleKey = (Arc<str>, Option<Arc<str>>, usize);

/// What becomes an event: the rule's name (`None` without rules), the label, the score, the
/// sinks, and a drift rule's figures.
type Firing<'a> = (Option<String>, String, f32, &'a [usize], Option<Figures>);

#[allow(clippy::too_many_arguments)]
pub(super) fn dispatch_loop(
    class_rx: Receiver<Classified>,
    sink_txs: Vec<Sender<Delivery>>,
    frame_sinks: Vec<bool>,
    counters: Vec<Arc<SinkMetrics>>,
    live: Option<Arc<Live>>,
    models: Vec<Scored>,
    k: usize,
    device: String,
    several_sources: bool,
    mut drift: Monitor,
    mut collect: Option<Tap>,
    m: Arc<Metrics>,
) {
    let all_sinks: Vec<usize> = (0..sink_txs.len()).collect();
    // Each source and region goes through rules of its own (their N-of-M windows and cooldowns
    // are that region's), made from its model's `rules` (never observed) when its first frame
    // comes. Keyed by the model too: the rules' labels are that model's class indices, so state
    // built for one model must never see another's scores (a region's model is fixed within a
    // generation today; the key keeps that an assumption nothing relies on).
    let mut by_source: HashMap<RuleKey, RuleSet> = HashMap::new();
    while let Ok(mut c) = class_rx.recv() {
        let Some(model) = models.get(c.model) else {
            log::error!(
                "Classification of an unknown model dropped. model={} source={}",
                c.model,
                c.source
            );
            continue;
        };
        let (labels, rules) = (&model.labels, &model.rules);
        let frame: Option<Arc<Frame>> = c.frame.take();
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
        let mut firings: Vec<Firing> = if rules.is_empty() {
            top.first()
                .map(|t| (None, t.label.clone(), t.score, all_sinks.as_slice(), None))
                .into_iter()
                .collect()
        } else {
            let rules = by_source
                .entry((Arc::clone(&c.source), c.region.clone(), c.model))
                .or_insert_with(|| rules.scoped(&c.source, c.region.as_deref()));
            let fired = rules.observe(&c.probs, c.captured);
            fired
                .into_iter()
                .map(|f| {
                    (
                        Some(rules.names[f.rule].clone()),
                        labels.get(f.label).cloned().unwrap_or_default(),
                        f.score,
                        rules.sinks[f.rule].as_slice(),
                        None,
                    )
                })
                .collect()
        };
        if let Some(tap) = &mut collect {
            tap.offer(Offer {
                source: &c.source,
                region: c.region.as_ref(),
                rect: c.rect,
                model: c.model,
                top: &top,
                // Without rules every classification is an event: that says nothing.
                event: !rules.is_empty() && !firings.is_empty(),
                seq: c.seq,
                captured_at: c.captured_at,
                frame: frame.as_ref(),
            });
        }
        // Drift rules: their event's score is the window's mean top-1 score.
        for d in drift.observe(&c.source, c.region.as_ref(), c.model, &c.probs, c.captured) {
            let score = d.figures.mean_score.unwrap_or(0.0) as f32;
            firings.push((
                rules.names.get(d.rule).cloned(),
                d.label.to_owned(),
                score,
                rules.sinks.get(d.rule).map_or(&[][..], Vec::as_slice),
                Some(d.figures),
            ));
        }
        let captured_at = rfc3339(c.captured_at);
        if let Some(live) = &live {
            let ms = c
                .captured_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            live.classified(
                &c.source,
                c.region.as_deref(),
                c.seq,
                ms,
                &captured_at,
                &top,
                frame.clone(),
            );
        }
        for (rule, label_name, score, targets, figures) in firings {
            let latency = c.captured.elapsed();
            let captured_at = captured_at.clone();
            // Name the snapshot only when a snapshot sink will take the event (the dispatcher
            // is the only sender, so a queue with room now still has it below).
            let snapshot = (frame.is_some()
                && targets
                    .iter()
                    .any(|&i| frame_sinks[i] && !sink_txs[i].is_full()))
            .then(|| {
                let place = match (&c.region, several_sources) {
                    (Some(r), _) => format!("{}.{r}", c.source),
                    (None, true) => c.source.to_string(),
                    (None, false) => String::new(),
                };
                crate::sink::snapshot::file_name(&captured_at, c.seq, &place, &label_name)
            });
            let event = Arc::new(Event {
                device: device.clone(),
                source: c.source.to_string(),
                region: c.region.as_deref().map(str::to_owned),
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
                model: model.event_name.clone(),
                drift: figures,
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
