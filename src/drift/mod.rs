//! Drift: whether the scene a model sees still looks like the one it was judged on. Per source
//! and region (and its model), the dispatcher keeps a rolling window of the latest top-1
//! labels and scores and compares the window's label distribution with a reference (the first
//! classifications, or the training card's label counts) by the population stability index,
//! and its mean top-1 score with the reference's. The figures are published on a [`Board`]
//! (read by `/metrics` and `/api/live`) and fed to the drift rules, whose firings the
//! dispatcher turns into events. Sinks, HTTP and the page are left to their modules.
//!
//! - `stats`: PSI and the rolling window (pure).
//! - `config`: the `[drift]` table and its validation.
//! - `alarm`: `kind = "drift"` rules: persistence and cooldown.

pub mod alarm;
pub mod config;
pub mod stats;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use alarm::{DriftRule, DRIFT, LOW_CONFIDENCE};
pub use config::{DriftConfig, Reference};

use crate::rules::RuleConfig;
use alarm::AlarmState;
use stats::Window;

/// The figures of one source (or region) and model, as `/metrics`, `/api/live` and a drift
/// rule's event carry them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub source: String,
    /// Absent for whole frames.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub region: Option<String>,
    /// The model's name (`default` for `[model]`).
    pub model: String,
    /// What the window is compared with: `frames` or `card`.
    pub reference: String,
    /// Classifications (or, for `card`, training images) the reference holds so far.
    pub reference_frames: u64,
    /// Classifications in the window (up to `[drift] window`).
    pub window_frames: usize,
    /// PSI of the window's label distribution against the reference's; `null` until the
    /// reference is complete and the window full.
    pub psi: Option<f64>,
    /// Mean top-1 score of the window's classifications.
    pub mean_score: Option<f64>,
    /// Mean top-1 score of the reference classifications (`null` for a card reference, which
    /// has no scores, and until the reference is complete).
    pub reference_mean_score: Option<f64>,
    /// `reference_mean_score - mean_score` once both are known and the window is full.
    pub mean_score_drop: Option<f64>,
}

/// The latest figures of every watched source and region. The dispatcher writes (after each
/// classification, under the lock for a moment) and clears it when a generation starts; the
/// HTTP server reads. Lives in [`crate::metrics::Metrics`], so it outlives reloads.
#[derive(Debug, Default)]
pub struct Board {
    figures: Mutex<Vec<Figures>>,
}

impl Board {
    /// Replaces the entry of `f`'s source, region and model (or adds it).
    pub fn set(&self, f: &Figures) {
        let mut all = self.figures.lock().unwrap_or_else(|e| e.into_inner());
        match all
            .iter_mut()
            .find(|g| g.source == f.source && g.region == f.region && g.model == f.model)
        {
            Some(g) => g.clone_from(f),
            None => all.push(f.clone()),
        }
    }

    /// Every entry, in the order they first appeared.
    pub fn all(&self) -> Vec<Figures> {
        self.figures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clear(&self) {
        self.figures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// `[drift]` and the drift rules, shared by every model's [`ModelDrift`].
#[derive(Debug)]
pub struct Settings {
    pub config: DriftConfig,
    pub rules: Vec<DriftRule>,
}

impl Settings {
    /// `None` when `[drift]` is absent or disabled.
    pub fn new(config: Option<&DriftConfig>, rules: &[RuleConfig]) -> Option<Arc<Settings>> {
        let config = config.filter(|c| c.enabled)?.clone();
        Some(Arc::new(Settings {
            config,
            rules: DriftRule::from_configs(rules),
        }))
    }
}

/// What the monitor needs of one model: the settings and, for `reference = "card"`, the card's
/// label counts in the model's label order.
#[derive(Debug, Clone)]
pub struct ModelDrift {
    pub settings: Arc<Settings>,
    card: Option<Arc<[f64]>>,
}

impl ModelDrift {
    /// For the model loaded from `model_path` with `labels`: reads the card beside it when the
    /// reference is `card` (a missing or unreadable card falls back to the first frames, and
    /// says so in the log).
    pub fn for_model(settings: &Arc<Settings>, model_path: &Path, labels: &[String]) -> ModelDrift {
        let card = (settings.config.reference == Reference::Card)
            .then(|| {
                let path = crate::train::card::card_path(model_path);
                let read = std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        serde_json::from_str::<crate::train::card::Card>(&t)
                            .map_err(|e| e.to_string())
                    });
                match read {
                    Ok(card) => Some(card_reference(&card, labels)),
                    Err(e) => {
                        log::info!(
                            "No model card for the drift reference; using the first classifications. model={} card={} why={e}",
                            model_path.display(),
                            path.display()
                        );
                        None
                    }
                }
            })
            .flatten();
        ModelDrift {
            settings: Arc::clone(settings),
            card: card.map(Into::into),
        }
    }
}

/// A card's images per label (train + validation), in the order of `labels`; a label the card
/// does not list counts 0.
pub fn card_reference(card: &crate::train::card::Card, labels: &[String]) -> Vec<f64> {
    labels
        .iter()
        .map(|l| {
            card.counts
                .iter()
                .filter(|c| &c.label == l)
                .map(|c| (c.train + c.validation) as f64)
                .sum()
        })
        .collect()
}

/// The reference of one source or region: fixed (a card) or filling up (the first frames).
#[derive(Debug, Clone)]
struct Baseline {
    counts: Vec<f64>,
    frames: u64,
    score_sum: f64,
    /// Frames still to take (0: complete).
    wanted: u64,
    from_card: bool,
}

/// One source's (or region's) window, reference and drift rule state.
#[derive(Debug)]
struct Tracker {
    window: Window,
    baseline: Baseline,
    alarms: Vec<(usize, AlarmState)>,
    figures: Figures,
}

/// A drift rule that fired: the event's rule index, label and figures.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftFiring {
    /// Index into the `[[rules]]` list.
    pub rule: usize,
    /// [`DRIFT`] or [`LOW_CONFIDENCE`].
    pub label: &'static str,
    pub figures: Figures,
}

/// Where a tracker's classifications come from: source, region (`None`: whole frames), model.
type Place = (Arc<str>, Option<Arc<str>>, usize);

/// All trackers; owned by the dispatcher thread (one per generation: a reload starts new
/// references).
pub struct Monitor {
    /// Per model (the generation's model order): its name and drift setup, `None` when off.
    models: Vec<(Arc<str>, Option<ModelDrift>)>,
    /// Per place; `None` for a place `[drift]` does not watch.
    trackers: HashMap<Place, Option<Tracker>>,
    board: Arc<Board>,
}

impl Monitor {
    /// `models`: each model's name and drift setup, in the generation's order. Clears `board`.
    pub fn new(models: Vec<(Arc<str>, Option<ModelDrift>)>, board: Arc<Board>) -> Monitor {
        board.clear();
        Monitor {
            models,
            trackers: HashMap::new(),
            board,
        }
    }

    /// Feeds one classification of `source` (its `region`) by model `model` (an index into the
    /// models given to [`Monitor::new`]) with probabilities `probs`, captured at `at`; updates the
    /// board and returns the drift rules that fire.
    pub fn observe(
        &mut self,
        source: &Arc<str>,
        region: Option<&Arc<str>>,
        model: usize,
        probs: &[f32],
        at: Instant,
    ) -> Vec<DriftFiring> {
        let Some((name, Some(setup))) = self.models.get(model) else {
            return Vec::new();
        };
        let key = (Arc::clone(source), region.cloned(), model);
        let tracker = self.trackers.entry(key).or_insert_with(|| {
            let region = region.map(|r| &**r);
            setup
                .settings
                .config
                .watches(source, region)
                .then(|| Tracker::new(setup, source, region, name, probs.len()))
        });
        let Some(t) = tracker else {
            return Vec::new();
        };
        let Some((label, score)) = probs
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
        else {
            return Vec::new();
        };
        t.push(label, score);
        self.board.set(&t.figures);
        let full_mean = t.window.is_full().then_some(t.figures.mean_score).flatten();
        let mut fired = Vec::new();
        for (i, state) in &mut t.alarms {
            let Some(rule) = setup.settings.rules.get(*i) else {
                continue;
            };
            if let Some(label) = state.observe(rule, t.figures.psi, full_mean, at) {
                fired.push(DriftFiring {
                    rule: rule.rule,
                    label,
                    figures: t.figures.clone(),
                });
            }
        }
        fired
    }
}

impl Tracker {
    fn new(
        setup: &ModelDrift,
        source: &str,
        region: Option<&str>,
        model: &str,
        labels: usize,
    ) -> Tracker {
        let cfg = &setup.settings.config;
        let baseline = match &setup.card {
            Some(counts) => Baseline {
                counts: counts.to_vec(),
                frames: counts.iter().sum::<f64>() as u64,
                score_sum: 0.0,
                wanted: 0,
                from_card: true,
            },
            None => Baseline {
                counts: vec![0.0; labels],
                frames: 0,
                score_sum: 0.0,
                wanted: cfg.reference_frames as u64,
                from_card: false,
            },
        };
        let alarms = setup
            .settings
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.watches(source, region))
            .map(|(i, _)| (i, AlarmState::default()))
            .collect();
        Tracker {
            window: Window::new(cfg.window, labels),
            figures: Figures {
                source: source.to_owned(),
                region: region.map(str::to_owned),
                model: model.to_owned(),
                reference: if baseline.from_card {
                    Reference::Card
                } else {
                    Reference::Frames
                }
                .as_str()
                .to_owned(),
                reference_frames: baseline.frames,
                window_frames: 0,
                psi: None,
                mean_score: None,
                reference_mean_score: None,
                mean_score_drop: None,
            },
            baseline,
            alarms,
        }
    }

    /// Adds one top-1 label and score and recomputes the figures.
    fn push(&mut self, label: usize, score: f32) {
        let b = &mut self.baseline;
        if b.wanted > 0 {
            if label >= b.counts.len() {
                b.counts.resize(label + 1, 0.0);
            }
            b.counts[label] += 1.0;
            b.frames += 1;
            b.score_sum += f64::from(score);
            b.wanted -= 1;
        }
        self.window.push(label, score);
        let complete = b.wanted == 0;
        let f = &mut self.figures;
        f.reference_frames = b.frames;
        f.window_frames = self.window.len();
        f.mean_score = self.window.mean_score();
        f.reference_mean_score =
            (complete && !b.from_card && b.frames > 0).then(|| b.score_sum / b.frames as f64);
        f.psi = (complete && self.window.is_full())
            .then(|| stats::psi(&b.counts, self.window.counts()))
            .flatten();
        f.mean_score_drop = match (f.reference_mean_score, f.mean_score) {
            (Some(r), Some(m)) if self.window.is_full() => Some(r - m),
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(drift: &str, rules: &str) -> Arc<Settings> {
        let d: DriftConfig = toml::from_str(drift).expect("drift parses");
        #[derive(Deserialize)]
        struct R {
            #[serde(default)]
            rules: Vec<RuleConfig>,
        }
        let r: R = toml::from_str(rules).expect("rules parse");
        Settings::new(Some(&d), &r.rules).expect("enabled")
    }

    fn probs(label: usize, score: f32) -> Vec<f32> {
        let mut p = vec![(1.0 - score) / 2.0; 3];
        p[label] = score;
        p
    }

    #[test]
    fn reference_from_the_first_frames_then_psi_of_the_window() {
        let s = settings("window = 4\nreference_frames = 4", "");
        let board = Arc::new(Board::default());
        let mut m = Monitor::new(
            vec![(
                "default".into(),
                Some(ModelDrift::for_model(&s, Path::new("none.onnx"), &[])),
            )],
            Arc::clone(&board),
        );
        let cam: Arc<str> = "cam".into();
        let t = Instant::now();
        // Reference: labels 0, 0, 1, 1 at 0.9; PSI appears with the fourth frame (same shares).
        for l in [0, 0, 1, 1] {
            m.observe(&cam, None, 0, &probs(l, 0.9), t);
        }
        let f = board.all().remove(0);
        assert_eq!((f.reference_frames, f.window_frames), (4, 4));
        assert!(f.psi.is_some_and(|p| p.abs() < 1e-12), "{f:?}");
        assert!(f
            .reference_mean_score
            .is_some_and(|v| (v - 0.9).abs() < 1e-6));
        // Then four frames of label 2 at 0.5: the window is all label 2.
        for _ in 0..4 {
            m.observe(&cam, None, 0, &probs(2, 0.5), t);
        }
        let f = board.all().remove(0);
        // Shares: reference (0.5, 0.5, 1e-4), window (1e-4, 1e-4, 1):
        // 2 * (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 1e-4) ln(1 / 1e-4)
        let want = 2.0 * (1e-4 - 0.5) * (1e-4f64 / 0.5).ln() + (1.0 - 1e-4) * (1.0 / 1e-4f64).ln();
        assert!(
            f.psi.is_some_and(|p| (p - want).abs() < 1e-9),
            "{f:?} want {want}"
        );
        assert!(f.mean_score.is_some_and(|v| (v - 0.5).abs() < 1e-6));
        assert!(f.mean_score_drop.is_some_and(|v| (v - 0.4).abs() < 1e-6));
        assert_eq!(
            f.reference_frames, 4,
            "the reference stays the first frames"
        );
    }

    #[test]
    fn a_card_reference_is_complete_from_the_start() {
        let card: crate::train::card::Card = serde_json::from_value(serde_json::json!({
            "model": "m.onnx", "backbone": "b.onnx", "backbone_sha256": "", "features": "f",
            "features_found_by": "", "feature_dim": 1, "date": "", "labels": ["b", "a"],
            "counts": [{"label": "b", "train": 30, "validation": 10}, {"label": "a", "train": 8, "validation": 2}],
            "skipped": [], "preprocess": "", "flip": false, "seed": 0, "validation_fraction": 0.2,
            "trials": [], "c": 1.0, "validation_accuracy": 1.0, "per_label": [], "confusion": [],
            "embed_seconds": 0.0, "train_seconds": 0.0, "cached_embeddings": 0
        }))
        .expect("card");
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(card_reference(&card, &labels), vec![10.0, 40.0, 0.0]);

        let dir = std::env::temp_dir().join(format!("lookout-drift-card-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let model = dir.join("new.onnx");
        std::fs::write(
            crate::train::card::card_path(&model),
            serde_json::to_string(&card).expect("json"),
        )
        .expect("write card");
        let s = settings("window = 2\nreference = \"card\"", "");
        let board = Arc::new(Board::default());
        let mut m = Monitor::new(
            vec![(
                "new".into(),
                Some(ModelDrift::for_model(&s, &model, &labels)),
            )],
            Arc::clone(&board),
        );
        let cam: Arc<str> = "cam".into();
        for l in [0, 1] {
            m.observe(&cam, None, 0, &probs(l, 0.8), Instant::now());
        }
        let f = board.all().remove(0);
        assert_eq!((f.reference.as_str(), f.reference_frames), ("card", 50));
        // Reference (0.2, 0.8, 1e-4), window (0.5, 0.5, 1e-4).
        let want = 0.3 * (0.5f64 / 0.2).ln() + (-0.3) * (0.5f64 / 0.8).ln();
        assert!(
            f.psi.is_some_and(|p| (p - want).abs() < 1e-9),
            "{f:?} want {want}"
        );
        assert_eq!(f.reference_mean_score, None);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn drift_rules_fire_for_the_places_they_watch() {
        let s = settings(
            "window = 2\nreference_frames = 2",
            "[[rules]]\nname = \"l\"\nlabels = [\"x\"]\n[[rules]]\nname = \"d\"\nkind = \"drift\"\nmax_psi = 0.25\ncooldown_secs = 60\nsources = [\"cam\"]",
        );
        let mut m = Monitor::new(
            vec![(
                "default".into(),
                Some(ModelDrift::for_model(&s, Path::new("x.onnx"), &[])),
            )],
            Arc::default(),
        );
        let (cam, other): (Arc<str>, Arc<str>) = ("cam".into(), "other".into());
        let t = Instant::now();
        let mut fired = Vec::new();
        for l in [0, 0, 1, 1] {
            for src in [&cam, &other] {
                fired.extend(
                    m.observe(src, None, 0, &probs(l, 0.9), t)
                        .into_iter()
                        .map(|f| (f.rule, f.label, f.figures.source)),
                );
            }
        }
        assert_eq!(fired, vec![(1, DRIFT, "cam".to_owned())]);
    }
}
