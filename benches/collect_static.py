#!/usr/bin/env python3
"""Collect on a static scene: does `[collect]` stay quiet when nothing changes?

    python3 benches/collect_static.py --minutes 10 [--bin target/debug/lookout] [--fps 30]
        [--noise 6] [--assets DIR]

The daemon runs the PlantVillage CNN (test assets) on a `pipe` source: ffmpeg showing one leaf
photo at 30 fps with fresh sensor-like noise in every frame (`noise=alls=6:allf=t`, so no two
frames are byte-identical), and `[collect]` set to keep every frame it is offered
(`below_score = 1.0`: the worst case, where only the near-duplicate check stands between the
camera and the disk), bounded to 20 MB. Every 30 s the script reads /metrics and the folder's
size on disk, prints a row, and at the end reports the frames kept after the first minute per
minute (target: under 1) and the largest folder size seen (target: within max_mb). Exits 1 when
either target is missed. Standard library only.
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

MAX_MB = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(base):
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$', line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def kept(m):
    return sum(v for k, v in m.items() if k.startswith("lookout_collect_kept_total"))


def folder_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--bin", default=os.path.join(here, "..", "target", "debug", "lookout"))
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--noise", type=int, default=6, help="ffmpeg noise strength per frame (alls)")
    ap.add_argument("--assets", default=os.environ.get("LOOKOUT_ASSETS", os.path.join(here, "..", "..", "shared", "assets")))
    args = ap.parse_args()
    photo = os.path.join(args.assets, "images", "plant", "Potato___healthy")
    photo = os.path.join(photo, sorted(os.listdir(photo))[0])
    work = tempfile.mkdtemp(prefix="lookout-collect-static-")
    data = os.path.join(work, "dataset")
    port = free_port()
    conf = os.path.join(work, "lookout.toml")
    ffmpeg = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-loop", "1", "-i", photo,
              "-vf", f"noise=alls={args.noise}:allf=t,fps={args.fps}", "-f", "mjpeg", "-q:v", "3", "-"]
    with open(conf, "w") as f:
        f.write(f"""
[model]
path = {os.path.join(args.assets, "models", "plant-cnn96.onnx")!r}
labels = {os.path.join(args.assets, "models", "plant15.labels.txt")!r}
[model.preprocess]
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
[source]
type = "pipe"
command = [{", ".join(repr(a) for a in ffmpeg)}]
[collect]
dir = {data!r}
below_score = 1.0
max_mb = {MAX_MB}
[[sinks]]
type = "log"
[log]
summary_secs = 0
level = "warn"
[http]
listen = "127.0.0.1:{port}"
""".replace("'", '"'))
    log = open(os.path.join(work, "lookout.log"), "w")
    proc = subprocess.Popen([args.bin, "run", "--config", conf], stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                metrics(base)
                break
            except OSError:
                time.sleep(0.1)
        start = time.monotonic()
        rows = []
        print(f"{'min':>5} {'frames':>8} {'kept':>5} {'near dup':>9} {'busy':>6} {'folder MB':>10}")
        while True:
            t = (time.monotonic() - start) / 60
            m = metrics(base)
            row = (t, m.get("lookout_frames_classified_total", 0), kept(m),
                   m.get("lookout_collect_near_duplicates_total", 0),
                   m.get("lookout_collect_busy_total", 0), folder_bytes(data) / 1e6)
            rows.append(row)
            print(f"{row[0]:5.1f} {row[1]:8.0f} {row[2]:5.0f} {row[3]:9.0f} {row[4]:6.0f} {row[5]:10.2f}", flush=True)
            if t >= args.minutes or proc.poll() is not None:
                break
            time.sleep(min(30, max(1, (args.minutes - t) * 60)))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if proc.returncode not in (0, -15, 143) and rows[-1][0] < args.minutes:
        print(f"lookout exited early ({proc.returncode}); see {work}/lookout.log", file=sys.stderr)
        return 1
    after_first = [r for r in rows if r[0] >= 1.0]
    if not after_first:
        print("run for more than a minute to measure the rate after the first", file=sys.stderr)
        return 1
    minutes = rows[-1][0] - after_first[0][0]
    rate = (rows[-1][2] - after_first[0][2]) / max(minutes, 1e-9)
    biggest = max(r[5] for r in rows)
    frames = rows[-1][1]
    print(f"\nframes classified {frames:.0f} ({frames / (rows[-1][0] * 60):.1f}/s); kept in the first minute "
          f"{after_first[0][2]:.0f}; kept after it {rate:.2f} per minute (target < 1); "
          f"largest folder {biggest:.2f} MB (bound {MAX_MB} MB)")
    ok = rate < 1 and biggest <= MAX_MB
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
