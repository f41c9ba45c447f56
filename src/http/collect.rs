//! The labelling page and its API, over the `[collect]` dataset ([`crate::collect`]):
//!
//! | path | what |
//! |---|---|
//! | `/collect` | the page: collected frames by label, lowest confidence first; a click or a key confirms or changes a frame's label, or deletes it |
//! | `/api/collect?label=L&reviewed=false&limit=N` | JSON: the dataset's summary, the labels to choose from (the models' and the folders') and its items |
//! | `/collect/image?file=F` | one of the dataset's files (only those the manifest lists) |
//! | `POST /api/collect/label` | body `{"file": F, "label": L}`: the file moves to `L/` and is marked reviewed (needs `token_env`) |
//! | `POST /api/collect/delete` | body `{"file": F}`: the file is deleted (needs `token_env`) |

use serde::{Deserialize, Serialize};

use super::request::Request;
use super::respond::{json, query, text, Resp};
use super::State;
use crate::collect::dataset::Summary;
use crate::collect::{Dataset, DatasetError, Item};

pub(super) const PAGE: &str = include_str!("../../web/collect.html");

/// The paths this module answers.
pub(super) fn is_collect_path(path: &str) -> bool {
    matches!(
        path,
        "/collect"
            | "/api/collect"
            | "/collect/image"
            | "/api/collect/label"
            | "/api/collect/delete"
    )
}

/// The POSTs among them.
pub(super) fn is_write(path: &str) -> bool {
    matches!(path, "/api/collect/label" | "/api/collect/delete")
}

fn dataset(state: &State) -> Option<std::sync::Arc<Dataset>> {
    state
        .collect
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn off() -> Resp {
    text(
        404,
        "text/plain; charset=utf-8",
        "collecting is off: add a [collect] table with dir = \"...\" to the configuration and reload\n",
    )
}

#[derive(Serialize)]
struct Listing {
    summary: Summary,
    /// Labels a frame can be given: the models' labels, then folder names not among them.
    labels: Vec<String>,
    items: Vec<Item>,
}

/// `GET /api/collect`, `/collect/image` (the page itself is served by `routes`).
pub(super) fn get(state: &State, req: &Request) -> Resp {
    let Some(d) = dataset(state) else {
        return off();
    };
    let url = req.url.as_str();
    match req.path() {
        "/api/collect" => {
            let label = query(url, "label").filter(|l| !l.is_empty());
            let reviewed = query(url, "reviewed").and_then(|r| r.parse::<bool>().ok());
            let limit = query(url, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(500usize)
                .min(10_000);
            let summary = d.summary();
            let mut labels: Vec<String> = {
                let info = state.info.lock().unwrap_or_else(|e| e.into_inner());
                info.labels.clone()
            };
            for folder in summary.labels.keys() {
                if !labels.contains(folder) {
                    labels.push(folder.clone());
                }
            }
            json(&Listing {
                items: d.list(label.as_deref(), reviewed, limit),
                summary,
                labels,
            })
        }
        _ => {
            let file = query(url, "file").unwrap_or_default();
            let Some(path) = d.path_of(&file) else {
                return text(
                    404,
                    "text/plain; charset=utf-8",
                    format!("the dataset has no file {file:?}\n"),
                );
            };
            match std::fs::read(&path) {
                Ok(bytes) => text(200, content_type(&file), bytes),
                Err(e) => text(
                    404,
                    "text/plain; charset=utf-8",
                    format!("cannot read {}: {e}\n", path.display()),
                ),
            }
        }
    }
}

fn content_type(file: &str) -> &'static str {
    match file
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("bmp") => "image/bmp",
        Some("ppm" | "pgm") => "image/x-portable-anymap",
        _ => "image/jpeg",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    file: String,
    #[serde(default)]
    label: Option<String>,
}

/// `POST /api/collect/label` and `/api/collect/delete` (the token already checked).
pub(super) fn post(state: &State, req: &Request) -> Resp {
    let Some(d) = dataset(state) else {
        return off();
    };
    let change: Change = match serde_json::from_slice(&req.body) {
        Ok(c) => c,
        Err(e) => {
            return text(
                400,
                "text/plain; charset=utf-8",
                format!("expected a JSON body {{\"file\": \"<label>/<name>.jpg\", \"label\": \"<label>\"}}: {e}\n"),
            )
        }
    };
    let result = if req.path() == "/api/collect/label" {
        let Some(label) = change.label.as_deref() else {
            return text(
                400,
                "text/plain; charset=utf-8",
                "a label change needs \"label\"\n",
            );
        };
        d.relabel(&change.file, label).map(|item| {
            log::info!("Collected frame labelled. file={} label={label}", item.file);
            json(&item)
        })
    } else {
        d.delete(&change.file).map(|()| {
            log::info!("Collected frame deleted. file={}", change.file);
            json(&serde_json::json!({ "deleted": change.file }))
        })
    };
    result.unwrap_or_else(|e| {
        let status = match e {
            DatasetError::Unknown(_) => 404,
            DatasetError::BadLabel(_) => 422,
            DatasetError::Io { .. } => 500,
        };
        text(status, "text/plain; charset=utf-8", format!("{e}\n"))
    })
}
