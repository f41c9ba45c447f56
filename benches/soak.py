#!/usr/bin/env python3
"""Soak test: runs `lookout run` at full load for N minutes and reports whether it leaks.

    python3 benches/soak.py --minutes 10 [--bin target/release/lookout] [--workers 0] [--model F.onnx]

The daemon runs the bundled model on the synthetic source with no frame pacing (fps = 0, every
core busy), a rule that fires often, and three sinks writing real files: jsonl (rotating),
snapshot (JPEG per event, retention 200 files) and log. Its HTTP server is on a free loopback
port; every 10 s this script reads /metrics: resident memory, open file descriptors, threads and
the frame/event counters. It prints a table, and at the end the values after warm-up (the
first minute) against the end, and exits 1 if memory grew by more than 10% and 8 MB, or file
descriptors or threads grew (their last three readings all above the first minute's highest;
single readings include transient ones such as the /metrics request itself). Standard library
only.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(base):
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def peak_rss_mb(pid):
    """The process's peak resident memory (VmHWM), MB (10^6 bytes, as the rss column); 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--bin", default=None, help="lookout binary (default: target/release/lookout, else target/debug/lookout)")
    ap.add_argument("--workers", type=int, default=0, help="[pipeline] workers (0 = one per core)")
    ap.add_argument("--model", default=None, help="ONNX model instead of the bundled one (its rule then watches its second label, at any score, on 640x480 frames)")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = args.bin or next(
        (p for p in (os.path.join(root, "target/release/lookout"), os.path.join(root, "target/debug/lookout")) if os.path.exists(p)),
        None,
    )
    if not binary:
        sys.exit("soak.py: no lookout binary; build one (cargo build --release) or pass --bin")

    work = tempfile.mkdtemp(prefix="lookout-soak-")
    port = free_port()
    conf = os.path.join(work, "soak.toml")
    if args.model:
        model = f'[model]\npath = "{os.path.abspath(args.model)}"\n'
        size = "width = 640\nheight = 480\n"
        rule = 'name = "second-label"\nlabels = ["class_1"]\nmin_score = 0.0'
    else:
        model, size = "", ""
        rule = 'name = "any-defect"\nlabels = ["scratch", "dent", "missing"]\nmin_score = 0.5'
    with open(conf, "w") as f:
        f.write(f"""
device_id = "soak"
{model}[source]
type = "synthetic"
fps = 0
{size}[pipeline]
workers = {args.workers}
[[rules]]
{rule}
frames = 1
cooldown_secs = 0.2
[[sinks]]
type = "log"
level = "debug"
[[sinks]]
type = "jsonl"
path = "{work}/events.jsonl"
max_bytes = 1000000
keep = 2
[[sinks]]
type = "snapshot"
dir = "{work}/snapshots"
max_files = 200
[http]
listen = "127.0.0.1:{port}"
[log]
level = "info"
summary_secs = 60
""")
    log = open(os.path.join(work, "lookout.log"), "w")
    proc = subprocess.Popen([binary, "run", "--config", conf], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                metrics(base)
                break
            except OSError:
                if proc.poll() is not None:
                    sys.exit(f"soak.py: lookout exited with {proc.returncode}; see {work}/lookout.log")
                time.sleep(0.1)
        print(f"soak: {binary}, {args.minutes:g} min at full load, work dir {work}")
        print(f"{'min':>6} {'rss MB':>8} {'fds':>5} {'threads':>7} {'frames':>9} {'fps':>7} {'events':>8} {'dropped':>8} {'failed':>7}")
        start = time.time()
        samples = []
        last = None
        while True:
            now = time.time()
            m = metrics(base)
            samples.append((now - start, m))
            fps = 0.0
            if last:
                fps = (m["lookout_frames_classified_total"] - last[1]["lookout_frames_classified_total"]) / max(now - last[0], 1e-9)
            last = (now, m)
            print(f"{(now - start) / 60:6.1f} {m['lookout_process_resident_memory_bytes'] / 1e6:8.1f} "
                  f"{m['lookout_process_open_fds']:5.0f} {m['lookout_process_threads']:7.0f} "
                  f"{m['lookout_frames_classified_total']:9.0f} {fps:7.1f} {m['lookout_events_total']:8.0f} "
                  f"{m['lookout_frames_dropped_total']:8.0f} {m['lookout_frames_failed_total']:7.0f}", flush=True)
            if now - start >= args.minutes * 60:
                break
            time.sleep(10)
        if proc.poll() is not None:
            sys.exit(f"soak.py: lookout died with {proc.returncode}; see {work}/lookout.log")
    finally:
        peak = peak_rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "killed after 30 s"
        log.close()
    # File descriptors and threads come and go (an HTTP request, a snapshot being written, a
    # rotated file): growth means the lowest of the last three readings is above the highest
    # reading of the first minute.
    warm = next((m for t, m in samples if t >= 60), samples[0][1])
    end = samples[-1][1]
    first = [m for t, m in samples if t <= 60] or [samples[0][1]]
    tail = [m for _, m in samples[-3:]]
    steady = lambda key, ms, f: f(m[key] for m in ms)
    rss0, rss1 = warm["lookout_process_resident_memory_bytes"], end["lookout_process_resident_memory_bytes"]
    print(f"\nafter warm-up -> end: rss {rss0 / 1e6:.1f} -> {rss1 / 1e6:.1f} MB, "
          f"fds {warm['lookout_process_open_fds']:.0f} -> {end['lookout_process_open_fds']:.0f}, "
          f"threads {warm['lookout_process_threads']:.0f} -> {end['lookout_process_threads']:.0f}; "
          f"{end['lookout_frames_classified_total']:.0f} frames, {end['lookout_events_total']:.0f} events; "
          f"peak rss {peak:.1f} MB; exit {code}")
    grew = []
    if rss1 > rss0 * 1.10 and rss1 - rss0 > 8e6:
        grew.append("memory")
    for key, what in (("lookout_process_open_fds", "file descriptors"), ("lookout_process_threads", "threads")):
        if steady(key, tail, min) > steady(key, first, max):
            grew.append(what)
    if grew or code != 0:
        print("soak: FAILED: grew: " + ", ".join(grew) + f"; exit code {code}")
        sys.exit(1)
    print("soak: ok (no growth)")


if __name__ == "__main__":
    main()
