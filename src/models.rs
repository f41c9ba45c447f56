//! The models of a configuration: `[model]` (named "default") and the `[models.NAME]` tables,
//! which sources and regions use each, and loading each model in use once.
//!
//! A `[[sources]]` entry or a region picks its model with `model = "NAME"`; a region without one
//! takes its source's, a source without one takes `[model]`. [`validate`] checks the names
//! without I/O; [`uses`] says which sources and regions use which model; [`load`] loads every
//! model in use once (an `Arc` shared by every source and region naming it) and leaves out the
//! ones nobody names; [`check_rules`] checks each rule's labels against the models of the
//! sources and regions it watches. Running them is the pipeline's job.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Model, ModelConfig, ModelError};
use crate::problems::Problems;
use crate::rules::{RuleConfig, UnknownLabel};
use crate::source::list::NamedSource;

/// The name of `[model]`, the model of every source and region that names none.
pub const DEFAULT: &str = "default";

/// Checks the `[models.NAME]` tables: names as for sources, "default" kept for `[model]`, each
/// table's keys as `[model]`'s.
pub fn validate(named: &BTreeMap<String, ModelConfig>, p: &mut Problems) {
    for (name, cfg) in named {
        let key = format!("models.{name}");
        crate::source::regions::validate_name(&key, name, p);
        if name == DEFAULT {
            p.push(
                key.as_str(),
                "\"default\" is the name of `[model]`; give this model another name",
            );
        }
        cfg.validate(&key, p);
    }
}

/// The names a source or region may give as `model`: "default", then the `[models.NAME]`
/// names in order.
pub fn names(named: &BTreeMap<String, ModelConfig>) -> Vec<&str> {
    std::iter::once(DEFAULT)
        .chain(named.keys().map(String::as_str))
        .collect()
}

/// A model some source or region uses.
#[derive(Debug, Clone)]
pub struct Use {
    pub name: String,
    /// Its key path in the file: `model` or `models.NAME`.
    pub key: String,
    pub config: ModelConfig,
    /// Who uses it: `source` (whole frames) or `source.region`, in config order.
    pub used_by: Vec<String>,
}

/// The models in use, "default" first, then the named ones in name order; models no source or
/// region names are left out (see [`unused`]). `default` is `[model]`.
pub fn uses(
    default: &ModelConfig,
    named: &BTreeMap<String, ModelConfig>,
    sources: &[NamedSource],
) -> Vec<Use> {
    let mut users: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in sources {
        let regions = s.regions();
        if regions.is_empty() {
            users
                .entry(s.model_name())
                .or_default()
                .push(s.name.clone());
        }
        for r in &regions {
            let name = named.get_key_value(&*r.model).map_or(DEFAULT, |(k, _)| k);
            users
                .entry(name)
                .or_default()
                .push(format!("{}.{}", s.name, r.name));
        }
    }
    let mut out = Vec::new();
    if let Some(used_by) = users.remove(DEFAULT) {
        out.push(Use {
            name: DEFAULT.into(),
            key: "model".into(),
            config: default.clone(),
            used_by,
        });
    }
    for (name, cfg) in named {
        if let Some(used_by) = users.remove(name.as_str()) {
            out.push(Use {
                name: name.clone(),
                key: format!("models.{name}"),
                config: cfg.clone(),
                used_by,
            });
        }
    }
    out
}

/// The `[models.NAME]` tables no source or region names.
pub fn unused(named: &BTreeMap<String, ModelConfig>, sources: &[NamedSource]) -> Vec<String> {
    let used = uses(&ModelConfig::default(), named, sources);
    named
        .keys()
        .filter(|n| !used.iter().any(|u| &u.name == *n))
        .cloned()
        .collect()
}

/// A loaded model in use: shared by the workers of every source and region that names it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: Arc<str>,
    pub model: Arc<Model>,
    /// As [`Use::used_by`].
    pub used_by: Vec<String>,
}

/// A model in use that did not load.
#[derive(Debug, thiserror::Error)]
#[error("cannot load model {name:?} (`[{key}]`)")]
pub struct LoadError {
    pub name: String,
    pub key: String,
    #[source]
    pub source: Box<ModelError>,
}

/// Loads each model in `uses` once, in order; the first that fails is the error.
pub fn load(uses: &[Use]) -> Result<Vec<Loaded>, LoadError> {
    uses.iter()
        .map(|u| {
            let model = Model::load(&u.config).map_err(|source| LoadError {
                name: u.name.clone(),
                key: u.key.clone(),
                source: Box::new(source),
            })?;
            Ok(Loaded {
                name: u.name.as_str().into(),
                model: Arc::new(model),
                used_by: u.used_by.clone(),
            })
        })
        .collect()
}

/// Checks that each label of each rule is a label of at least one model of the sources and
/// regions the rule watches (`sources`: the configured sources; `loaded`: the models in use).
pub fn check_rules(
    rules: &[RuleConfig],
    sources: &[NamedSource],
    loaded: &[Loaded],
) -> Result<(), UnknownLabel> {
    for (i, rule) in rules.iter().enumerate() {
        let mut scope: Vec<&Loaded> = Vec::new();
        let mut add = |name: &str| {
            if let Some(m) = loaded.iter().find(|m| &*m.name == name) {
                if !scope.iter().any(|s| Arc::ptr_eq(&s.name, &m.name)) {
                    scope.push(m);
                }
            }
        };
        let watched = sources
            .iter()
            .filter(|s| rule.sources.as_ref().is_none_or(|l| l.contains(&s.name)));
        for s in watched {
            let regions = s.regions();
            if regions.is_empty() && rule.regions.is_none() {
                add(s.model_name());
            }
            for r in regions.iter().filter(|r| {
                rule.regions
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|n| **n == *r.name))
            }) {
                add(&r.model);
            }
        }
        if scope.is_empty() {
            continue;
        }
        for label in &rule.labels {
            if scope.iter().any(|m| m.model.labels.contains(label)) {
                continue;
            }
            let known: Vec<&str> = scope
                .iter()
                .flat_map(|m| m.model.labels.iter().map(String::as_str))
                .collect();
            let mut shown: Vec<&str> = known.iter().take(20).copied().collect();
            if known.len() > 20 {
                shown.push("...");
            }
            let names: Vec<&str> = scope.iter().map(|m| &*m.name).collect();
            return Err(UnknownLabel {
                key: format!("rules[{i}].labels"),
                rule: rule.name.clone(),
                label: label.clone(),
                missing_from: if loaded.len() == 1 {
                    "the model does not have".into()
                } else {
                    format!(
                        "none of the models of the sources and regions it watches ({}) has",
                        names.join(", ")
                    )
                },
                known: format!(
                    "{} labels are: {}",
                    if scope.len() == 1 { "its" } else { "their" },
                    shown.join(", ")
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Origin};

    fn config(text: &str) -> Result<Config, String> {
        Config::parse(text, Origin::File("test.toml".into())).map_err(|e| e.to_string())
    }

    const TWO: &str = r#"
        [models.leaves]
        path = "plant.onnx"
        labels = "plant.labels.txt"
        [models.spare]
        path = "plant.onnx"
        [[sources]]
        name = "belt"
        type = "synthetic"
        [[sources]]
        name = "field"
        type = "synthetic"
        model = "leaves"
        [[sources.regions]]
        name = "left"
        rect = [0, 0, 0.5, 1]
        [[sources.regions]]
        name = "right"
        rect = [0.5, 0, 0.5, 1]
        model = "default"
        [[sources]]
        name = "tiles"
        type = "synthetic"
        model = "leaves"
        grid = [2, 1]
    "#;

    #[test]
    fn sources_and_regions_resolve_to_their_models_and_unused_ones_are_left_out() {
        let c = config(TWO).expect("valid");
        let got: Vec<(String, String, Vec<String>)> = uses(&c.model, &c.models, &c.sources())
            .into_iter()
            .map(|u| (u.name, u.key, u.used_by))
            .collect();
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                (
                    "default".into(),
                    "model".into(),
                    own(&["belt", "field.right"])
                ),
                (
                    "leaves".into(),
                    "models.leaves".into(),
                    own(&["field.left", "tiles.r0c0", "tiles.r0c1"])
                ),
            ]
        );
        assert_eq!(unused(&c.models, &c.sources()), ["spare"]);
        let used = uses(&c.model, &c.models, &c.sources());
        assert_eq!(used[1].config.path.as_deref(), Some("plant.onnx".as_ref()));
    }

    #[test]
    fn a_config_without_named_models_uses_the_default_for_everything() {
        let c = config("").expect("valid");
        let got = uses(&c.model, &c.models, &c.sources());
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].name.as_str(), got[0].key.as_str()),
            ("default", "model")
        );
        assert_eq!(got[0].used_by, ["synthetic"]);
    }

    #[test]
    fn bad_model_names_and_references_are_refused_with_their_key_paths() {
        // (toml, fragments the message must contain)
        let cases: &[(&str, &[&str])] = &[
            (
                "[models.\"leaf cam\"]\npath = \"x.onnx\"\n",
                &["models.leaf cam", "contains ' '"],
            ),
            (
                "[models.default]\npath = \"x.onnx\"\n",
                &["models.default", "name of `[model]`"],
            ),
            (
                "[models.leaves]\npath = \"x.onnx\"\n[models.leaves.preprocess]\nresize = \"squash\"\n",
                &["models.leaves.preprocess.resize", "stretch"],
            ),
            (
                "[models.leaves]\npaht = \"x.onnx\"\n",
                &["models.leaves", "unknown field `paht`"],
            ),
            (
                "[models.leaves]\npath = \"x.onnx\"\n[[sources]]\nname = \"a\"\ntype = \"synthetic\"\nmodel = \"leafs\"\n",
                &["sources[0].model", "no model named \"leafs\"", "default, leaves"],
            ),
            (
                "[[sources]]\nname = \"a\"\ntype = \"synthetic\"\n[[sources.regions]]\nname = \"r\"\nrect = [0, 0, 1, 1]\nmodel = \"x\"\n",
                &["sources[0].regions[0].model", "no model named \"x\"", "the models are: default"],
            ),
        ];
        for (text, fragments) in cases {
            let msg = config(text).expect_err("refused");
            for f in *fragments {
                assert!(
                    msg.contains(f),
                    "error for {text:?} should contain {f:?}, got:\n{msg}"
                );
            }
        }
    }
}
