//! The benchmark's readable summary (`lookout bench` without `--json`).

use super::BenchReport;
use crate::model::profile;

/// The readable summary.
pub fn render_text(r: &BenchReport) -> String {
    let mut s = format!(
        "model {} input {:?}\n  kernels: {}\n  model only (1 thread): p50 {:.2} ms  p90 {:.2}  p99 {:.2}\n  start to first inference: {:.0} ms\n",
        r.model, r.input, r.kernels, r.model_ms.p50, r.model_ms.p90, r.model_ms.p99, r.start_to_first_inference_ms
    );
    if let Some(a) = &r.model_ms_assisted {
        s.push_str(&format!(
            "  model with an idle worker helping (pipeline.assist, 2 threads): p50 {:.2} ms  p90 {:.2}  p99 {:.2}  ({:.2}x one thread)\n",
            a.p50,
            a.p90,
            a.p99,
            if r.model_ms.p50 > 0.0 { a.p50 / r.model_ms.p50 } else { 0.0 }
        ));
    }
    for c in &r.comparisons {
        s.push_str(&format!(
            "  vs {} [{}]: model only p50 {:.2} ms = {:.2}x\n",
            c.model, c.kernels, c.model_ms.p50, c.ratio
        ));
    }
    if let Some(p) = &r.profile {
        s.push_str(&profile::render(p));
    }
    if r.workers == 0 {
        return s;
    }
    s.push_str("  preprocess (decode + resize + normalise), p50 ms and share of model time:\n");
    for p in &r.preprocess {
        s.push_str(&format!(
            "    {:>8} {:>4}x{:<4} {:>7.2} ms  {:>5.1}%\n",
            p.format,
            p.width,
            p.height,
            p.ms.p50,
            p.share_of_model * 100.0
        ));
    }
    s.push_str("  pipeline, 640x480 MJPEG in, p50 / p99 ms (queue wait, decode, resize + normalise, model):\n");
    for p in &r.pipeline {
        let rate = if p.source_fps > 0.0 {
            format!("{:.0} fps in", p.source_fps)
        } else {
            "unpaced".to_owned()
        };
        s.push_str(&format!(
            "    {:<12} {} workers, {:<11} {:>6.1} fps  e2e {:>6.2} / {:>6.2}  (wait {:.2}, decode {:.2}, resize {:.2}, model {:.2})  dropped {}, staleness {}, cpu {:.2} cores\n",
            p.name,
            p.workers,
            rate,
            p.fps,
            p.e2e_ms.p50,
            p.e2e_ms.p99,
            p.stages_ms.queue_wait.p50,
            p.stages_ms.decode.p50,
            p.stages_ms.preprocess.p50,
            p.stages_ms.infer.p50,
            p.dropped,
            p.max_staleness,
            p.cpu_cores
        ));
    }
    if let Some(f) = &r.sources {
        s.push_str(&format!(
            "  {} sources, 640x480 MJPEG, one pool of {} workers, {:.1} s per run; per source: fps, e2e p50 / p99 ms, dropped, share of equal:\n",
            f.sources, f.workers, f.secs
        ));
        for run in [&f.baseline, &f.paced, &f.overload, &f.failing] {
            s.push_str(&format!(
                "    {:<12} {:>5.1} fps in each, {:>6.1} fps out\n",
                run.name, run.source_fps, run.fps
            ));
            for p in &run.per_source {
                s.push_str(&format!(
                    "      {:<10} {:>6.1} fps  e2e {:>6.2} / {:>6.2}  dropped {:>4}  share {:.2}  errors {}\n",
                    p.name, p.fps, p.e2e_ms.p50, p.e2e_ms.p99, p.dropped, p.share_of_equal, p.source_errors
                ));
            }
        }
        s.push_str(&format!(
            "    paced e2e p50 slowest / one source {:.2}x; overload fairness (smallest / largest share) {:.2}; others' fps with one failing / without {:.3}\n",
            f.paced_e2e_p50_ratio, f.fairness, f.failing_others_fps_ratio
        ));
    }
    if let Some(f) = &r.regions {
        s.push_str(&format!(
            "  regions: {}x{} JPEG, {}x{} grid; batch: {}\n",
            f.width, f.height, f.grid[0], f.grid[1], f.batch_from
        ));
        let timing = |name: &str, t: &super::RegionsTiming| {
            format!(
                "    {name:<8} batch {:>2}: model {:>7.2} ms, whole frame {:>7.2} ms (p50)\n",
                t.batch, t.model_ms.p50, t.total_ms.p50
            )
        };
        if let Some(b) = &f.batched {
            s.push_str(&timing("batched", b));
        }
        s.push_str(&timing("single", &f.single));
        for d in &f.window_decode {
            s.push_str(&format!(
                "    JPEG window {:?} ({}x{} px decoded): {:.2} ms vs full {:.2} ms = {:.2}x\n",
                d.region, d.decoded[0], d.decoded[1], d.window_ms, d.full_ms, d.ratio
            ));
        }
    }
    s.push_str(&format!("  peak RSS {:.1} MB\n", r.rss_mb));
    if let (Some(p), Some(x)) = (&r.peer, &r.ratios) {
        s.push_str(&format!(
            "  peer ({}, {} threads): model p50 {:.2} ms (1 thread; {:.2} ms with {}), e2e p50 {:.2} ms, {:.1} fps, RSS {:.1} MB\n  ratios ours/peer: model {:.2}x  e2e {:.2}x  fps {:.2}x\n",
            p.runtime, p.threads, p.model_ms.p50, p.model_ms_threads.p50, p.threads, p.e2e_ms.p50, p.fps, p.rss_mb, x.model_p50, x.e2e_p50, x.fps
        ));
    }
    if !r.checks.is_empty() {
        s.push_str("  targets (set for MobileNetV2 224x224 on a 2-core machine; the ratios mean little for much smaller models):\n");
        for c in &r.checks {
            let bound = match c.floor {
                Some(f) if !c.met && f > c.target => {
                    format!("; out of reach here: the JPEG entropy decoding alone makes it {f:.2}")
                }
                Some(f) => format!("; JPEG decode floor {f:.2}"),
                None => String::new(),
            };
            s.push_str(&format!(
                "    {:<48} {:>8.2}  (target {} {}) {}{bound}\n",
                c.name,
                c.value,
                c.op,
                c.target,
                if c.met { "met" } else { "NOT MET" }
            ));
        }
    }
    s
}
