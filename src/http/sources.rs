//! `/api/live` with every source: each source's latest frame, regions and top-k from the live
//! view, and its health from the same report `/healthz` answers with (plus the source's
//! counters for the states the report leaves out: ended, starting), and its drift figures.

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use super::State;
use crate::health::{source_down, Report};
use crate::live::{Latest, SourceView};
use crate::metrics::now_ms;

/// A source's health as the live view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Health {
    /// Delivering frames.
    Up,
    /// Named down by the health report (being reopened, or silent for 10 s): `/healthz`
    /// says `degraded` while other sources deliver.
    Down,
    /// Its input ended (a finite `files` or `synthetic` source).
    Ended,
    /// No frame delivered yet.
    Starting,
}

#[derive(Debug, Serialize)]
pub(super) struct SourceState {
    #[serde(flatten)]
    view: SourceView,
    health: Health,
    /// Why the source is down (absent while it is not).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The drift figures of its whole frames and regions (empty without `[drift]`).
    drift: Vec<crate::drift::Figures>,
}

/// What `/api/live` answers: the first source's latest frame at the top level (the
/// one-source shape), and every source.
#[derive(Debug, Serialize)]
pub(super) struct LiveState {
    #[serde(flatten)]
    latest: Option<Latest>,
    sources: Vec<SourceState>,
}

pub(super) fn live(state: &State) -> LiveState {
    let report: Report = state
        .health
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let metrics = state.metrics.sources();
    let drift = state.metrics.drift.all();
    let now = now_ms();
    let sources = state
        .live
        .sources()
        .into_iter()
        .map(|view| {
            let m = metrics.iter().find(|m| *m.name == *view.name);
            let (health, reason) = if report.down.iter().any(|d| *d == *view.name) {
                let why = m.and_then(|m| source_down(m, now));
                (
                    Health::Down,
                    Some(why.unwrap_or_else(|| {
                        format!("source {} was down at the last health check", view.name)
                    })),
                )
            } else if m.is_some_and(|m| m.ended.load(Relaxed) == 1) {
                (Health::Ended, None)
            } else if m.is_none_or(|m| m.captured.load(Relaxed) == 0) && view.latest.is_none() {
                (Health::Starting, None)
            } else {
                (Health::Up, None)
            };
            SourceState {
                drift: drift
                    .iter()
                    .filter(|f| *f.source == *view.name)
                    .cloned()
                    .collect(),
                view,
                health,
                reason,
            }
        })
        .collect();
    LiveState {
        latest: state.live.latest(),
        sources,
    }
}
