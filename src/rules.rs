//! Rules: per-class thresholds, N-of-M frames and cooldown, turning scores into events.
//!
//! A frame is a *hit* for a rule when any of the rule's labels scores at least `min_score`. The
//! rule fires when at least `frames` of the last `window` frames were hits and it is not cooling
//! down; firing clears the window (so the next event needs `frames` fresh hits) and starts the
//! cooldown, measured on capture time. State is per rule and lives on the dispatcher thread;
//! [`RuleSet::observe`] is pure apart from that state, so it is table-tested here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::problems::Problems;

/// `[[rules]]`: when a classification becomes an event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name, unique, carried in events (`rule`).
    pub name: String,
    /// `"label"`: the rule fires on its labels' scores (the default). `"drift"`: it fires when
    /// the `[drift]` figures of a source or region pass `max_psi` or `min_mean_score`
    /// (see docs/drift.md); it has no `labels`.
    #[serde(default)]
    pub kind: RuleKind,
    /// Labels that trigger the rule (any of them). Must exist in the model's labels. Required
    /// for a label rule; a drift rule has none.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Probability a label needs for the frame to count as a hit, 0..1. Default 0.5.
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// N: hits needed within the window. Default 1.
    #[serde(default = "one")]
    pub frames: usize,
    /// M: the window, in consecutive classified frames. Default: `frames`.
    #[serde(default)]
    pub window: Option<usize>,
    /// Seconds after firing during which the rule stays quiet. Default 0.
    #[serde(default)]
    pub cooldown_secs: f64,
    /// Names of the sinks that receive this rule's events. Default: all sinks.
    #[serde(default)]
    pub sinks: Option<Vec<String>>,
    /// Names of the sources (`[[sources]]` `name`) whose frames the rule watches. Default: all.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// Names of the regions (`[[sources.regions]]`, grid tiles) the rule watches; a rule with
    /// `regions` ignores whole frames. Default: all regions and whole frames.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    /// Drift rules: fire when the label distribution's PSI against the reference exceeds this.
    #[serde(default)]
    pub max_psi: Option<f64>,
    /// Drift rules: fire when the window's mean top-1 score falls below this, 0..1.
    #[serde(default)]
    pub min_mean_score: Option<f32>,
    /// Drift rules: seconds (capture time) the condition must hold, besides `frames`
    /// consecutive classifications, before the rule fires. Default 0.
    #[serde(default)]
    pub for_secs: f64,
}

/// `[[rules]] kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Scores of the rule's labels.
    #[default]
    Label,
    /// The drift figures ([`crate::drift`]).
    Drift,
}

/// Whether a `sources`/`regions` filter lets through the frames of `source` (its `region`,
/// `None` for whole frames): a filter with `regions` ignores whole frames.
pub fn in_scope(
    sources: &Option<Vec<String>>,
    regions: &Option<Vec<String>>,
    source: &str,
    region: Option<&str>,
) -> bool {
    let source_ok = sources
        .as_ref()
        .is_none_or(|l| l.iter().any(|s| s == source));
    let region_ok = match (regions, region) {
        (None, _) => true,
        (Some(l), Some(region)) => l.iter().any(|x| x == region),
        (Some(_), None) => false,
    };
    source_ok && region_ok
}

/// Checks a `sources`/`regions` filter under `key` against the configured sources: `sources`
/// lists each source's name and its region names, in config order.
pub fn validate_scope(
    key: &str,
    filter_sources: &Option<Vec<String>>,
    filter_regions: &Option<Vec<String>>,
    sources: &[(String, Vec<String>)],
    p: &mut Problems,
) {
    let known: Vec<&str> = sources.iter().map(|(n, _)| n.as_str()).collect();
    for s in filter_sources.iter().flatten() {
        if !known.contains(&s.as_str()) {
            p.push(
                format!("{key}.sources"),
                format!(
                    "no source named {s:?}; configured sources: {}",
                    known.join(", ")
                ),
            );
        }
    }
    let watched = |name: &str| {
        filter_sources
            .as_ref()
            .is_none_or(|l| l.iter().any(|s| s == name))
    };
    let regions: Vec<&str> = sources
        .iter()
        .filter(|(n, _)| watched(n))
        .flat_map(|(_, r)| r.iter().map(String::as_str))
        .collect();
    for r in filter_regions.iter().flatten() {
        if !regions.contains(&r.as_str()) {
            p.push(
                format!("{key}.regions"),
                format!(
                    "no region named {r:?} in the sources this rule watches; their regions: {}",
                    if regions.is_empty() {
                        "none".to_owned()
                    } else {
                        regions.join(", ")
                    }
                ),
            );
        }
    }
}

fn default_min_score() -> f32 {
    0.5
}
fn one() -> usize {
    1
}

impl RuleConfig {
    pub fn window(&self) -> usize {
        self.window.unwrap_or(self.frames)
    }

    /// Checks `sources` and `regions` against the configured sources: `sources` lists each
    /// source's name and its region names, in config order.
    pub fn validate_scope(&self, key: &str, sources: &[(String, Vec<String>)], p: &mut Problems) {
        validate_scope(key, &self.sources, &self.regions, sources, p);
    }

    /// The keys of a `kind = "drift"` rule.
    fn validate_drift(&self, key: &str, p: &mut Problems) {
        if !self.labels.is_empty() {
            p.push(
                format!("{key}.labels"),
                "a drift rule watches the drift figures, not labels; remove `labels`",
            );
        }
        if self.window.is_some() {
            p.push(
                format!("{key}.window"),
                "a drift rule has no window of its own (`[drift] window` sets the figures'); use `frames` and `for_secs` for persistence",
            );
        }
        if self.max_psi.is_none() && self.min_mean_score.is_none() {
            p.push(
                key.to_owned(),
                "a drift rule needs `max_psi` (e.g. 0.25) or `min_mean_score` (e.g. 0.6), or both",
            );
        }
        if let Some(v) = self.max_psi {
            p.range(&format!("{key}.max_psi"), v, 0.0, 1000.0);
        }
        if let Some(v) = self.min_mean_score {
            p.range(&format!("{key}.min_mean_score"), v, 0.0, 1.0);
        }
        p.range(&format!("{key}.for_secs"), self.for_secs, 0.0, 31_536_000.0);
    }

    pub fn validate(&self, key: &str, sink_names: &[String], p: &mut Problems) {
        if self.name.trim().is_empty() {
            p.push(format!("{key}.name"), "must not be empty");
        }
        match self.kind {
            RuleKind::Label => {
                if self.labels.is_empty() {
                    p.push(
                        format!("{key}.labels"),
                        "list at least one label, e.g. labels = [\"scratch\"] (or set kind = \"drift\")",
                    );
                }
                for (field, set) in [
                    ("max_psi", self.max_psi.is_some()),
                    ("min_mean_score", self.min_mean_score.is_some()),
                    ("for_secs", self.for_secs != 0.0),
                ] {
                    if set {
                        p.push(
                            format!("{key}.{field}"),
                            "is a drift rule's key; add kind = \"drift\" (and remove `labels`) or remove it",
                        );
                    }
                }
            }
            RuleKind::Drift => self.validate_drift(key, p),
        }
        p.range(&format!("{key}.min_score"), self.min_score, 0.0, 1.0);
        p.range(&format!("{key}.frames"), self.frames, 1, 10_000);
        if self.window() < self.frames {
            p.push(
                format!("{key}.window"),
                format!(
                    "must be at least frames ({}), got {}",
                    self.frames,
                    self.window()
                ),
            );
        }
        p.range(&format!("{key}.window"), self.window(), 1, 10_000);
        p.range(
            &format!("{key}.cooldown_secs"),
            self.cooldown_secs,
            0.0,
            31_536_000.0,
        );
        for (field, list) in [("sources", &self.sources), ("regions", &self.regions)] {
            if list.as_ref().is_some_and(|l| l.is_empty()) {
                p.push(
                    format!("{key}.{field}"),
                    format!("is empty, so the rule would never fire; leave `{field}` out for all"),
                );
            }
        }
        if let Some(sinks) = &self.sinks {
            for s in sinks {
                if !sink_names.contains(s) {
                    p.push(
                        format!("{key}.sinks"),
                        format!(
                            "no sink named {s:?}; configured sinks: {}",
                            sink_names.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

/// A rule that fired on a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    /// Index into the rule list.
    pub rule: usize,
    /// The best-scoring of the rule's labels on this frame.
    pub label: usize,
    pub score: f32,
}

/// A rule with its labels resolved to class indices, and its state.
#[derive(Debug, Clone)]
struct Rule {
    /// Where the rule applies (`None`: everywhere); see [`RuleSet::scoped`].
    sources: Option<Vec<String>>,
    regions: Option<Vec<String>>,
    /// False in a [`RuleSet::scoped`] copy for a source or region the rule does not watch.
    active: bool,
    /// False when none of the rule's labels is a label of the model this set was built for
    /// ([`RuleSet::build_for_model`]): the rule never fires on that model's scores.
    fits: bool,
    labels: Vec<usize>,
    min_score: f32,
    frames: usize,
    window: usize,
    cooldown: Duration,
    history: VecDeque<bool>,
    last_fired: Option<Instant>,
}

/// All rules and their state. Owned by the dispatcher thread, which keeps one per source (a
/// clone of the unused set has fresh state).
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    pub names: Vec<String>,
    /// For each rule, the indices of its sinks (into the sink list).
    pub sinks: Vec<Vec<usize>>,
}

/// A rule names a label the model does not have (a startup error).
#[derive(Debug, thiserror::Error)]
#[error("{key}: rule {rule:?} uses label {label:?}, which {missing_from}; {known}")]
pub struct UnknownLabel {
    /// Where in the file: `rules[<i>].labels`.
    pub key: String,
    pub rule: String,
    pub label: String,
    /// Which models lack it: "the model does not have", or which of the models of the sources
    /// and regions the rule watches.
    pub missing_from: String,
    /// The labels there are: "its labels are: ...".
    pub known: String,
}

impl RuleSet {
    /// Resolves labels and sink names. `labels`: the model's labels; `sinks`: sink names in order.
    pub fn build(
        configs: &[RuleConfig],
        labels: &[String],
        sinks: &[String],
    ) -> Result<RuleSet, UnknownLabel> {
        RuleSet::resolve(configs, labels, sinks, true)
    }

    /// The rules as they apply to the scores of one of several models (`labels`: its labels):
    /// a rule's labels that this model lacks are left out, and a rule with none left never
    /// fires here. Checking that each label is in some model is [`crate::models::check_rules`]'s
    /// job.
    pub fn build_for_model(configs: &[RuleConfig], labels: &[String], sinks: &[String]) -> RuleSet {
        match RuleSet::resolve(configs, labels, sinks, false) {
            Ok(set) => set,
            Err(_) => unreachable!("a lenient build refuses no label"),
        }
    }

    fn resolve(
        configs: &[RuleConfig],
        labels: &[String],
        sinks: &[String],
        strict: bool,
    ) -> Result<RuleSet, UnknownLabel> {
        let mut rules = Vec::new();
        let mut sink_idx = Vec::new();
        for (n, cfg) in configs.iter().enumerate() {
            let mut idx = Vec::new();
            for l in &cfg.labels {
                match labels.iter().position(|m| m == l) {
                    Some(i) => idx.push(i),
                    None if !strict => {}
                    None => {
                        let mut known: Vec<&str> =
                            labels.iter().take(20).map(String::as_str).collect();
                        if labels.len() > 20 {
                            known.push("...");
                        }
                        return Err(UnknownLabel {
                            key: format!("rules[{n}].labels"),
                            rule: cfg.name.clone(),
                            label: l.clone(),
                            missing_from: "the model does not have".into(),
                            known: format!("its labels are: {}", known.join(", ")),
                        });
                    }
                }
            }
            rules.push(Rule {
                sources: cfg.sources.clone(),
                regions: cfg.regions.clone(),
                active: !idx.is_empty(),
                fits: !idx.is_empty(),
                labels: idx,
                min_score: cfg.min_score,
                frames: cfg.frames,
                window: cfg.window(),
                cooldown: Duration::from_secs_f64(cfg.cooldown_secs),
                history: VecDeque::with_capacity(cfg.window()),
                last_fired: None,
            });
            sink_idx.push(match &cfg.sinks {
                None => (0..sinks.len()).collect(),
                Some(names) => names
                    .iter()
                    .filter_map(|n| sinks.iter().position(|s| s == n))
                    .collect(),
            });
        }
        Ok(RuleSet {
            rules,
            names: configs.iter().map(|c| c.name.clone()).collect(),
            sinks: sink_idx,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// A copy with fresh state for the frames of `source` (its `region`, `None` for whole
    /// frames): the rules that do not watch them never fire in it.
    pub fn scoped(&self, source: &str, region: Option<&str>) -> RuleSet {
        let mut set = self.clone();
        for r in &mut set.rules {
            r.history.clear();
            r.last_fired = None;
            r.active = r.fits && in_scope(&r.sources, &r.regions, source, region);
        }
        set
    }

    /// Feeds one frame's probabilities, captured at `at`; returns the rules that fire.
    pub fn observe(&mut self, probs: &[f32], at: Instant) -> Vec<Firing> {
        let mut fired = Vec::new();
        for (i, rule) in self.rules.iter_mut().enumerate() {
            if !rule.active {
                continue;
            }
            let best = rule
                .labels
                .iter()
                .map(|&l| (l, probs.get(l).copied().unwrap_or(0.0)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let Some((label, score)) = best else { continue };
            let hit = score >= rule.min_score;
            if rule.history.len() == rule.window {
                rule.history.pop_front();
            }
            rule.history.push_back(hit);
            let hits = rule.history.iter().filter(|&&h| h).count();
            let cooling = rule
                .last_fired
                .is_some_and(|t| at.saturating_duration_since(t) < rule.cooldown);
            if hit && hits >= rule.frames && !cooling {
                rule.history.clear();
                rule.last_fired = Some(at);
                fired.push(Firing {
                    rule: i,
                    label,
                    score,
                });
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(frames: usize, window: usize, cooldown_secs: f64) -> RuleConfig {
        RuleConfig {
            name: "defect".into(),
            kind: RuleKind::Label,
            labels: vec!["scratch".into(), "dent".into()],
            min_score: 0.6,
            frames,
            window: Some(window),
            cooldown_secs,
            sinks: None,
            sources: None,
            regions: None,
            max_psi: None,
            min_mean_score: None,
            for_secs: 0.0,
        }
    }

    #[test]
    fn a_scoped_rule_fires_only_for_its_sources_and_regions() {
        let mut scoped = rule(1, 1, 0.0);
        scoped.sources = Some(vec!["lanes".into()]);
        scoped.regions = Some(vec!["left".into()]);
        let set = RuleSet::build(&[scoped, rule(1, 1, 0.0)], &labels(), &[]).expect("valid");
        let hit = [0.1, 0.9, 0.0];
        let at = Instant::now();
        // (source, region, rules that fire)
        let cases: &[(&str, Option<&str>, &[usize])] = &[
            ("lanes", Some("left"), &[0, 1]),
            ("lanes", Some("right"), &[1]),
            ("lanes", None, &[1]),
            ("other", Some("left"), &[1]),
        ];
        for (source, region, want) in cases {
            let fired: Vec<usize> = set
                .scoped(source, *region)
                .observe(&hit, at)
                .into_iter()
                .map(|f| f.rule)
                .collect();
            assert_eq!(&fired, want, "{source} {region:?}");
        }
    }

    #[test]
    fn scope_names_are_checked_against_the_sources() {
        let sources = vec![
            (
                "lanes".to_owned(),
                vec!["left".to_owned(), "right".to_owned()],
            ),
            ("cam".to_owned(), vec![]),
        ];
        // (sources, regions, expected fragment; None = valid)
        type Case<'a> = (
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (None, Some(&["left"]), None),
            (Some(&["cam"]), None, None),
            (Some(&["lanes"]), Some(&["right"]), None),
            (Some(&["belt"]), None, Some("r.sources: no source named \"belt\"; configured sources: lanes, cam")),
            (Some(&["cam"]), Some(&["left"]), Some("r.regions: no region named \"left\" in the sources this rule watches; their regions: none")),
            (None, Some(&[]), Some("r.regions: is empty")),
        ];
        for (src, reg, want) in cases {
            let mut r = rule(1, 1, 0.0);
            let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            r.sources = src.map(own);
            r.regions = reg.map(own);
            let mut p = Problems::default();
            r.validate("r", &[], &mut p);
            r.validate_scope("r", &sources, &mut p);
            let got: Vec<String> =
                p.0.iter()
                    .map(|x| format!("{}: {}", x.key, x.message))
                    .collect();
            match want {
                None => assert!(got.is_empty(), "{src:?} {reg:?}: {got:?}"),
                Some(w) => assert!(got.iter().any(|g| g.contains(w)), "want {w:?}, got {got:?}"),
            }
        }
    }

    fn labels() -> Vec<String> {
        ["ok", "scratch", "dent"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Feeds frames 100 ms apart; `h` = a scratch hit (0.9), `d` = a dent hit, `.` = ok.
    fn run(cfg: RuleConfig, frames: &str) -> String {
        let mut set = RuleSet::build(&[cfg], &labels(), &["log".into()]).expect("labels exist");
        let t0 = Instant::now();
        frames
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let probs = match c {
                    'h' => [0.05, 0.9, 0.05],
                    'd' => [0.1, 0.2, 0.7],
                    _ => [0.9, 0.05, 0.05],
                };
                let fired = set.observe(&probs, t0 + Duration::from_millis(100 * i as u64));
                match fired.first() {
                    Some(f) if f.label == 1 => 'S',
                    Some(_) => 'D',
                    None => '_',
                }
            })
            .collect()
    }

    #[test]
    fn n_of_m_and_cooldown_table() {
        let cases = [
            // (frames, window, cooldown s, input, expected firings)
            (1, 1, 0.0, "h.hd", "S_SD"),
            (2, 3, 0.0, "h.h..hh", "__S___S"),
            (3, 3, 0.0, "hhhhhh", "__S__S"),
            (3, 5, 0.0, "h.h.h", "____S"),
            (3, 5, 0.0, "h..h..h", "_______"),
            (1, 1, 0.25, "hhhhhh", "S__S__"),
            (2, 2, 10.0, "hhhhhh", "_S____"),
            (1, 1, 0.0, "ddd", "DDD"),
        ];
        for (n, m, cool, input, want) in cases {
            assert_eq!(
                run(rule(n, m, cool), input),
                want,
                "N={n} M={m} cooldown={cool} input={input}"
            );
        }
    }

    #[test]
    fn below_threshold_is_not_a_hit() {
        let mut cfg = rule(1, 1, 0.0);
        cfg.min_score = 0.95;
        assert_eq!(run(cfg, "hhh"), "___");
    }

    #[test]
    fn unknown_label_is_an_error_naming_it() {
        let mut cfg = rule(1, 1, 0.0);
        cfg.labels = vec!["crack".into()];
        let e = RuleSet::build(&[cfg], &labels(), &[]).expect_err("unknown label");
        assert!(
            e.to_string().contains("\"crack\"") && e.to_string().contains("scratch"),
            "{e}"
        );
    }

    #[test]
    fn for_one_of_several_models_a_rule_keeps_the_labels_it_has() {
        let mut scratch = rule(1, 1, 0.0);
        scratch.labels = vec!["scratch".into(), "blight".into()];
        let mut blight = rule(1, 1, 0.0);
        blight.labels = vec!["blight".into()];
        let set = RuleSet::build_for_model(&[scratch, blight], &labels(), &[]);
        let fired = set
            .scoped("any", None)
            .observe(&[0.0, 0.9, 0.1], Instant::now());
        assert_eq!(
            fired,
            [Firing {
                rule: 0,
                label: 1,
                score: 0.9
            }],
            "the rule without a label of this model never fires"
        );
        let e = RuleSet::build(&[rule(1, 1, 0.0)], &["x".to_owned()], &[]).expect_err("strict");
        assert!(
            e.to_string()
                .starts_with("rules[0].labels: rule \"defect\""),
            "{e}"
        );
    }

    #[test]
    fn rule_sinks_resolve_to_indices() {
        let mut cfg = rule(1, 1, 0.0);
        cfg.sinks = Some(vec!["jsonl".into()]);
        let set = RuleSet::build(
            &[cfg, rule(1, 1, 0.0)],
            &labels(),
            &["log".into(), "jsonl".into()],
        )
        .expect("ok");
        assert_eq!(set.sinks, vec![vec![1], vec![0, 1]]);
    }
}
