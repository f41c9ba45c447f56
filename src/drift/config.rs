//! `[drift]`: which sources and regions are watched for drift, the window the figures are
//! computed over and what they are compared with. Parsed and validated without I/O; the model
//! card a `reference = "card"` reads is found when the pipeline is built
//! ([`super::ModelDrift::for_model`]).

use serde::Deserialize;

use crate::problems::Problems;
use crate::rules::{RuleConfig, RuleKind};

/// `[drift]`: the per source and region drift figures (see docs/drift.md). The table's
/// presence turns the figures on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// Set false to keep the table but compute nothing. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The recent window: how many of the latest classifications of a source (or region) the
    /// label distribution and the mean top-1 score are taken over. Default 200.
    #[serde(default = "default_window")]
    pub window: usize,
    /// What the window is compared with: `"frames"`, the first `reference_frames`
    /// classifications after the daemon starts (or reloads); `"card"`, the label counts of the
    /// model card beside the model (`NAME.card.json`, written by `lookout train`), falling
    /// back to `"frames"` for a model without a card. Default "frames".
    #[serde(default)]
    pub reference: Reference,
    /// How many classifications make the `"frames"` reference. Default 500.
    #[serde(default = "default_reference_frames")]
    pub reference_frames: usize,
    /// Names of the sources (`[[sources]]` `name`) watched. Default: all.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// Names of the regions watched; with `regions`, whole frames are not. Default: all
    /// regions and whole frames.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
}

/// `[drift] reference`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reference {
    /// The first `reference_frames` classifications.
    #[default]
    Frames,
    /// The training card's label counts (train + validation images per label).
    Card,
}

impl Reference {
    pub fn as_str(self) -> &'static str {
        match self {
            Reference::Frames => "frames",
            Reference::Card => "card",
        }
    }
}

fn yes() -> bool {
    true
}
fn default_window() -> usize {
    200
}
fn default_reference_frames() -> usize {
    500
}

impl Default for DriftConfig {
    fn default() -> DriftConfig {
        DriftConfig {
            enabled: true,
            window: default_window(),
            reference: Reference::default(),
            reference_frames: default_reference_frames(),
            sources: None,
            regions: None,
        }
    }
}

impl DriftConfig {
    /// Whether the frames of `source` (its `region`; `None`: whole frames) are watched.
    pub fn watches(&self, source: &str, region: Option<&str>) -> bool {
        self.enabled && crate::rules::in_scope(&self.sources, &self.regions, source, region)
    }
}

/// Checks `[drift]` (`sources`: each source's name and region names) and that the drift rules
/// have figures to watch.
pub fn validate(
    drift: Option<&DriftConfig>,
    rules: &[RuleConfig],
    sources: &[(String, Vec<String>)],
    p: &mut Problems,
) {
    if let Some(d) = drift {
        p.range("drift.window", d.window, 2, 100_000);
        p.range("drift.reference_frames", d.reference_frames, 2, 10_000_000);
        for (field, list) in [("sources", &d.sources), ("regions", &d.regions)] {
            if list.as_ref().is_some_and(|l| l.is_empty()) {
                p.push(
                    format!("drift.{field}"),
                    format!("is empty, so nothing would be watched; leave `{field}` out for all"),
                );
            }
        }
        crate::rules::validate_scope("drift", &d.sources, &d.regions, sources, p);
    }
    let on = drift.is_some_and(|d| d.enabled);
    for (i, rule) in rules.iter().enumerate() {
        if rule.kind == RuleKind::Drift && !on {
            p.push(
                format!("rules[{i}].kind"),
                if drift.is_some() {
                    "a drift rule watches the drift figures, which `[drift] enabled = false` turns off; set it true or remove the rule"
                } else {
                    "a drift rule watches the drift figures: add a `[drift]` table (see docs/drift.md)"
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(drift: Option<&str>, rule: Option<&str>) -> Vec<String> {
        let d: Option<DriftConfig> = drift.map(|t| toml::from_str(t).expect("parses"));
        let rules: Vec<RuleConfig> = rule
            .map(|t| toml::from_str(t).expect("parses"))
            .into_iter()
            .collect();
        let sources = vec![
            ("cam".to_owned(), vec![]),
            ("lanes".to_owned(), vec!["left".to_owned()]),
        ];
        let mut p = Problems::default();
        validate(d.as_ref(), &rules, &sources, &mut p);
        p.0.iter()
            .map(|x| format!("{}: {}", x.key, x.message))
            .collect()
    }

    #[test]
    fn drift_table_problems_name_the_key() {
        let drift_rule = "name = \"d\"\nkind = \"drift\"\nmax_psi = 0.25";
        // (the [drift] table, a rule, an expected fragment; None = valid)
        let cases: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
            (Some(""), None, None),
            (Some("window = 50\nreference = \"card\""), Some(drift_rule), None),
            (Some("window = 1"), None, Some("drift.window: expected a value from 2")),
            (Some("sources = [\"belt\"]"), None, Some("drift.sources: no source named \"belt\"")),
            (Some("regions = []"), None, Some("drift.regions: is empty")),
            (None, Some(drift_rule), Some("rules[0].kind: a drift rule watches the drift figures: add a `[drift]` table")),
            (Some("enabled = false"), Some(drift_rule), Some("rules[0].kind: a drift rule watches the drift figures, which `[drift] enabled = false`")),
        ];
        for (drift, rule, want) in cases {
            let got = problems(*drift, *rule);
            match want {
                None => assert!(got.is_empty(), "{drift:?}: {got:?}"),
                Some(w) => assert!(got.iter().any(|g| g.contains(w)), "want {w:?}, got {got:?}"),
            }
        }
        let e = toml::from_str::<DriftConfig>("reference = \"hours\"").expect_err("unknown");
        assert!(
            e.to_string().contains("frames") && e.to_string().contains("card"),
            "{e}"
        );
    }

    #[test]
    fn scope_picks_sources_and_regions() {
        let d: DriftConfig =
            toml::from_str("sources = [\"lanes\"]\nregions = [\"left\"]").expect("parses");
        assert!(d.watches("lanes", Some("left")));
        assert!(!d.watches("lanes", None));
        assert!(!d.watches("cam", Some("left")));
        let all = DriftConfig::default();
        assert!(all.watches("cam", None) && all.watches("lanes", Some("left")));
        let off = DriftConfig {
            enabled: false,
            ..DriftConfig::default()
        };
        assert!(!off.watches("cam", None));
    }
}
