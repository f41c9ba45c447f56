//! `/metrics` in the Prometheus text format: counters, stage latency histograms, per-sink
//! figures, the live view's per-source and per-region figures, and the process's own.

use std::fmt::Write as _;
use std::time::Instant;

use super::State;
use crate::metrics::Histogram;

/// Prometheus bucket bounds, seconds.
const LE: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

pub(super) fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &str,
    h: &Histogram,
    head: bool,
) {
    if head {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    }
    let cumulative = h.cumulative();
    let sep = if labels.is_empty() { "" } else { "," };
    for le in LE {
        // Observations in buckets whose upper bound is within `le`: a lower bound of the true
        // count, exact to the ~10% bucket width.
        let n = cumulative
            .iter()
            .take_while(|(ms, _)| *ms <= le * 1000.0 + 1e-9)
            .last()
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        h.count()
    );
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        out,
        "{name}_sum{braces} {}",
        h.mean_ms() * h.count() as f64 / 1000.0
    );
    let _ = writeln!(out, "{name}_count{braces} {}", h.count());
}

pub(super) fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

/// The per-source families, one series per source (label `source`).
fn source_metrics(o: &mut String, sources: &[std::sync::Arc<crate::metrics::SourceMetrics>]) {
    use std::sync::atomic::Ordering::Relaxed;
    type Get = fn(&crate::metrics::SourceMetrics) -> u64;
    let families: [(&str, &str, &str, Get); 8] = [
        (
            "lookout_source_up",
            "gauge",
            "1 while the source is open and delivering, 0 while it is reopened.",
            |s| s.up.load(Relaxed),
        ),
        (
            "lookout_source_frames_captured_total",
            "counter",
            "Frames delivered, per source.",
            |s| s.captured.load(Relaxed),
        ),
        (
            "lookout_source_frames_dropped_total",
            "counter",
            "Frames dropped unprocessed, per source.",
            |s| s.dropped.load(Relaxed),
        ),
        (
            "lookout_source_frames_classified_total",
            "counter",
            "Frames classified, per source.",
            |s| s.inferred.load(Relaxed),
        ),
        (
            "lookout_source_frames_failed_total",
            "counter",
            "Frames that could not be decoded or classified, per source.",
            |s| s.failed.load(Relaxed),
        ),
        (
            "lookout_source_errors_by_source_total",
            "counter",
            "Source failures and stalls, per source.",
            |s| s.source_errors.load(Relaxed),
        ),
        (
            "lookout_source_reconnects_by_source_total",
            "counter",
            "Successful reopenings, per source.",
            |s| s.reconnects.load(Relaxed),
        ),
        (
            "lookout_source_skipped_bytes_by_source_total",
            "counter",
            "Bytes read that made no frame, per source.",
            |s| s.input.skipped_bytes.load(Relaxed),
        ),
    ];
    for (name, kind, help, get) in families {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in sources {
            let _ = writeln!(o, "{name}{{source=\"{}\"}} {}", escape(&s.name), get(s));
        }
    }
    let name = "lookout_source_frames_rejected_by_source_total";
    let _ = writeln!(
        o,
        "# HELP {name} Frames the source refused before handing them on, per source and reason.\n# TYPE {name} counter"
    );
    for s in sources {
        for why in crate::metrics::Rejected::ALL {
            let _ = writeln!(
                o,
                "{name}{{source=\"{}\",reason=\"{}\"}} {}",
                escape(&s.name),
                why.label(),
                s.input.counter(why).load(Relaxed)
            );
        }
    }
}

/// The families kept by the live view, per source and region: events, region
/// classifications, and the latest best score (label `label`: its class). A source without
/// regions has series without a `region` label; one with regions has one series per region.
fn live_metrics(o: &mut String, sources: &[crate::live::SourceCounts]) {
    let place = |s: &crate::live::SourceCounts, region: Option<&str>| match region {
        None => format!("source=\"{}\"", escape(&s.name)),
        Some(r) => format!("source=\"{}\",region=\"{}\"", escape(&s.name), escape(r)),
    };
    let name = "lookout_source_events_total";
    let _ = writeln!(
        o,
        "# HELP {name} Events, per source (and region, for a source with regions).\n# TYPE {name} counter"
    );
    for s in sources {
        if s.regions.is_empty() {
            let _ = writeln!(o, "{name}{{{}}} {}", place(s, None), s.frame_events);
        }
        for r in &s.regions {
            let _ = writeln!(o, "{name}{{{}}} {}", place(s, Some(&*r.name)), r.events);
        }
    }
    let name = "lookout_region_classifications_total";
    let _ = writeln!(
        o,
        "# HELP {name} Region crops classified, per source and region.\n# TYPE {name} counter"
    );
    for s in sources {
        for r in &s.regions {
            let _ = writeln!(o, "{name}{{{}}} {}", place(s, Some(&*r.name)), r.classified);
        }
    }
    let name = "lookout_latest_top_score";
    let _ = writeln!(
        o,
        "# HELP {name} Best score of the latest classification, per source (and region); label: its class.\n# TYPE {name} gauge"
    );
    for s in sources {
        let whole = s.top.as_ref().map(|t| (None, t));
        let regions = s
            .regions
            .iter()
            .filter_map(|r| r.top.as_ref().map(|t| (Some(&*r.name), t)));
        for (region, top) in whole.into_iter().chain(regions) {
            let _ = writeln!(
                o,
                "{name}{{{},label=\"{}\"}} {}",
                place(s, region),
                escape(&top.label),
                top.score
            );
        }
    }
}

/// The drift figures, per source (and region) and model ([`crate::drift`]): a series appears
/// once its figure is known (PSI: the reference complete and the window full).
fn drift_metrics(o: &mut String, figures: &[crate::drift::Figures]) {
    type Get = fn(&crate::drift::Figures) -> Option<f64>;
    let families: [(&str, &str, Get); 3] = [
        (
            "lookout_drift_psi",
            "Population stability index of the recent top-1 label distribution against the reference, per source (and region) and model; over 0.25 is a large shift.",
            |f| f.psi,
        ),
        (
            "lookout_mean_top1_score",
            "Mean top-1 score of the recent window, per source (and region) and model.",
            |f| f.mean_score,
        ),
        (
            "lookout_drift_mean_score_drop",
            "Reference mean top-1 score minus the recent window's, per source (and region) and model.",
            |f| f.mean_score_drop,
        ),
    ];
    for (name, help, get) in families {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
        for f in figures {
            let Some(v) = get(f) else { continue };
            let region = f
                .region
                .as_deref()
                .map_or_else(String::new, |r| format!(",region=\"{}\"", escape(r)));
            let _ = writeln!(
                o,
                "{name}{{source=\"{}\"{region},model=\"{}\"}} {v}",
                escape(&f.source),
                escape(&f.model)
            );
        }
    }
}

/// `[collect]`: what the collector kept, skipped and deleted, and what the bounds hold.
fn collect_metrics(o: &mut String, d: &crate::collect::Dataset) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &d.stats;
    let _ = writeln!(
        o,
        "# HELP lookout_collect_kept_total Frames kept for labelling, by why (low_score, small_margin, sample, event, import).\n# TYPE lookout_collect_kept_total counter"
    );
    for (why, n) in crate::collect::Why::ALL.iter().zip(&s.kept) {
        let _ = writeln!(
            o,
            "lookout_collect_kept_total{{why=\"{}\"}} {}",
            why.as_str(),
            n.load(Relaxed)
        );
    }
    for (name, help, v) in [
        (
            "lookout_collect_near_duplicates_total",
            "Frames not kept: within min_distance of one kept recently at the same source and region.",
            &s.near_duplicates,
        ),
        (
            "lookout_collect_busy_total",
            "Frames not looked at: the collector was still busy with earlier ones.",
            &s.busy,
        ),
        (
            "lookout_collect_evicted_total",
            "Collected frames deleted by max_files or max_mb (oldest unreviewed first).",
            &s.evicted,
        ),
        (
            "lookout_collect_errors_total",
            "Frames that could not be decoded, encoded or written.",
            &s.errors,
        ),
    ] {
        counter(o, name, help, v.load(Relaxed));
    }
    let (files, bytes) = d.evictable();
    gauge(
        o,
        "lookout_collect_files",
        "Collected frames not yet reviewed (what max_files bounds).",
        files as f64,
    );
    gauge(
        o,
        "lookout_collect_bytes",
        "Bytes of collected frames not yet reviewed (what max_mb bounds).",
        bytes as f64,
    );
}

pub(super) fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

pub(super) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) fn prometheus(state: &State, started: Instant) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &state.metrics;
    let info = state.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut o = String::with_capacity(16 * 1024);
    let _ = writeln!(
        o,
        "# HELP lookout_info Static facts about this daemon.\n# TYPE lookout_info gauge\nlookout_info{{version=\"{}\",device=\"{}\",source=\"{}\",model=\"{}\"}} 1",
        info.version,
        escape(&info.device),
        escape(&info.source),
        escape(&info.model)
    );
    let health = state.health.lock().unwrap_or_else(|e| e.into_inner()).ok;
    gauge(
        &mut o,
        "lookout_healthy",
        "1 while frames are classified (what /healthz reports).",
        if health { 1.0 } else { 0.0 },
    );
    gauge(
        &mut o,
        "lookout_uptime_seconds",
        "Seconds since the daemon started.",
        started.elapsed().as_secs_f64(),
    );
    counter(
        &mut o,
        "lookout_frames_captured_total",
        "Frames delivered by the source.",
        m.captured.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_frames_dropped_total",
        "Frames dropped unprocessed because workers were busy (oldest first).",
        m.dropped.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_frames_classified_total",
        "Frames classified.",
        m.inferred.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_frames_failed_total",
        "Frames that could not be decoded or classified.",
        m.failed.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_source_errors_total",
        "Source failures and stalls.",
        m.source_errors.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_source_reconnects_total",
        "Successful reopenings of the source.",
        m.reconnects.load(Relaxed),
    );
    let _ = writeln!(
        o,
        "# HELP lookout_source_frames_rejected_total Frames the source refused before handing them on, by reason (oversized: over max_frame_bytes; malformed: unreadable framing).\n# TYPE lookout_source_frames_rejected_total counter"
    );
    for why in crate::metrics::Rejected::ALL {
        let _ = writeln!(
            o,
            "lookout_source_frames_rejected_total{{reason=\"{}\"}} {}",
            why.label(),
            m.input.counter(why).load(Relaxed)
        );
    }
    counter(
        &mut o,
        "lookout_source_skipped_bytes_total",
        "Bytes read from the source that made no frame (garbage between images, rejected frames).",
        m.input.skipped_bytes.load(Relaxed),
    );
    source_metrics(&mut o, &m.sources());
    live_metrics(&mut o, &state.live.counts());
    drift_metrics(&mut o, &m.drift.all());
    if let Some(d) = state
        .collect
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        collect_metrics(&mut o, d);
    }
    counter(
        &mut o,
        "lookout_events_total",
        "Events produced by the rules.",
        m.events.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_reloads_total",
        "Configuration reloads applied.",
        m.reloads.load(Relaxed),
    );
    counter(
        &mut o,
        "lookout_reload_failures_total",
        "Configuration reloads refused (the running configuration was kept).",
        m.reload_failures.load(Relaxed),
    );
    for (name, help, h) in [
        (
            "lookout_queue_wait_seconds",
            "Capture to a worker taking the frame.",
            &m.queue_wait,
        ),
        ("lookout_decode_seconds", "Frame decode to RGB.", &m.decode),
        (
            "lookout_preprocess_seconds",
            "Resize and normalise to the model input.",
            &m.preprocess,
        ),
        ("lookout_inference_seconds", "Model run.", &m.infer),
        (
            "lookout_frame_seconds",
            "Capture to classification done.",
            &m.total,
        ),
        (
            "lookout_event_latency_seconds",
            "Capture to event.",
            &m.event_latency,
        ),
    ] {
        histogram(&mut o, name, help, "", h, true);
    }
    for (i, (model, h)) in m.models.all().iter().enumerate() {
        histogram(
            &mut o,
            "lookout_model_inference_seconds",
            "Model run, per model (`default` is [model]).",
            &format!("model=\"{}\"", escape(model)),
            h,
            i == 0,
        );
    }
    for (name, help, get) in [
        (
            "lookout_sink_sent_total",
            "Events delivered, per sink.",
            0usize,
        ),
        (
            "lookout_sink_failed_total",
            "Deliveries that failed after retries, per sink.",
            1,
        ),
        (
            "lookout_sink_dropped_total",
            "Events dropped because the sink's queue was full, per sink.",
            2,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in &m.sinks() {
            let v = [&s.sent, &s.failed, &s.dropped][get].load(Relaxed);
            let _ = writeln!(o, "{name}{{sink=\"{}\"}} {v}", escape(&s.name));
        }
    }
    link_metrics(&mut o, &m.sinks());
    for (i, s) in m.sinks().iter().enumerate() {
        histogram(
            &mut o,
            "lookout_sink_latency_seconds",
            "Capture to delivery, per sink.",
            &format!("sink=\"{}\"", escape(&s.name)),
            &s.latency,
            i == 0,
        );
    }
    let p = crate::health::process_stats();
    gauge(
        &mut o,
        "lookout_process_resident_memory_bytes",
        "Resident set size.",
        p.rss_bytes as f64,
    );
    gauge(
        &mut o,
        "lookout_process_open_fds",
        "Open file descriptors.",
        p.open_fds as f64,
    );
    gauge(
        &mut o,
        "lookout_process_threads",
        "Threads.",
        p.threads as f64,
    );
    o
}

/// The device-link counters of the sinks that have one (modbus): writes, failures, connects,
/// whether connected, and the write latency.
fn link_metrics(o: &mut String, sinks: &[std::sync::Arc<crate::metrics::SinkMetrics>]) {
    use std::sync::atomic::Ordering::Relaxed;
    let links: Vec<_> = sinks
        .iter()
        .filter_map(|s| s.link().map(|l| (escape(&s.name), l)))
        .collect();
    if links.is_empty() {
        return;
    }
    for (name, help, kind, get) in [
        (
            "lookout_sink_link_writes_total",
            "Write requests the device acknowledged, per sink with a device link.",
            "counter",
            0usize,
        ),
        (
            "lookout_sink_link_write_failures_total",
            "Write requests that failed (no connection, timeout, exception), per sink.",
            "counter",
            1,
        ),
        (
            "lookout_sink_link_connects_total",
            "Connections to the device (re)established, per sink.",
            "counter",
            2,
        ),
        (
            "lookout_sink_link_connected",
            "1 while the sink is connected to its device, else 0.",
            "gauge",
            3,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (sink, l) in &links {
            let v = [&l.writes, &l.write_failures, &l.connects, &l.connected][get].load(Relaxed);
            let _ = writeln!(o, "{name}{{sink=\"{sink}\"}} {v}");
        }
    }
    for (i, (sink, l)) in links.iter().enumerate() {
        histogram(
            o,
            "lookout_sink_link_write_seconds",
            "Time of each acknowledged write request, per sink with a device link.",
            &format!("sink=\"{sink}\""),
            &l.write_latency,
            i == 0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_families_carry_source_region_and_model() {
        let f = |region: Option<&str>, psi: Option<f64>| crate::drift::Figures {
            source: "lanes".into(),
            region: region.map(str::to_owned),
            model: "default".into(),
            reference: "frames".into(),
            reference_frames: 10,
            window_frames: 10,
            psi,
            mean_score: Some(0.5),
            reference_mean_score: None,
            mean_score_drop: None,
        };
        let mut out = String::new();
        drift_metrics(&mut out, &[f(Some("left"), Some(0.3)), f(None, None)]);
        for line in [
            "lookout_drift_psi{source=\"lanes\",region=\"left\",model=\"default\"} 0.3",
            "lookout_mean_top1_score{source=\"lanes\",region=\"left\",model=\"default\"} 0.5",
            "lookout_mean_top1_score{source=\"lanes\",model=\"default\"} 0.5",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in:\n{out}");
        }
        assert!(
            !out.contains("lookout_drift_psi{source=\"lanes\",model"),
            "no PSI before it is known:\n{out}"
        );
        assert!(!out.contains("lookout_drift_mean_score_drop{"), "{out}");
    }

    #[test]
    fn live_families_carry_source_and_region_labels() {
        use crate::event::TopEntry;
        use crate::live::{Live, LiveSource};
        use crate::source::regions::Region;
        let region = |name: &str, x: f64| Region {
            name: name.into(),
            rect: [x, 0.0, 0.5, 1.0],
            model: "default".into(),
        };
        let live = Live::with_sources(&[
            LiveSource {
                name: "lanes".into(),
                regions: vec![region("left", 0.0), region("right", 0.5)],
                key: "1".into(),
            },
            LiveSource {
                name: "cam".into(),
                regions: Vec::new(),
                key: "1".into(),
            },
        ]);
        let top = |label: &str, score: f32| {
            vec![TopEntry {
                index: 1,
                label: label.into(),
                score,
            }]
        };
        live.classified("lanes", Some("left"), 0, 1, "t", &top("dent", 0.75), None);
        live.classified("cam", None, 0, 1, "t", &top("ok", 0.5), None);
        let mut e = crate::event::Event::example();
        e.source = "lanes".into();
        e.region = Some("left".into());
        live.event(&std::sync::Arc::new(e));
        let mut out = String::new();
        live_metrics(&mut out, &live.counts());
        for line in [
            "lookout_source_events_total{source=\"lanes\",region=\"left\"} 1",
            "lookout_source_events_total{source=\"lanes\",region=\"right\"} 0",
            "lookout_source_events_total{source=\"cam\"} 0",
            "lookout_region_classifications_total{source=\"lanes\",region=\"left\"} 1",
            "lookout_region_classifications_total{source=\"lanes\",region=\"right\"} 0",
            "lookout_latest_top_score{source=\"lanes\",region=\"left\",label=\"dent\"} 0.75",
            "lookout_latest_top_score{source=\"cam\",label=\"ok\"} 0.5",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in:\n{out}");
        }
        assert!(
            !out.contains("region=\"right\",label"),
            "no score before a classification"
        );
    }

    #[test]
    fn histogram_export_is_cumulative_and_complete() {
        let h = Histogram::default();
        for ms in [0.5, 3.0, 3.0, 40.0, 4000.0, 90_000.0] {
            h.record(std::time::Duration::from_secs_f64(ms / 1000.0));
        }
        let mut out = String::new();
        histogram(&mut out, "x_seconds", "help", "", &h, true);
        let value = |le: &str| -> u64 {
            out.lines()
                .find(|l| l.starts_with(&format!("x_seconds_bucket{{le=\"{le}\"}}")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .expect("bucket line")
        };
        assert_eq!(value("0.001"), 1);
        assert_eq!(value("0.005"), 3);
        assert_eq!(value("0.05"), 4);
        assert_eq!(value("5"), 5);
        assert_eq!(value("30"), 5);
        assert_eq!(value("+Inf"), 6);
        assert!(out.contains("x_seconds_count 6"), "{out}");
    }
}
