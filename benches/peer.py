"""The peer baseline for `lookout bench --peer`: what a user writes by hand in Python.

For each JPEG frame in --frames: decode with Pillow, resize with Pillow's BILINEAR filter,
normalise with numpy, run onnxruntime; timed per stage. Prints one JSON object with the same
keys lookout reports: model_ms (one thread, like lookout's model-only figure) and e2e_ms
{p50, p90, p99}, fps, rss_mb, and model_ms_threads (model only with --threads threads, the
setting of the end-to-end loop).

Needs numpy, pillow and onnxruntime, pinned in requirements.txt at the repository root:
python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
"""
import argparse
import glob
import io
import json
import os
import resource
import time

import numpy as np
import onnxruntime as ort
from PIL import Image


def pct(samples):
    s = sorted(samples)
    if not s:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0}

    def at(q):
        i = min(max(int(np.ceil(q * len(s))), 1), len(s)) - 1
        return s[i] * 1000.0

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99)}


def peak_rss_mb():
    """VmHWM of this process. (getrusage's ru_maxrss is no good here: after fork + exec from
    lookout bench, Linux reports the parent's high-water mark when it is the larger.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--size", nargs=2, type=int, required=True)
    ap.add_argument("--mean", default="0,0,0")
    ap.add_argument("--std", default="1,1,1")
    ap.add_argument("--scale", type=float, default=255.0)
    ap.add_argument("--layout", default="nchw")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    a = ap.parse_args()

    def session(threads):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])

    sess = session(a.threads)
    one = session(1)
    name = sess.get_inputs()[0].name
    mean = np.array([float(v) for v in a.mean.split(",")], dtype=np.float32)
    std = np.array([float(v) for v in a.std.split(",")], dtype=np.float32)
    w, h = a.size
    frames = [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(a.frames, "*.jpg")))]

    def prepare(data):
        img = Image.open(io.BytesIO(data)).convert("RGB").resize((w, h), Image.BILINEAR)
        x = (np.asarray(img, dtype=np.float32) / a.scale - mean) / std
        if a.layout == "nchw":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None], dtype=np.float32)

    x = prepare(frames[0])

    def model_only(s):
        for _ in range(a.warmup):
            s.run(None, {name: x})
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            s.run(None, {name: x})
            times.append(time.perf_counter() - t0)
        return times

    model = model_only(one)
    model_threads = model_only(sess)

    e2e = []
    t_all = time.perf_counter()
    for data in frames:
        t0 = time.perf_counter()
        sess.run(None, {name: prepare(data)})
        e2e.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_all

    print(json.dumps({
        "runtime": "onnxruntime " + ort.__version__ + " + Pillow " + Image.__version__,
        "threads": a.threads,
        "model_ms": pct(model),
        "model_ms_threads": pct(model_threads),
        "e2e_ms": pct(e2e),
        "fps": len(frames) / wall,
        "rss_mb": peak_rss_mb(),
    }))


if __name__ == "__main__":
    main()
