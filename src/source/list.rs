//! The `[[sources]]` list: several named sources in one daemon, and `[source]`, its one-source
//! shorthand.
//!
//! Each `[[sources]]` entry is a `name` plus the keys of one `[source]` table (`type` and that
//! type's keys). The name is used in events (`source`), metrics labels and log lines, so it is
//! restricted to letters, digits, `_` and `-`, and unique. A lone `[source]` table is the same as
//! one entry named after what its events have always said (`synthetic`, `pipe:ffmpeg`,
//! `files:/data/leaves` ...); regions need a `[[sources]]` entry. This module only parses and
//! validates; the pipeline builds and runs them.

use serde::Deserialize;

use super::regions::{self, validate_name, Region, RegionConfig};
use super::SourceConfig;
use crate::problems::Problems;

/// One `[[sources]]` entry: a name and a source.
#[derive(Debug, Clone, Deserialize)]
pub struct NamedSource {
    /// Unique name: letters, digits, `_` and `-` (it appears in events, metrics and topics).
    pub name: String,
    /// Named rectangles of the frame, each classified as its own crop (see
    /// [`crate::source::regions`]). Default none: the whole frame.
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
    /// `[cols, rows]`: tiles of the frame as regions named `r<row>c<col>`.
    #[serde(default)]
    pub grid: Option<[u32; 2]>,
    /// How much neighbouring grid tiles overlap, as a fraction of a tile (0..0.5). Default 0.
    #[serde(default)]
    pub overlap: f64,
    /// The model that classifies this source's frames (and its regions without a `model` of
    /// their own): a `[models.NAME]` name, or "default" for `[model]`. Default "default".
    #[serde(default)]
    pub model: Option<String>,
    /// `type` and the keys of that source type, as in `[source]`.
    #[serde(flatten)]
    pub source: SourceConfig,
}

impl NamedSource {
    /// The regions classified in each frame; empty: the whole frame.
    pub fn regions(&self) -> Vec<Region> {
        regions::resolve(&self.regions, self.grid, self.overlap, self.model_name())
    }

    /// The name of the model of its whole frames and of the regions that name none.
    pub fn model_name(&self) -> &str {
        self.model.as_deref().unwrap_or(crate::model::DEFAULT_NAME)
    }
}

/// The sources of a configuration: `[[sources]]`, or `[source]` as a one-entry list, or the
/// default synthetic source when neither is given. Validated by [`validate`].
pub fn resolve(single: Option<&SourceConfig>, list: &[NamedSource]) -> Vec<NamedSource> {
    if !list.is_empty() {
        return list.to_vec();
    }
    let source = single.cloned().unwrap_or_default();
    vec![NamedSource {
        name: source.build().describe(),
        regions: Vec::new(),
        grid: None,
        overlap: 0.0,
        model: None,
        source,
    }]
}

/// Validates `[source]` / `[[sources]]`: not both, every entry's keys, names valid and unique,
/// each `model` (of a source or region) one of `models` (the names of the configured models).
pub fn validate(
    single: Option<&SourceConfig>,
    list: &[NamedSource],
    models: &[&str],
    p: &mut Problems,
) {
    if let Some(s) = single {
        if !list.is_empty() {
            p.push(
                "source",
                "`[source]` and `[[sources]]` are both given; use one: `[[sources]]` entries \
                 with a `name` each, or one `[source]` table",
            );
        }
        s.validate("source", p);
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let key = format!("sources[{i}]");
        validate_name(&format!("{key}.name"), &entry.name, p);
        if let Some(first) = seen.iter().position(|n| *n == entry.name) {
            p.push(
                format!("{key}.name"),
                format!(
                    "source name {:?} is already used by sources[{first}]; give each source a \
                     distinct `name`",
                    entry.name
                ),
            );
        }
        seen.push(&entry.name);
        entry.source.validate(&key, p);
        let named = std::iter::once((key.clone(), &entry.model)).chain(
            entry
                .regions
                .iter()
                .enumerate()
                .map(|(j, r)| (format!("{key}.regions[{j}]"), &r.model)),
        );
        for (k, model) in named {
            if let Some(m) = model.as_deref().filter(|m| !models.contains(m)) {
                p.push(
                    format!("{k}.model"),
                    format!(
                        "no model named {m:?}; the models are: {} (\"default\" is `[model]`; add \
                         a `[models.{m}]` table to name another)",
                        models.join(", ")
                    ),
                );
            }
        }
        let frame = entry.source.frame_size();
        regions::validate(&key, &entry.regions, entry.grid, entry.overlap, frame, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(single: Option<&SourceConfig>, list: &[NamedSource]) -> Vec<String> {
        let mut p = Problems::default();
        validate(single, list, &["default", "leaves"], &mut p);
        p.0.iter()
            .map(|x| format!("{}: {}", x.key, x.message))
            .collect()
    }

    fn named(name: &str) -> NamedSource {
        NamedSource {
            name: name.into(),
            regions: Vec::new(),
            grid: None,
            overlap: 0.0,
            model: None,
            source: SourceConfig::default(),
        }
    }

    #[test]
    fn models_of_sources_and_regions_must_be_configured() {
        let mut a = named("a");
        a.model = Some("leaves".into());
        let mut b = named("b");
        b.model = Some("leafs".into());
        b.regions = vec![RegionConfig {
            name: "left".into(),
            rect: [0.0, 0.0, 0.5, 1.0],
            model: Some("lefas".into()),
        }];
        let got = problems(None, &[a, b]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with(
                "sources[1].model: no model named \"leafs\"; the models are: default, leaves"
            ),
            "{got:?}"
        );
        assert!(
            got[1].starts_with("sources[1].regions[0].model: no model named \"lefas\""),
            "{got:?}"
        );
    }

    #[test]
    fn names_are_checked_with_their_key_path() {
        // (names, expected fragment of the first problem; None = valid)
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["line-1", "line_2", "Cam3"], None),
            (&["a", ""], Some("sources[1].name: must be 1 to 64")),
            (&["a", "b/c"], Some("sources[1].name: \"b/c\" contains '/'")),
            (&["a b"], Some("sources[0].name: \"a b\" contains ' '")),
            (
                &["cam", "x", "cam"],
                Some("sources[2].name: source name \"cam\" is already used by sources[0]"),
            ),
        ];
        for (names, want) in cases {
            let list: Vec<NamedSource> = names.iter().map(|n| named(n)).collect();
            let got = problems(None, &list);
            match want {
                None => assert!(got.is_empty(), "{names:?}: {got:?}"),
                Some(w) => assert!(
                    got.first().is_some_and(|g| g.contains(w)),
                    "{names:?}: want {w:?}, got {got:?}"
                ),
            }
        }
    }

    #[test]
    fn the_single_table_is_a_one_source_list_named_as_its_events_were() {
        let got = resolve(None, &[]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "synthetic");
        let list = [named("a"), named("b")];
        let got: Vec<String> = resolve(None, &list).into_iter().map(|s| s.name).collect();
        assert_eq!(got, ["a", "b"]);
        let both = problems(Some(&SourceConfig::default()), &list);
        assert!(
            both.iter()
                .any(|p| p.starts_with("source: ") && p.contains("both")),
            "{both:?}"
        );
    }
}
