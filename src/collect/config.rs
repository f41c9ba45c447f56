//! `[collect]`: which classified frames are kept for labelling, where, and within what bounds.
//! Parsed and validated without I/O; the folder is opened when the daemon starts
//! ([`super::Dataset::open`]).

use std::path::PathBuf;

use serde::Deserialize;

use crate::problems::Problems;

/// `[collect]`: frames worth labelling kept as an image-folder dataset (docs/training.md).
/// The table's presence turns collecting on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// The dataset folder: `DIR/<predicted label>/<file>.jpg` and `DIR/manifest.jsonl`;
    /// created if missing. Required.
    pub dir: PathBuf,
    /// Keep a frame whose top-1 score is below this (the model is unsure). 0 turns it off.
    /// Default 0.6.
    #[serde(default = "default_below_score")]
    pub below_score: f32,
    /// Keep a frame whose top-1 score leads the top-2 by less than this (two labels are
    /// close). 0 turns it off. Default 0.2.
    #[serde(default = "default_below_margin")]
    pub below_margin: f32,
    /// Keep one of every N confident frames of each label (counted per label, so a rare label
    /// gets its share). 0 turns it off. Default 500.
    #[serde(default = "default_sample_every")]
    pub sample_every: u64,
    /// Keep the frames of events. Default true.
    #[serde(default = "yes")]
    pub events: bool,
    /// A frame whose perceptual hash (64 bits) is within this many bits of one of the last
    /// frames kept from the same source and region is a near duplicate and not kept, so a
    /// static scene does not fill the disk. 0 keeps every frame. 0..32; default 10.
    #[serde(default = "default_min_distance")]
    pub min_distance: u32,
    /// Keep at most this many collected frames (the oldest are deleted first). Frames a
    /// person has labelled are never deleted and not counted. Default 2000.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    /// Keep at most this many megabytes (10^6 bytes) of collected frames. Default 500.
    #[serde(default = "default_max_mb")]
    pub max_mb: f64,
    /// JPEG quality of re-encoded frames (regions, raw formats). Default 90.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Names of the sources collected from. Default: all.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}
fn default_below_score() -> f32 {
    0.6
}
fn default_below_margin() -> f32 {
    0.2
}
fn default_sample_every() -> u64 {
    500
}
fn default_min_distance() -> u32 {
    10
}
fn default_max_files() -> usize {
    2000
}
fn default_max_mb() -> f64 {
    500.0
}
fn default_quality() -> u8 {
    90
}

impl CollectConfig {
    /// `sources`: the names of the configuration's sources.
    pub fn validate(&self, sources: &[String], p: &mut Problems) {
        if self.dir.as_os_str().is_empty() {
            p.push("collect.dir", "must name a folder");
        }
        for (key, v) in [
            ("collect.below_score", self.below_score),
            ("collect.below_margin", self.below_margin),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                p.push(
                    key,
                    format!("expected a score from 0 to 1 (0: off), got {v}"),
                );
            }
        }
        p.range("collect.min_distance", self.min_distance, 0, 32);
        p.range("collect.max_files", self.max_files, 1, 10_000_000);
        if !(self.max_mb.is_finite() && self.max_mb > 0.0) {
            p.push(
                "collect.max_mb",
                format!("expected a number of megabytes > 0, got {}", self.max_mb),
            );
        }
        p.range("collect.quality", self.quality, 1, 100);
        for name in self.sources.iter().flatten() {
            if !sources.contains(name) {
                p.push(
                    "collect.sources",
                    format!(
                        "no source is named {name:?}; the sources are {}",
                        sources.join(", ")
                    ),
                );
            }
        }
    }

    pub fn max_bytes(&self) -> u64 {
        (self.max_mb * 1e6) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_each_bad_key_named() {
        let c: CollectConfig = toml::from_str("dir = \"/tmp/c\"").expect("parses");
        assert_eq!(
            (c.below_score, c.below_margin, c.sample_every, c.events),
            (0.6, 0.2, 500, true)
        );
        assert_eq!((c.min_distance, c.max_files, c.quality), (10, 2000, 90));
        let mut p = Problems::default();
        c.validate(&["cam".into()], &mut p);
        assert!(p.is_empty(), "{p:?}");

        for (toml, key) in [
            ("dir = \"\"", "collect.dir"),
            ("dir = \"d\"\nbelow_score = 1.5", "collect.below_score"),
            ("dir = \"d\"\nbelow_margin = -0.1", "collect.below_margin"),
            ("dir = \"d\"\nmin_distance = 40", "collect.min_distance"),
            ("dir = \"d\"\nmax_files = 0", "collect.max_files"),
            ("dir = \"d\"\nmax_mb = 0", "collect.max_mb"),
            ("dir = \"d\"\nquality = 0", "collect.quality"),
            ("dir = \"d\"\nsources = [\"nope\"]", "collect.sources"),
        ] {
            let c: CollectConfig = toml::from_str(toml).expect(toml);
            let mut p = Problems::default();
            c.validate(&["cam".into()], &mut p);
            assert_eq!(p.0.len(), 1, "{toml}: {p:?}");
            assert_eq!(p.0[0].key, key, "{toml}");
        }
        assert!(toml::from_str::<CollectConfig>("dir = \"d\"\nbogus = 1").is_err());
    }
}
