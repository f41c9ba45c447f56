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
pub use crate::model::DEFAULT_NAME as DEFAULT;

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
