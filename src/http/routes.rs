//! What each path answers: the page, health, status, live data, events, the frame, reload
//! (`?source=` picks one source of several; `sources` builds `/api/live`).

use std::time::Instant;

use serde::Serialize;

use super::prometheus::prometheus;
use super::request::Request;
use super::respond::{authorized, header, json, query, text, Resp};
use super::State;
use super::{Control, Info};
use super::{Shared, PAGE};
use crate::health::Report;

/// The answer to `req`. Never logs the query string (it may hold the token).
/// Takes the request: a model upload's body (up to 256 MiB) moves on to the daemon, uncopied.
pub(super) fn handle(mut req: Request, shared: &Shared) -> Resp {
    let (state, token, started) = (&shared.state, shared.token.as_deref(), shared.started);
    let url = req.url.as_str();
    let path = req.path();
    let method = req.method.as_str();
    if path == "/api/reload" || path == "/api/model" {
        if method != "POST" {
            text(
                405,
                "text/plain; charset=utf-8",
                if path == "/api/reload" {
                    "POST to reload\n"
                } else {
                    "POST the ONNX file as the body to deploy it\n"
                },
            )
            .with_header(header("Allow", "POST"))
        } else if let Some(refusal) = write_refusal(&req, shared) {
            refusal
        } else if path == "/api/reload" {
            reload(state)
        } else {
            deploy(state, &mut req)
        }
    } else if super::collect::is_write(path) {
        if method != "POST" {
            text(
                405,
                "text/plain; charset=utf-8",
                "POST {\"file\": ..., \"label\": ...} here\n",
            )
            .with_header(header("Allow", "POST"))
        } else if let Some(refusal) = write_refusal(&req, shared) {
            refusal
        } else {
            super::collect::post(state, &req)
        }
    } else if method != "GET" && method != "HEAD" {
        text(
            405,
            "text/plain; charset=utf-8",
            "only GET is served here\n",
        )
        .with_header(header("Allow", "GET, HEAD"))
    } else if path == "/healthz" {
        healthz(state)
    } else if !authorized(&req, token) {
        shared.counters.failed_token(req.peer);
        text(
            401,
            "text/plain; charset=utf-8",
            "missing or wrong bearer token (Authorization: Bearer <token>, or ?token=)\n",
        )
        .with_header(header("WWW-Authenticate", "Bearer"))
    } else {
        // `?source=NAME`: one source of several (default: the first; events: all).
        let source = query(url, "source").filter(|s| !s.is_empty());
        match path {
            "/" | "/index.html" => text(200, "text/html; charset=utf-8", PAGE),
            "/collect" => text(200, "text/html; charset=utf-8", super::collect::PAGE),
            p if super::collect::is_collect_path(p) => super::collect::get(state, &req),
            "/metrics" => {
                let mut body = prometheus(state, started);
                shared
                    .counters
                    .prometheus(&mut body, shared.max_connections);
                text(200, "text/plain; version=0.0.4; charset=utf-8", body)
            }
            "/api/status" => json(&status(state, started)),
            "/api/live" => json(&super::sources::live(state)),
            "/api/history" => {
                let since = query(url, "since")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                match state.live.history_since(source.as_deref(), since) {
                    Ok(points) => json(&points),
                    Err(e) => unknown_source(&e),
                }
            }
            "/api/events" => {
                let limit = query(url, "limit")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(50usize)
                    .min(crate::live::RECENT_EVENTS);
                match state.live.recent_events(source.as_deref(), limit) {
                    Ok((events, total)) => {
                        let events: Vec<&crate::event::Event> =
                            events.iter().map(|e| &**e).collect();
                        json(&serde_json::json!({ "total": total, "events": events }))
                    }
                    Err(e) => unknown_source(&e),
                }
            }
            "/frame.jpg" => match state.live.jpeg(source.as_deref()) {
                Ok(Some(Ok((seq, bytes)))) => text(200, "image/jpeg", bytes.as_slice())
                    .with_header(header("X-Frame-Seq", &seq.to_string())),
                Ok(Some(Err(e))) => text(500, "text/plain; charset=utf-8", format!("{e}\n")),
                Ok(None) => text(
                    404,
                    "text/plain; charset=utf-8",
                    "no frame classified yet\n",
                ),
                Err(e) => unknown_source(&e),
            },
            _ => text(
                404,
                "text/plain; charset=utf-8",
                "not found; see / for the live view\n",
            ),
        }
    }
}

/// Why a write request (`POST /api/reload`, `/api/model`, `/api/collect/...`) is refused: no token configured
/// (403), or a missing or wrong bearer token (401, counted); `None`: go ahead. The token is
/// only accepted as a header here, never as `?token=`.
pub(super) fn write_refusal(req: &Request, shared: &Shared) -> Option<Resp> {
    let token = shared.token.as_deref();
    if token.is_none() {
        Some(text(
            403,
            "text/plain; charset=utf-8",
            "writing over HTTP (reload, model upload, labelling) needs a token: set [http] token_env (or send SIGHUP to reload)\n",
        ))
    } else if !authorized(req, token) {
        shared.counters.failed_token(req.peer);
        Some(
            text(
                401,
                "text/plain; charset=utf-8",
                "missing or wrong bearer token (Authorization: Bearer <token>; ?token= is not accepted here)\n",
            )
            .with_header(header("WWW-Authenticate", "Bearer")),
        )
    } else {
        None
    }
}

/// A `?source=` the daemon does not have: 404, naming the sources it has.
fn unknown_source(e: &crate::live::UnknownSource) -> Resp {
    text(404, "text/plain; charset=utf-8", format!("{e}\n"))
}

pub(super) fn reload(state: &State) -> Resp {
    control(
        state,
        Control::Reload,
        "reload",
        "not reloaded; the running configuration stays",
    )
}

/// `POST /api/model?name=NAME`: the body becomes model NAME's file, then a reload.
fn deploy(state: &State, req: &mut Request) -> Resp {
    let model = query(&req.url, "name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| crate::models::DEFAULT.to_owned());
    let bytes = std::mem::take(&mut req.body);
    control(
        state,
        |reply| Control::Deploy {
            model,
            bytes,
            reply,
        },
        "reload or model upload",
        "model not deployed; the running model stays",
    )
}

/// Hands a request to the daemon's main loop and answers with its outcome: 200 and what was
/// done, 422 and why nothing was.
fn control(
    state: &State,
    request: impl FnOnce(super::Reply) -> Control,
    what: &str,
    refused: &str,
) -> Resp {
    let Some(tx) = &state.reload else {
        return text(
            503,
            "text/plain; charset=utf-8",
            "reloading is not available\n",
        );
    };
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
    if tx.try_send(request(reply_tx)).is_err() {
        return text(
            503,
            "text/plain; charset=utf-8",
            format!("a {what} is already under way; try again\n"),
        );
    }
    match reply_rx.recv_timeout(std::time::Duration::from_secs(300)) {
        Ok(Ok(msg)) => text(200, "text/plain; charset=utf-8", format!("{msg}\n")),
        Ok(Err(why)) => text(
            422,
            "text/plain; charset=utf-8",
            format!("{refused}: {why}\n"),
        ),
        Err(_) => text(
            503,
            "text/plain; charset=utf-8",
            "the daemon is shutting down\n",
        ),
    }
}

pub(super) fn healthz(state: &State) -> Resp {
    let report = state
        .health
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if report.ok && report.degraded {
        text(
            200,
            "text/plain; charset=utf-8",
            format!(
                "ok (degraded: {})\n",
                report.reason.as_deref().unwrap_or("a source is down")
            ),
        )
    } else if report.ok {
        text(200, "text/plain; charset=utf-8", "ok\n")
    } else {
        text(
            503,
            "text/plain; charset=utf-8",
            format!(
                "unhealthy: {}\n",
                report.reason.as_deref().unwrap_or("unknown")
            ),
        )
    }
}

#[derive(Serialize)]
pub(super) struct Status {
    info: Info,
    health: Report,
    uptime_secs: f64,
    counters: crate::metrics::Snapshot,
}

pub(super) fn status(state: &State, started: Instant) -> Status {
    Status {
        info: state.info.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        health: state
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        uptime_secs: started.elapsed().as_secs_f64(),
        counters: state.metrics.snapshot(),
    }
}
