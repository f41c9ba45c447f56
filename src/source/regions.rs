//! Regions of a source's frames, each classified as its own crop: `[[sources.regions]]`
//! rectangles and the `grid = [cols, rows]` shorthand (with `overlap`) that names its tiles
//! `r<row>c<col>`.
//!
//! A rectangle is `[x, y, width, height]` as fractions of the frame (0..1, from the top left), so
//! one configuration fits every resolution and a region outside the frame is refused when the
//! file is read. This module parses, validates and resolves them to [`Region`]s; cropping is
//! the model session's job ([`crate::model`]).

use std::sync::Arc;

use serde::Deserialize;

use crate::frame::rect::pixels;
use crate::problems::Problems;

/// `[[sources.regions]]`: one named rectangle of the frame.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Unique within the source: letters, digits, `_` and `-` (events carry it as `region`).
    pub name: String,
    /// `[x, y, width, height]`, fractions of the frame's width and height (0..1).
    pub rect: [f64; 4],
    /// The model that classifies this region: a `[models.NAME]` name, or "default" for
    /// `[model]`. Default: its source's model.
    #[serde(default)]
    pub model: Option<String>,
}

/// A resolved region: its name, rectangle (fractions of the frame) and model's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub name: Arc<str>,
    pub rect: [f64; 4],
    /// The name of the model that classifies it (see [`crate::models`]).
    pub model: Arc<str>,
}

/// Most regions one source may have (each one is a model run per frame).
pub const MAX_REGIONS: usize = 64;
/// Most grid columns or rows.
const MAX_GRID: u32 = 8;
/// Slack for rectangles that end at the frame's edge after rounding.
const EDGE: f64 = 1e-9;

/// Checks a name used in events and topics (source and region names).
pub(crate) fn validate_name(key: &str, name: &str, p: &mut Problems) {
    const MAX_NAME: usize = 64;
    if name.is_empty() || name.len() > MAX_NAME {
        p.push(
            key,
            format!("must be 1 to {MAX_NAME} characters long, got {name:?}"),
        );
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        p.push(
            key,
            format!(
                "{name:?} contains {c:?}; use only letters, digits, '_' and '-' (the name is \
                 used in events, metrics and MQTT topics)"
            ),
        );
    }
}

/// The tiles of a `cols` x `rows` grid whose neighbours overlap by `overlap` of a tile, named
/// `r<row>c<col>` (from 0, row by row), each classified by `model`.
pub fn grid(cols: u32, rows: u32, overlap: f64, model: &Arc<str>) -> Vec<Region> {
    let span = |n: u32| {
        let size = 1.0 / (f64::from(n) - f64::from(n.saturating_sub(1)) * overlap);
        (size, size * (1.0 - overlap))
    };
    let ((w, dx), (h, dy)) = (span(cols), span(rows));
    let mut out = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            out.push(Region {
                name: format!("r{r}c{c}").into(),
                rect: [
                    f64::from(c) * dx,
                    f64::from(r) * dy,
                    w.min(1.0 - f64::from(c) * dx),
                    h.min(1.0 - f64::from(r) * dy),
                ],
                model: Arc::clone(model),
            });
        }
    }
    out
}

/// The regions of a source: its `regions`, then its grid's tiles. Empty: the whole frame.
/// `model`: the source's model, which the tiles and the regions without a `model` inherit.
pub fn resolve(
    regions: &[RegionConfig],
    grid_: Option<[u32; 2]>,
    overlap: f64,
    model: &str,
) -> Vec<Region> {
    let model: Arc<str> = model.into();
    let mut out: Vec<Region> = regions
        .iter()
        .map(|r| Region {
            name: r.name.as_str().into(),
            rect: r.rect,
            model: r
                .model
                .as_deref()
                .map_or_else(|| Arc::clone(&model), Arc::from),
        })
        .collect();
    if let Some([cols, rows]) = grid_ {
        out.extend(grid(cols, rows, overlap, &model));
    }
    out
}

/// Smallest crop, in pixels each way, a region may make of a frame whose size is known.
const MIN_PIXELS: u32 = 8;

/// Validates a source's regions and grid; `key` is the source's path (`sources[0]`);
/// `frame`: the frame size when the configuration fixes it.
pub fn validate(
    key: &str,
    regions: &[RegionConfig],
    grid_: Option<[u32; 2]>,
    overlap: f64,
    frame: Option<(u32, u32)>,
    p: &mut Problems,
) {
    let mut names: Vec<&str> = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let rk = format!("{key}.regions[{i}]");
        validate_name(&format!("{rk}.name"), &r.name, p);
        if names.contains(&r.name.as_str()) {
            p.push(
                format!("{rk}.name"),
                format!("region name {:?} is used twice in this source", r.name),
            );
        }
        names.push(&r.name);
        let before = p.0.len();
        validate_rect(&format!("{rk}.rect"), r.rect, p);
        if let (Some((fw, fh)), true) = (frame, p.0.len() == before) {
            let (_, _, w, h) = pixels(r.rect, fw, fh);
            if w < MIN_PIXELS || h < MIN_PIXELS {
                p.push(
                    format!("{rk}.rect"),
                    format!(
                        "{:?} is {w}x{h} pixels of the {fw}x{fh} frame; a region needs at least \
                         {MIN_PIXELS}x{MIN_PIXELS}",
                        r.rect
                    ),
                );
            }
        }
    }
    if !(overlap.is_finite() && (0.0..=0.5).contains(&overlap)) {
        p.push(
            format!("{key}.overlap"),
            format!("expected a fraction of a tile from 0 to 0.5, got {overlap}"),
        );
    }
    if let Some([cols, rows]) = grid_ {
        if !(1..=MAX_GRID).contains(&cols) || !(1..=MAX_GRID).contains(&rows) {
            p.push(
                format!("{key}.grid"),
                format!("expected [cols, rows], each from 1 to {MAX_GRID}, got [{cols}, {rows}]"),
            );
        } else {
            for tile in grid(cols, rows, overlap.clamp(0.0, 0.5), &Arc::from("")) {
                if names.contains(&&*tile.name) {
                    p.push(
                        format!("{key}.grid"),
                        format!(
                            "its tile {:?} has the name of a region; rename that region",
                            tile.name
                        ),
                    );
                }
            }
        }
    } else if overlap != 0.0 {
        p.push(format!("{key}.overlap"), "applies to a `grid`; set one");
    }
    let count = regions.len() + grid_.map_or(0, |[c, r]| (c * r) as usize);
    if count > MAX_REGIONS {
        p.push(
            format!("{key}.regions"),
            format!("{count} regions; at most {MAX_REGIONS} per source"),
        );
    }
}

fn validate_rect(key: &str, rect: [f64; 4], p: &mut Problems) {
    let [x, y, w, h] = rect;
    let help = "rect is [x, y, width, height] as fractions of the frame (0..1, from the top left)";
    if rect.iter().any(|v| !v.is_finite()) || x < 0.0 || y < 0.0 {
        p.push(
            key,
            format!("{rect:?}: x and y must be from 0 to 1; {help}"),
        );
    } else if w <= 0.0 || h <= 0.0 {
        p.push(
            key,
            format!("{rect:?}: width and height must be above 0; {help}"),
        );
    } else if x + w > 1.0 + EDGE || y + h > 1.0 + EDGE {
        p.push(
            key,
            format!(
                "{rect:?} reaches outside the frame (x + width = {}, y + height = {}; at most 1); {help}",
                x + w,
                y + h
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(regions: &[RegionConfig], grid: Option<[u32; 2]>, overlap: f64) -> Vec<String> {
        let mut p = Problems::default();
        validate("sources[0]", regions, grid, overlap, None, &mut p);
        p.0.iter()
            .map(|x| format!("{}: {}", x.key, x.message))
            .collect()
    }

    fn region(name: &str, rect: [f64; 4]) -> RegionConfig {
        RegionConfig {
            name: name.into(),
            rect,
            model: None,
        }
    }

    #[test]
    fn rectangles_outside_the_frame_are_refused_with_their_key() {
        // (rect, expected fragment; None = valid)
        let cases: &[([f64; 4], Option<&str>)] = &[
            ([0.0, 0.0, 1.0, 1.0], None),
            ([0.25, 0.5, 0.75, 0.5], None),
            (
                [0.5, 0.0, 0.6, 1.0],
                Some("regions[0].rect: [0.5, 0.0, 0.6, 1.0] reaches outside the frame"),
            ),
            ([0.0, 0.9, 0.5, 0.2], Some("reaches outside the frame")),
            ([-0.1, 0.0, 0.5, 0.5], Some("x and y must be from 0 to 1")),
            (
                [0.1, 0.1, 0.0, 0.5],
                Some("width and height must be above 0"),
            ),
            ([f64::NAN, 0.0, 0.5, 0.5], Some("x and y")),
        ];
        for (rect, want) in cases {
            let got = problems(&[region("lane", *rect)], None, 0.0);
            match want {
                None => assert!(got.is_empty(), "{rect:?}: {got:?}"),
                Some(w) => assert!(
                    got.first().is_some_and(|g| g.contains(w)),
                    "{rect:?}: want {w:?}, got {got:?}"
                ),
            }
        }
    }

    #[test]
    fn a_region_too_small_for_a_known_frame_size_is_refused() {
        let tiny = [region("speck", [0.0, 0.0, 0.01, 0.5])];
        let mut p = Problems::default();
        validate("sources[0]", &tiny, None, 0.0, Some((320, 240)), &mut p);
        let msg = format!("{}: {}", p.0[0].key, p.0[0].message);
        assert!(
            msg.starts_with("sources[0].regions[0].rect:")
                && msg.contains("3x120 pixels of the 320x240 frame"),
            "{msg}"
        );
        let mut p = Problems::default();
        validate("sources[0]", &tiny, None, 0.0, Some((3200, 240)), &mut p);
        assert!(p.is_empty(), "32 pixels wide is enough");
    }

    #[test]
    fn names_grid_and_overlap_are_checked() {
        let r = |n| region(n, [0.0, 0.0, 0.5, 0.5]);
        type Case = (Vec<RegionConfig>, Option<[u32; 2]>, f64, &'static str);
        let cases: &[Case] = &[
            (
                vec![r("a"), r("a")],
                None,
                0.0,
                "regions[1].name: region name \"a\" is used twice",
            ),
            (
                vec![r("a b")],
                None,
                0.0,
                "regions[0].name: \"a b\" contains ' '",
            ),
            (
                vec![],
                Some([0, 2]),
                0.0,
                "sources[0].grid: expected [cols, rows]",
            ),
            (vec![], Some([9, 1]), 0.0, "sources[0].grid"),
            (
                vec![r("r0c1")],
                Some([2, 1]),
                0.0,
                "its tile \"r0c1\" has the name of a region",
            ),
            (
                vec![],
                Some([2, 2]),
                0.7,
                "sources[0].overlap: expected a fraction",
            ),
            (vec![], None, 0.2, "sources[0].overlap: applies to a `grid`"),
        ];
        for (regions, grid, overlap, want) in cases {
            let got = problems(regions, *grid, *overlap);
            assert!(
                got.iter().any(|g| g.contains(want)),
                "want {want:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn regions_and_tiles_take_the_sources_model_unless_they_name_one() {
        let mut own = region("tags", [0.5, 0.0, 0.5, 1.0]);
        own.model = Some("ocr".into());
        let got: Vec<(String, String)> = resolve(
            &[region("trays", [0.0, 0.0, 0.5, 1.0]), own],
            Some([2, 1]),
            0.0,
            "plant",
        )
        .into_iter()
        .map(|r| (r.name.to_string(), r.model.to_string()))
        .collect();
        let want = [
            ("trays", "plant"),
            ("tags", "ocr"),
            ("r0c0", "plant"),
            ("r0c1", "plant"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, m)| (n.to_string(), m.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_grid_tiles_the_frame_and_names_its_tiles() {
        let m: Arc<str> = Arc::from("default");
        let tiles = grid(3, 2, 0.0, &m);
        let names: Vec<&str> = tiles.iter().map(|t| &*t.name).collect();
        assert_eq!(names, ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2"]);
        let close = |a: [f64; 4], b: [f64; 4]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        assert!(
            close(tiles[4].rect, [1.0 / 3.0, 0.5, 1.0 / 3.0, 0.5]),
            "{:?}",
            tiles[4]
        );
        // Overlap 0.5 of a tile over two columns: tiles of 2/3, the second starting at 1/3.
        let o = grid(2, 1, 0.5, &m);
        assert!(close(o[0].rect, [0.0, 0.0, 2.0 / 3.0, 1.0]), "{o:?}");
        assert!(close(o[1].rect, [1.0 / 3.0, 0.0, 2.0 / 3.0, 1.0]), "{o:?}");
        for t in grid(5, 3, 0.25, &m) {
            let [x, y, w, h] = t.rect;
            assert!(x + w <= 1.0 + EDGE && y + h <= 1.0 + EDGE, "{t:?}");
        }
    }
}
