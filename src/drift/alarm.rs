//! Drift rules (`[[rules]] kind = "drift"`): when a source's or region's figures pass
//! `max_psi` or `min_mean_score` for `frames` consecutive classifications and `for_secs` of
//! capture time, and the rule is not cooling down, it fires. Firing clears the persistence, so
//! the next event needs the condition to hold afresh (and the cooldown to pass). State is per
//! rule, per source and region, on the dispatcher thread; pure apart from it, table-tested here.

use std::time::{Duration, Instant};

use crate::rules::{RuleConfig, RuleKind};

/// What a drift rule's event reports in `label`.
pub const DRIFT: &str = "drift";
pub const LOW_CONFIDENCE: &str = "low_confidence";

/// A drift rule's thresholds and scope, from its `[[rules]]` entry.
#[derive(Debug, Clone)]
pub struct DriftRule {
    /// Index into the `[[rules]]` list (and so into a [`crate::rules::RuleSet`]'s names and sinks).
    pub rule: usize,
    max_psi: Option<f64>,
    min_mean_score: Option<f64>,
    frames: usize,
    for_secs: Duration,
    cooldown: Duration,
    sources: Option<Vec<String>>,
    regions: Option<Vec<String>>,
}

impl DriftRule {
    /// The drift rules of a `[[rules]]` list (label rules are left out).
    pub fn from_configs(rules: &[RuleConfig]) -> Vec<DriftRule> {
        rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == RuleKind::Drift)
            .map(|(i, r)| DriftRule {
                rule: i,
                max_psi: r.max_psi,
                min_mean_score: r.min_mean_score.map(f64::from),
                frames: r.frames.max(1),
                for_secs: Duration::from_secs_f64(r.for_secs.max(0.0)),
                cooldown: Duration::from_secs_f64(r.cooldown_secs.max(0.0)),
                sources: r.sources.clone(),
                regions: r.regions.clone(),
            })
            .collect()
    }

    /// Whether it watches `source` (its `region`; `None`: whole frames).
    pub fn watches(&self, source: &str, region: Option<&str>) -> bool {
        crate::rules::in_scope(&self.sources, &self.regions, source, region)
    }

    /// Which condition holds for these figures, if any: drift first. `psi` is `None` until the
    /// reference is complete and the window full; `mean` is only judged over a full window.
    fn condition(&self, psi: Option<f64>, mean: Option<f64>) -> Option<&'static str> {
        if let (Some(max), Some(psi)) = (self.max_psi, psi) {
            if psi > max {
                return Some(DRIFT);
            }
        }
        if let (Some(min), Some(mean)) = (self.min_mean_score, mean) {
            if mean < min {
                return Some(LOW_CONFIDENCE);
            }
        }
        None
    }
}

/// One drift rule's persistence and cooldown for one source or region.
#[derive(Debug, Clone, Default)]
pub struct AlarmState {
    /// Consecutive classifications the condition held, and since when.
    streak: usize,
    since: Option<Instant>,
    last_fired: Option<Instant>,
}

impl AlarmState {
    /// Feeds one classification's figures (captured at `at`); returns the label of the event
    /// when the rule fires.
    pub fn observe(
        &mut self,
        rule: &DriftRule,
        psi: Option<f64>,
        full_window_mean: Option<f64>,
        at: Instant,
    ) -> Option<&'static str> {
        let Some(what) = rule.condition(psi, full_window_mean) else {
            self.streak = 0;
            self.since = None;
            return None;
        };
        self.streak += 1;
        let since = *self.since.get_or_insert(at);
        let held =
            self.streak >= rule.frames && at.saturating_duration_since(since) >= rule.for_secs;
        let cooling = self
            .last_fired
            .is_some_and(|t| at.saturating_duration_since(t) < rule.cooldown);
        if held && !cooling {
            self.streak = 0;
            self.since = None;
            self.last_fired = Some(at);
            return Some(what);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> DriftRule {
        let cfg: RuleConfig =
            toml::from_str(&format!("name = \"d\"\nkind = \"drift\"\n{text}")).expect("parses");
        DriftRule::from_configs(&[cfg]).remove(0)
    }

    /// Feeds figures 1 s apart: `D` = PSI 0.5 and mean 0.9, `L` = PSI 0.01 and mean 0.3,
    /// `.` = PSI 0.01 and mean 0.9, `?` = no figures yet. Returns `d`/`l` where it fired.
    fn run(rule: &DriftRule, input: &str) -> String {
        let t0 = Instant::now();
        let mut s = AlarmState::default();
        input
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let (psi, mean) = match c {
                    'D' => (Some(0.5), Some(0.9)),
                    'L' => (Some(0.01), Some(0.3)),
                    '?' => (None, None),
                    _ => (Some(0.01), Some(0.9)),
                };
                match s.observe(rule, psi, mean, t0 + Duration::from_secs(i as u64)) {
                    Some(DRIFT) => 'd',
                    Some(_) => 'l',
                    None => '_',
                }
            })
            .collect()
    }

    #[test]
    fn persistence_and_cooldown_table() {
        let cases = [
            // (rule keys, input, expected firings)
            ("max_psi = 0.25", "?.D.D", "__d_d"),
            ("max_psi = 0.25\nframes = 3", "DD.DDDDDD", "_____d__d"),
            ("max_psi = 0.25\nfor_secs = 2", "DDDDDD", "__d__d"),
            ("max_psi = 0.25\ncooldown_secs = 3", "DDDDDD", "d__d__"),
            ("min_mean_score = 0.5", "LL.D", "ll__"),
            ("max_psi = 0.25\nmin_mean_score = 0.5", "DLD", "dld"),
            ("max_psi = 0.25\nframes = 2", "DLDD", "___d"),
        ];
        for (keys, input, want) in cases {
            assert_eq!(run(&rule(keys), input), want, "{keys:?} on {input}");
        }
    }

    #[test]
    fn only_drift_rules_are_taken_and_keep_their_index() {
        let label: RuleConfig = toml::from_str("name = \"l\"\nlabels = [\"x\"]").expect("parses");
        let drift: RuleConfig =
            toml::from_str("name = \"d\"\nkind = \"drift\"\nmax_psi = 0.2\nregions = [\"left\"]")
                .expect("parses");
        let rules = DriftRule::from_configs(&[label, drift]);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].rule, 1);
        assert!(rules[0].watches("lanes", Some("left")) && !rules[0].watches("lanes", None));
    }
}
