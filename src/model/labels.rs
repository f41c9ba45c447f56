//! Class labels: from a labels file, from the model's ONNX metadata, or generated.
//!
//! Metadata values come in several shapes in the wild: a JSON list (`["ok", "scratch"]`), a JSON
//! object keyed by index (`{"0": "ok"}`), a Python dict repr as Ultralytics writes it
//! (`{0: 'ok', 1: 'scratch'}`), or newline/comma separated text. [`parse_label_list`] reads all
//! of them; the count check against the model output is the caller's. PaddleOCR (and RapidOCR's
//! exports) write `character`, one entry per line where a space or a comma is itself an entry:
//! [`parse_character_list`] splits it on newlines only and trims nothing.

use std::path::Path;

use tract_onnx::pb::StringStringEntryProto;

use super::{LabelSource, ModelError};

/// Metadata keys searched for labels, in order (compared case-insensitively): the generic ones,
/// Ultralytics' `names`, PaddleOCR's `character`, Hugging Face's `id2label`.
pub const METADATA_KEYS: [&str; 6] = [
    "labels",
    "names",
    "classes",
    "class_names",
    "character",
    "id2label",
];

/// Labels for a model with `classes` outputs.
pub fn resolve(
    file: Option<&Path>,
    metadata: &[StringStringEntryProto],
    classes: usize,
) -> Result<(Vec<String>, LabelSource), ModelError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Labels {
            path: path.to_owned(),
            source,
        })?;
        return Ok((parse_labels_file(&text), LabelSource::File(path.to_owned())));
    }
    for key in METADATA_KEYS {
        if let Some(entry) = metadata.iter().find(|e| e.key.eq_ignore_ascii_case(key)) {
            let parsed = if key == "character" {
                parse_character_list(&entry.value)
            } else {
                parse_label_list(&entry.value)
            };
            if let Some(labels) = parsed {
                return Ok((labels, LabelSource::Metadata(entry.key.clone())));
            }
        }
    }
    Ok((
        (0..classes).map(|i| format!("class_{i}")).collect(),
        LabelSource::Generated,
    ))
}

/// One label per line; surrounding blanks trimmed; trailing empty lines ignored.
pub fn parse_labels_file(text: &str) -> Vec<String> {
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
    while labels.last().is_some_and(|l| l.is_empty()) {
        labels.pop();
    }
    labels
}

/// Reads a label list from a metadata value; `None` if it holds no usable list.
pub fn parse_label_list(value: &str) -> Option<Vec<String>> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(v)
            .ok()
            .filter(|l| !l.is_empty());
    }
    if v.starts_with('{') {
        if let Ok(map) = serde_json::from_str::<std::collections::BTreeMap<String, String>>(v) {
            return indexed(
                map.into_iter()
                    .map(|(k, v)| (k.trim().parse::<usize>().ok(), v)),
            );
        }
        // The closing brace may be missing, and the last character may be any width (found by
        // fuzzing: `{0: 'ok'` followed by a non-ASCII character).
        let inner = v.strip_prefix('{').unwrap_or(v);
        return indexed(
            split_top_level(inner.strip_suffix('}').unwrap_or(inner))
                .into_iter()
                .map(|entry| {
                    let (k, val) = entry.split_once(':').unwrap_or(("", &entry));
                    (unquote(k).parse::<usize>().ok(), unquote(val).to_owned())
                }),
        );
    }
    let items: Vec<String> = if v.contains('\n') {
        parse_labels_file(v)
    } else {
        v.split(',').map(|s| unquote(s).to_owned()).collect()
    };
    (!items.is_empty() && items.iter().all(|s| !s.is_empty())).then_some(items)
}

/// PaddleOCR's `character`: a JSON list, else one entry per line (`\r\n` or `\n`), nothing
/// trimmed (" " and "," are characters), a final line break ignored; `None` if empty.
pub fn parse_character_list(value: &str) -> Option<Vec<String>> {
    if value.trim_start().starts_with('[') {
        if let Ok(list) = serde_json::from_str::<Vec<String>>(value.trim()) {
            return (!list.is_empty()).then_some(list);
        }
    }
    let body = value
        .strip_suffix("\r\n")
        .or_else(|| value.strip_suffix('\n'))
        .unwrap_or(value);
    if body.is_empty() {
        return None;
    }
    Some(
        body.split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
            .collect(),
    )
}

/// Orders `(index, label)` pairs; `None` unless the indices are exactly 0..n.
fn indexed(pairs: impl Iterator<Item = (Option<usize>, String)>) -> Option<Vec<String>> {
    let mut pairs: Vec<(usize, String)> = pairs
        .map(|(k, v)| k.map(|k| (k, v)))
        .collect::<Option<_>>()?;
    pairs.sort_by_key(|(k, _)| *k);
    let ok = !pairs.is_empty() && pairs.iter().enumerate().all(|(i, (k, _))| i == *k);
    ok.then(|| pairs.into_iter().map(|(_, v)| v).collect())
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['\'', '"'] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// Splits on commas that are not inside quotes.
fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for ch in s.chars() {
        match (quote, ch) {
            (None, '\'' | '"') => {
                quote = Some(ch);
                cur.push(ch);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(ch);
            }
            (None, ',') => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unterminated_dicts_with_wide_characters_do_not_panic() {
        assert_eq!(
            parse_label_list("{0: 'ok', 1: '猫'"),
            Some(vec!["ok".into(), "猫".into()])
        );
        assert_eq!(parse_label_list("{0: 'ok'é"), Some(vec!["'ok'é".into()]));
        assert_eq!(parse_label_list("{"), None);
    }

    #[test]
    fn metadata_label_formats() {
        let want = Some(vec!["ok".to_owned(), "scratch, deep".to_owned()]);
        let cases = [
            (r#"["ok", "scratch, deep"]"#, want.clone()),
            (r#"{"1": "scratch, deep", "0": "ok"}"#, want.clone()),
            ("{0: 'ok', 1: 'scratch, deep'}", want.clone()),
            ("ok\nscratch, deep\n", want.clone()),
            ("ok,dent", Some(vec!["ok".to_owned(), "dent".to_owned()])),
            ("", None),
            ("[]", None),
            ("{0: 'ok', 2: 'gap'}", None),
            ("[1, 2]", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_label_list(text), expected, "parsing {text:?}");
        }
    }

    #[test]
    fn paddle_character_lists_split_on_lines_only() {
        assert_eq!(
            parse_character_list("0\n180\n"),
            Some(vec!["0".into(), "180".into()])
        );
        assert_eq!(
            parse_character_list("a\r\n,\r\n \r\n猫"),
            Some(vec!["a".into(), ",".into(), " ".into(), "猫".into()])
        );
        assert_eq!(
            parse_character_list(r#"["0", "180"]"#),
            Some(vec!["0".into(), "180".into()])
        );
        assert_eq!(parse_character_list(""), None);
        let meta = [StringStringEntryProto {
            key: "character".into(),
            value: "0\n180".into(),
        }];
        let (labels, from) = resolve(None, &meta, 2).expect("labels");
        assert_eq!(labels, vec!["0", "180"]);
        assert_eq!(from, LabelSource::Metadata("character".into()));
        let hf = [StringStringEntryProto {
            key: "id2label".into(),
            value: r#"{"0": "tench", "1": "goldfish"}"#.into(),
        }];
        assert_eq!(
            resolve(None, &hf, 2).expect("labels").0,
            vec!["tench", "goldfish"]
        );
    }

    #[test]
    fn labels_file_keeps_inner_blank_lines_drops_trailing() {
        assert_eq!(parse_labels_file("a\n\nc\n\n"), vec!["a", "", "c"]);
    }

    #[test]
    fn generated_labels_when_nothing_else() {
        let (labels, from) = resolve(None, &[], 3).expect("generated");
        assert_eq!(labels, vec!["class_0", "class_1", "class_2"]);
        assert_eq!(from, LabelSource::Generated);
    }
}
