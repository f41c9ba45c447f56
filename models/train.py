#!/usr/bin/env python3
"""Trains lookout's bundled default model (models/default.onnx) from scratch.

The model is a small int8 (QDQ) CNN that sorts a conveyor-belt frame into
ok / scratch / dent / missing. Every training, calibration and test image
is rendered by src/source/scene.rs, the same renderer the daemon's
`synthetic` frame source uses, so the daemon can demonstrate itself and
measure its own accuracy with no camera.

Reproduce (from the repository root; offline except for crates.io):

    pip install numpy onnx onnxruntime pillow      # torch is not needed
    python3 models/train.py                          # ~20 min on 2 busy cores

What it does, step by step:
  1. Writes a scratch crate to /tmp/scene-dump (outside the repo, own
     target dir; override with --work) whose main.rs includes the renderer
     with `#[path = ".../src/source/scene.rs"] mod scene;`, copies the repo's
     Cargo.lock so `image` resolves to the same version, and builds it with
     `cargo build --release` (image with only the `png` feature).
  2. Runs it to write 320x240 PNGs plus labels.csv for three disjoint seed
     sets: train (seed base 1), calib (base 2) and test (base 3). Training
     frames come in matched quadruplets: image i of every class uses seed
     (base << 32) + i, so the four show the same scene and differ only in
     the defect (the renderer draws the defect last). Calibration and test
     frames are independent: image i of class c uses (base << 32) + 4*i + c.
     It also times the renderer (`scene-dump bench`).
  3. Preprocesses exactly as the daemon does: the whole frame is stretched
     to 64x64 with Pillow's Image.resize((64, 64), Image.BILINEAR)
     (antialiased bilinear; the daemon's resampler is bit-exact with it), RGB, value = pixel / 255, then
     (value - MEAN) / STD per channel, NCHW.
  4. Trains a 4-conv CNN with batch norm in plain numpy (im2col
     forward/backward, Adam, cosine learning rate, random flips), with fixed
     seeds; `--resume` checkpoints every epoch so a killed run can go on.
  5. Exports it with onnx.helper, batch norm folded into the convolutions
     (opset 13: Conv, Relu, GlobalAveragePool, GlobalMaxPool, Concat,
     Flatten, Gemm; input `input` float32 [1,3,64,64], output `logits`
     float32 [1,4], no Softmax), checks it, quantizes it with
     onnxruntime.quantization.quantize_static (QDQ, per-tensor, int8
     weights, uint8 activations, MinMax calibration on rendered frames),
     sets metadata_props (labels, description, preprocessing), measures
     both models under onnxruntime on the held-out test renders, and writes
     models/default.onnx, models/default.labels.txt,
     models/default-fp32.onnx (only when under 200 KB) and
     models/MODEL_CARD.md.

The defaults are the recipe of the committed model. `--skip-dump` reuses the
images already in the work dir; `--card-only` rewrites MODEL_CARD.md from the
last run's metrics; `--epochs`, `--n-train` and friends change the recipe (and
so the result). Results are exact for a given machine; another CPU or BLAS
build may round differently.
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Two cores, shared: keep BLAS from oversubscribing. Must precede numpy.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np  # noqa: E402
from numpy.lib.stride_tricks import as_strided  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCENE_RS = REPO / "src" / "source" / "scene.rs"
MODELS = REPO / "models"

CLASSES = ["ok", "scratch", "dent", "missing"]
SIZE = 64  # model input is SIZE x SIZE
FRAME_W, FRAME_H = 320, 240  # rendered frame size
# Per-channel normalisation (RGB, on pixel/255): fixed round values near the
# statistics of the renders (the first batch norm absorbs the difference).
# The daemon's built-in values (BUILTIN_MEAN / BUILTIN_STD in
# src/model/preprocess/) must be exactly these.
MEAN = np.array([0.28, 0.31, 0.30], np.float32)
STD = np.array([0.24, 0.21, 0.21], np.float32)

SEED_TRAIN, SEED_CALIB, SEED_TEST = 1, 2, 3

CARGO_TOML = """\
[package]
name = "scene-dump"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
image = { version = "0.25", default-features = false, features = ["png"] }

[profile.release]
opt-level = 3

[workspace]
"""

MAIN_RS = r"""// Written by lookout's models/train.py: dumps scenes from the daemon's renderer.
#[path = "@SCENE@"]
#[allow(dead_code)]
mod scene;

use std::io::Write;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).map(String::as_str).unwrap_or("");
    let base: u64 = arg(3).parse().unwrap_or(0);
    match arg(1) {
        // dump OUT_DIR SEED_BASE N_PER_CLASS WIDTH HEIGHT [paired]
        // paired: the four classes of index i share one seed, so they show the
        // same scene and differ only in the defect.
        "dump" => {
            let paired = arg(7) == "paired";
            let seed_of = move |i: usize, c: usize| -> u64 {
                if paired { (base << 32) + i as u64 } else { (base << 32) + (i * 4 + c) as u64 }
            };
            let dir = std::path::PathBuf::from(arg(2));
            let n: usize = arg(4).parse().unwrap();
            let (w, h): (u32, u32) = (arg(5).parse().unwrap(), arg(6).parse().unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            let threads = 2;
            std::thread::scope(|s| {
                for t in 0..threads {
                    let dir = dir.clone();
                    let seed_of = &seed_of;
                    s.spawn(move || {
                        let mut img = image::RgbImage::new(w, h);
                        for i in (t..n).step_by(threads) {
                            for c in 0..scene::CLASSES.len() {
                                let seed = seed_of(i, c);
                                scene::render_into(c, &mut scene::SceneRng::new(seed), &mut img);
                                let f = dir.join(format!("{}_{:05}.png", scene::CLASSES[c], i));
                                img.save(&f).unwrap();
                            }
                        }
                    });
                }
            });
            let mut csv = std::io::BufWriter::new(std::fs::File::create(dir.join("labels.csv")).unwrap());
            writeln!(csv, "file,label,class,seed").unwrap();
            for i in 0..n {
                for c in 0..scene::CLASSES.len() {
                    let seed = seed_of(i, c);
                    writeln!(csv, "{}_{:05}.png,{},{},{}", scene::CLASSES[c], i, c, scene::CLASSES[c], seed).unwrap();
                }
            }
        }
        // bench WIDTH HEIGHT N: prints milliseconds per frame (one thread)
        "bench" => {
            let (w, h): (u32, u32) = (arg(2).parse().unwrap(), arg(3).parse().unwrap());
            let n: usize = arg(4).parse().unwrap();
            let mut img = image::RgbImage::new(w, h);
            let mut rng = scene::SceneRng::new(12345);
            for k in 0..50 { scene::render_into(k % 4, &mut rng, &mut img); }
            let t = std::time::Instant::now();
            for k in 0..n { scene::render_into(k % 4, &mut rng, &mut img); }
            println!("{:.4}", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
        }
        _ => {
            eprintln!("usage: scene-dump dump DIR SEED_BASE N W H | bench W H N");
            std::process::exit(2);
        }
    }
}
"""


def cpu_seconds():
    """CPU time of this process and of the children it waited for (cargo, the dumper)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ---------------------------------------------------------------------------
# 1-2. Rendering through the Rust renderer
# ---------------------------------------------------------------------------

def build_dumper(work: Path) -> Path:
    (work / "src").mkdir(parents=True, exist_ok=True)
    (work / "Cargo.toml").write_text(CARGO_TOML)
    (work / "src" / "main.rs").write_text(MAIN_RS.replace("@SCENE@", str(SCENE_RS)))
    lock = REPO / "Cargo.lock"
    if lock.exists() and not (work / "Cargo.lock").exists():
        shutil.copy(lock, work / "Cargo.lock")
    env = dict(os.environ, CARGO_TARGET_DIR=str(work / "target"))
    log("building", work)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=work, env=env, check=True)
    return work / "target" / "release" / "scene-dump"


def dump(exe: Path, out: Path, base: int, n: int, paired: bool):
    if out.exists():
        shutil.rmtree(out)
    t = time.time()
    subprocess.run([str(exe), "dump", str(out), str(base), str(n), str(FRAME_W), str(FRAME_H)]
                   + (["paired"] if paired else []), check=True)
    log(f"rendered {n * len(CLASSES)} frames to {out} in {time.time() - t:.1f}s")


def read_set(d: Path):
    """All frames of a dumped set, resized like the daemon: uint8 NHWC, labels."""
    cache = d / f"resized{SIZE}.npz"
    if cache.exists() and cache.stat().st_mtime >= (d / "labels.csv").stat().st_mtime:
        z = np.load(cache)
        return z["x"], z["y"]
    with open(d / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    x = np.empty((len(rows), SIZE, SIZE, 3), np.uint8)
    y = np.empty(len(rows), np.int64)
    for i, r in enumerate(rows):
        with Image.open(d / r["file"]) as im:
            x[i] = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
        y[i] = int(r["label"])
    np.savez(cache, x=x, y=y)
    return x, y


def normalize(x_u8):
    """uint8 NHWC -> float32 NHWC, (pixel/255 - MEAN) / STD."""
    return (x_u8.astype(np.float32) * (1.0 / 255.0) - MEAN) / STD


def to_nchw(x_u8):
    return np.ascontiguousarray(normalize(x_u8).transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------
# 4. The network, in numpy (NHWC inside; weights [kh, kw, cin, cout])
# ---------------------------------------------------------------------------

# (cin, cout, stride) of each 3x3, pad 1 convolution; each is followed by
# batch normalisation (folded into the convolution at export) and ReLU.
CONVS = [(3, 24, 2), (24, 32, 2), (32, 64, 2), (64, 64, 1)]
# The head sees both the average and the maximum of each last-layer channel:
# a defect is a small local thing, which an average alone would dilute.
FEATURES = 2 * CONVS[-1][1]
BN_EPS = 1e-5


def init_params(rng):
    p = {}
    for i, (ci, co, _) in enumerate(CONVS):
        p[f"w{i}"] = (rng.standard_normal((3, 3, ci, co)) * np.sqrt(2.0 / (9 * ci))).astype(np.float32)
        p[f"g{i}"] = np.ones(co, np.float32)
        p[f"be{i}"] = np.zeros(co, np.float32)
    p["fw"] = (rng.standard_normal((FEATURES, len(CLASSES))) * np.sqrt(1.0 / FEATURES)).astype(np.float32)
    p["fb"] = np.zeros(len(CLASSES), np.float32)
    return p


def conv_fwd(x, w, stride):
    n, h, wd, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    s = xp.strides
    cols = as_strided(xp, (n, ho, wo, 3, 3, c), (s[0], s[1] * stride, s[2] * stride, s[1], s[2], s[3]))
    cols = cols.reshape(n * ho * wo, 9 * c)
    y = cols @ w.reshape(9 * c, -1)
    return y.reshape(n, ho, wo, -1), (xp.shape, cols)


def conv_bwd(dy, w, cache, stride, need_dx):
    xp_shape, cols = cache
    n, ho, wo, co = dy.shape
    dy2 = dy.reshape(-1, co)
    dw = (cols.T @ dy2).reshape(w.shape)
    if not need_dx:
        return None, dw
    c = w.shape[2]
    dcols = (dy2 @ w.reshape(-1, co).T).reshape(n, ho, wo, 3, 3, c)
    dxp = np.zeros(xp_shape, np.float32)
    for i in range(3):
        for j in range(3):
            dxp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :] += dcols[:, :, :, i, j, :]
    return dxp[:, 1:-1, 1:-1, :], dw


def forward(p, x, bn=None, train=False):
    """Logits. With train=True, normalises with the batch's own statistics
    and also returns what backward() needs plus those statistics; otherwise
    uses the statistics in `bn`."""
    caches, stats = [], {}
    a = x
    for i, (_, _, st) in enumerate(CONVS):
        z, cache = conv_fwd(a, p[f"w{i}"], st)
        if train:
            mu = z.mean((0, 1, 2))
            var = z.var((0, 1, 2))
            stats[f"mu{i}"], stats[f"var{i}"] = mu, var
        else:
            mu, var = bn[f"mu{i}"], bn[f"var{i}"]
        inv = (1.0 / np.sqrt(var + BN_EPS)).astype(np.float32)
        zh = (z - mu) * inv
        a = np.maximum(zh * p[f"g{i}"] + p[f"be{i}"], 0.0)
        caches.append((cache, zh, inv, a))
    n, h, w, c = a.shape
    flat = a.reshape(n, h * w, c)
    arg = flat.argmax(1)
    g = np.concatenate([flat.mean(1), np.take_along_axis(flat, arg[:, None, :], 1)[:, 0]], 1)
    logits = g @ p["fw"] + p["fb"]
    if train:
        return logits, (caches, g, a.shape, arg), stats
    return logits


def backward(p, dlogits, state):
    caches, g, ashape, arg = state
    grads = {"fw": g.T @ dlogits, "fb": dlogits.sum(0)}
    dg = dlogits @ p["fw"].T
    n, h, w, c = ashape
    da = np.empty((n, h * w, c), np.float32)
    da[:] = dg[:, None, :c] / (h * w)
    np.put_along_axis(da, arg[:, None, :], np.take_along_axis(da, arg[:, None, :], 1) + dg[:, None, c:], 1)
    da = da.reshape(ashape)
    for i in reversed(range(len(CONVS))):
        cache, zh, inv, a = caches[i]
        dy = (da * (a > 0)).reshape(-1, zh.shape[-1])
        zh2 = zh.reshape(-1, zh.shape[-1])
        grads[f"g{i}"] = (dy * zh2).sum(0)
        grads[f"be{i}"] = dy.sum(0)
        dzh = dy * p[f"g{i}"]
        m = dzh.shape[0]
        dz = (inv / m) * (m * dzh - dzh.sum(0) - zh2 * (dzh * zh2).sum(0))
        da, grads[f"w{i}"] = conv_bwd(dz.reshape(zh.shape).astype(np.float32), p[f"w{i}"], cache,
                                      CONVS[i][2], i > 0)
    return grads


def softmax_xent(logits, y):
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    pr = e / e.sum(1, keepdims=True)
    loss = -np.log(pr[np.arange(len(y)), y] + 1e-12).mean()
    d = pr
    d[np.arange(len(y)), y] -= 1.0
    return loss, d / len(y)


def predict(p, bn, x_u8, bs=500):
    return np.concatenate([forward(p, normalize(x_u8[i:i + bs]), bn) for i in range(0, len(x_u8), bs)])


def population_stats(p, x_u8, n=2000):
    """Batch-norm statistics of one large batch of training frames, for inference."""
    _, _, stats = forward(p, normalize(x_u8[:n]), train=True)
    return stats


def train(p, x_tr, y_tr, x_val, y_val, epochs, bs, lr_max, wd, seed, ckpt=None):
    """Adam with warm-up and cosine decay. With `ckpt` (a path), saves its whole
    state after every epoch and resumes from it, so a killed run can go on."""
    import pickle
    rng = np.random.default_rng(seed)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    bn = None
    start = 0
    run_key = (epochs, bs, lr_max, wd, seed, len(x_tr), CONVS)
    if ckpt is not None and ckpt.exists():
        st = pickle.loads(ckpt.read_bytes())
        if st["key"] == run_key:
            p, m, v, bn, start = st["p"], st["m"], st["v"], st["bn"], st["epoch"]
            rng.bit_generator.state = st["rng"]
            log(f"resuming after epoch {start} from {ckpt}")
        else:
            log(f"ignoring {ckpt}: it is from a different run")
    b1, b2, eps = 0.9, 0.999, 1e-8
    k_cls = len(CLASSES)
    groups = len(x_tr) // k_cls  # rows 4i..4i+3 are one scene in each class
    gpb = bs // k_cls  # groups per batch
    steps_per_epoch = groups // gpb
    total = epochs * steps_per_epoch
    warm = min(200, total // 10)
    step = start * steps_per_epoch
    lr = 0.0
    for ep in range(start, epochs):
        t = time.time()
        order = rng.permutation(groups)
        tot_loss = 0.0
        correct = 0
        for k in range(steps_per_epoch):
            g = np.sort(order[k * gpb:(k + 1) * gpb])
            idx = (g[:, None] * k_cls + np.arange(k_cls)).ravel()
            xb = x_tr[idx]
            # Flips, the same for a whole quadruplet: the renderer is symmetric
            # under them (light and belt directions are random).
            fh = np.repeat(rng.random(gpb) < 0.5, k_cls)
            fv = np.repeat(rng.random(gpb) < 0.5, k_cls)
            xb = xb.copy()
            xb[fh] = xb[fh, :, ::-1]
            xb[fv] = xb[fv, ::-1]
            xb = normalize(xb)
            yb = y_tr[idx]
            logits, state, stats = forward(p, xb, train=True)
            if bn is None:
                bn = stats
            else:
                bn = {key: 0.95 * bn[key] + 0.05 * stats[key] for key in bn}
            loss, dl = softmax_xent(logits, yb)
            tot_loss += loss
            correct += int((logits.argmax(1) == yb).sum())
            grads = backward(p, dl, state)
            step += 1
            lr = lr_max * step / warm if step <= warm else \
                lr_max * 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, total - warm)))
            for key in p:
                gk = grads[key]
                m[key] = b1 * m[key] + (1 - b1) * gk
                v[key] = b2 * v[key] + (1 - b2) * gk * gk
                mh = m[key] / (1 - b1 ** step)
                vh = v[key] / (1 - b2 ** step)
                upd = mh / (np.sqrt(vh) + eps)
                if key.startswith("w") or key == "fw":
                    upd = upd + wd * p[key]
                p[key] = (p[key] - lr * upd).astype(np.float32)
        val_acc = (predict(p, bn, x_val).argmax(1) == y_val).mean()
        log(f"epoch {ep + 1:2d}/{epochs}  loss {tot_loss / steps_per_epoch:.4f}  "
            f"train acc {correct / (steps_per_epoch * gpb * k_cls):.4f}  calib-set acc {val_acc:.4f}  "
            f"({time.time() - t:.0f}s, lr {lr:.2e})")
        if ckpt is not None:
            tmp = ckpt.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps({"key": run_key, "p": p, "m": m, "v": v, "bn": bn, "epoch": ep + 1,
                                          "rng": rng.bit_generator.state}))
            tmp.replace(ckpt)
    return p


def folded(p, bn):
    """Conv weights (OIHW) and biases with batch norm folded in, plus the head."""
    out = []
    for i in range(len(CONVS)):
        scale = p[f"g{i}"] / np.sqrt(bn[f"var{i}"] + BN_EPS)
        w = p[f"w{i}"] * scale  # scales output channels
        b = p[f"be{i}"] - bn[f"mu{i}"] * scale
        out.append((np.ascontiguousarray(w.transpose(3, 2, 0, 1)).astype(np.float32), b.astype(np.float32)))
    return out


# ---------------------------------------------------------------------------
# 5. ONNX export, quantization, evaluation
# ---------------------------------------------------------------------------

DESCRIPTION = (
    "lookout default model: int8 (QDQ) CNN classifying a conveyor-belt frame with one machined part "
    "as ok / scratch / dent / missing. Trained only on frames from lookout's synthetic scene renderer "
    "(src/source/scene.rs). Input 'input' float32 [1,3,64,64] NCHW RGB: whole frame stretched to 64x64 "
    "(bilinear, antialiased), value = pixel/255, then (value - mean)/std with mean=[{m}] std=[{s}]. "
    "Output 'logits' float32 [1,4] (no softmax), classes in the order of the 'labels' metadata."
)


def preprocessing_meta():
    return {
        "resize": "stretch", "filter": "bilinear (antialiased)", "width": SIZE, "height": SIZE,
        "layout": "NCHW", "color": "RGB", "scale": 255.0,
        "mean": [round(float(v), 6) for v in MEAN], "std": [round(float(v), 6) for v in STD],
    }


def set_metadata(model):
    import onnx
    desc = DESCRIPTION.format(m=", ".join(f"{v:g}" for v in MEAN), s=", ".join(f"{v:g}" for v in STD))
    props = {"labels": json.dumps(CLASSES), "description": desc,
             "preprocessing": json.dumps(preprocessing_meta())}
    del model.metadata_props[:]
    for k, v in props.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    model.doc_string = desc
    model.producer_name = "lookout models/train.py"
    onnx.checker.check_model(model)
    return model


def export_onnx(p, bn, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    inits, nodes = [], []
    prev = "input"
    for i, ((ci, co, st), (w, b)) in enumerate(zip(CONVS, folded(p, bn))):
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"),
                  numpy_helper.from_array(b, f"conv{i}.bias")]
        nodes.append(helper.make_node("Conv", [prev, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}"],
                                      name=f"conv{i}", kernel_shape=[3, 3], strides=[st, st],
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        prev = f"relu{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["avgpool"], name="avgpool"))
    nodes.append(helper.make_node("GlobalMaxPool", [prev], ["maxpool"], name="maxpool"))
    nodes.append(helper.make_node("Concat", ["avgpool", "maxpool"], ["pool"], name="concat", axis=1))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1))
    inits += [numpy_helper.from_array(np.ascontiguousarray(p["fw"].T), "fc.weight"),
              numpy_helper.from_array(p["fb"], "fc.bias")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "lookout_default",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, len(CLASSES)])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model = set_metadata(model)
    onnx.save(model, str(path))


def quantize(fp32_path, int8_path, calib_x_u8):
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(to_nchw(calib_x_u8))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x[None]}

    quantize_static(str(fp32_path), str(int8_path), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    model = set_metadata(onnx.load(str(int8_path)))
    onnx.save(model, str(int8_path))


def ort_logits(path, x_u8):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = to_nchw(x_u8)
    return np.concatenate([sess.run(["logits"], {"input": x[i:i + 1]})[0] for i in range(len(x))])


def report(logits, y):
    pred = logits.argmax(1)
    k = len(CLASSES)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, pred), 1)
    return {"accuracy": float((pred == y).mean()),
            "per_class": {CLASSES[c]: float(cm[c, c] / max(1, cm[c].sum())) for c in range(k)},
            "confusion": cm.tolist(), "n": int(len(y))}


def cm_table(cm):
    head = "| true \\ predicted | " + " | ".join(CLASSES) + " |\n"
    head += "|---" * (len(CLASSES) + 1) + "|\n"
    return head + "".join(f"| **{CLASSES[i]}** | " + " | ".join(str(v) for v in row) + " |\n"
                          for i, row in enumerate(cm))


def write_card(path, a):
    f, q = a["fp32"], a["int8"]
    per = "| class | fp32 | int8 |\n|---|---|---|\n" + "".join(
        f"| {c} | {f['per_class'][c]:.2%} | {q['per_class'][c]:.2%} |\n" for c in CLASSES)
    mean = ", ".join(f"{v:g}" for v in MEAN)
    std = ", ".join(f"{v:g}" for v in STD)
    arch = " -> ".join(f"Conv 3x3 stride {st} pad 1 {ci}->{co} -> ReLU" for ci, co, st in CONVS)
    fp32_line = (f"`models/default-fp32.onnx` ({a['fp32_bytes']:,} bytes) is the same network before\n"
                 "quantization." if a["fp32_committed"] else
                 f"The fp32 model ({a['fp32_bytes']:,} bytes) is not committed (over 200 KB);\n"
                 "`train.py` rebuilds it.")
    text = f"""# lookout default model

`models/default.onnx` ({a['int8_bytes']:,} bytes) is the classifier the daemon loads when no other
model is configured. {fp32_line} `models/default.labels.txt` lists the classes, one per line,
in logit order; the same list is in the model's `labels` metadata.

## What it recognises

One machined part (a metal disc or rounded square plate, with or without holes) lying on a
conveyor belt, seen from above, sorted into four classes:

| index | label | meaning |
|---|---|---|
| 0 | `ok` | intact part (holes, specks, smudges and machining marks are normal) |
| 1 | `scratch` | one to three thin bright or dark lines across the part |
| 2 | `dent` | a shaded elliptical dimple: dark crescent on the side facing the light, highlight opposite |
| 3 | `missing` | a chunk of the part is gone (round bite, V-shaped wedge or square slot in the rim), the belt shows through |

It has only ever seen frames from lookout's own renderer (`src/source/scene.rs`, the `synthetic`
frame source): it is a demonstration model, not one for real cameras. Expect nonsense on real
photographs, on frames with no part or several parts, and on defects unlike the rendered ones.

## Input and output

- Input `input`: float32 `[1, 3, 64, 64]`, NCHW, RGB.
- Preprocessing, exactly: stretch the whole frame to 64x64 (no crop, no letterbox) with an
  antialiased bilinear filter (Pillow `Image.resize((64, 64), Image.BILINEAR)` in training;
  lookout's Pillow-exact resampler in the daemon, bit-identical); value = pixel / 255;
  then `(value - mean) / std` per channel with
  - mean = `[{mean}]` (R, G, B)
  - std = `[{std}]` (R, G, B)
- Output `logits`: float32 `[1, 4]`, raw logits (no Softmax in the graph); apply softmax for
  probabilities. Class order: `{json.dumps(CLASSES)}`.
- Metadata (`metadata_props`): `labels` (JSON list above), `description`, `preprocessing`
  (JSON with the values above).

## How it was made

Reproduce this exact model with `python3 models/train.py` from the repository root (numpy, onnx,
onnxruntime, pillow; no torch): its defaults are this recipe.
The run that made these files took {a['minutes']:.0f} minutes of wall-clock time on a 2-core machine
shared with other builds ({a['cpu_minutes']:.0f} CPU-minutes of its own). Fixed seeds throughout; the
script documents each step at its top.

- Data: frames rendered at {FRAME_W}x{FRAME_H} by `src/source/scene.rs`, compiled into a scratch
  crate outside the repository (`/tmp/scene-dump`) that writes PNGs and a labels CSV.
  - train: {a['n_train']} scenes, each rendered in all four classes ({a['n_train'] * 4} frames):
    scene i uses `SceneRng::new(({SEED_TRAIN} << 32) + i)` for every class, and since the renderer
    draws the defect last, the four frames differ only in the defect. Augmented with random
    horizontal and vertical flips (the same for the four frames of a scene, which always share
    a batch).
  - calibration: {a['n_calib']} per class ({a['n_calib'] * 4} frames), independent scenes: frame i
    of class c uses `SceneRng::new(({SEED_CALIB} << 32) + 4*i + c)` (also watched during training)
  - test (held out, never used for training or calibration): {a['n_test']} per class
    ({a['n_test'] * 4} frames), independent scenes, `SceneRng::new(({SEED_TEST} << 32) + 4*i + c)`
- Renderer speed: {a['render_ms']:.2f} ms per {FRAME_W}x{FRAME_H} frame (release build, one
  thread, this machine).
- Architecture ({a['params']:,} parameters): {arch}, then GlobalAveragePool and
  GlobalMaxPool of the last layer, Concat -> Flatten -> Gemm {FEATURES}->4. Trained with batch
  normalisation after each convolution, folded into the convolutions for export. ONNX opset 13,
  built with `onnx.helper` and checked with `onnx.checker`.
- Training: numpy, im2col convolutions, softmax cross-entropy, Adam (lr {a['lr']:g}, linear warm-up,
  cosine decay, weight decay {a['wd']:g}), batch {a['bs']}, {a['epochs']} epochs, numpy seed {a['seed']}.
- Quantization: `onnxruntime.quantization.quantize_static(fp32, int8, reader,
  quant_format=QuantFormat.QDQ, per_channel=False, activation_type=QuantType.QUInt8,
  weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)`, calibrated on the
  {a['n_calib'] * 4} calibration frames (onnxruntime {a['ort_version']}, onnx {a['onnx_version']}).
  The quantizer folds each ReLU into the uint8 QuantizeLinear after its convolution (zero point 0
  clamps negatives), so the int8 graph holds QuantizeLinear/DequantizeLinear, Conv,
  GlobalAveragePool, GlobalMaxPool, Concat, Flatten and Gemm, and no Relu nodes.

## Measured accuracy

onnxruntime (CPU), held-out test set of {f['n']} fresh renders (seed base {SEED_TEST}),
preprocessed as above.

| model | accuracy |
|---|---|
| fp32 | {f['accuracy']:.2%} |
| int8 (`default.onnx`) | {q['accuracy']:.2%} |

{per}
Confusion matrix, int8 (rows: true class, columns: predicted):

{cm_table(q['confusion'])}
Confusion matrix, fp32:

{cm_table(f['confusion'])}"""
    path.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/scene-dump", help="scratch crate and data (outside the repo)")
    ap.add_argument("--out", default=str(MODELS), help="where the model files go")
    ap.add_argument("--n-train", type=int, default=8000, help="training scenes, each rendered in all four classes")
    ap.add_argument("--n-calib", type=int, default=64, help="calibration frames per class")
    ap.add_argument("--n-test", type=int, default=500, help="held-out test frames per class")
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-dump", action="store_true", help="reuse the frames already in --work")
    ap.add_argument("--card-only", action="store_true",
                    help="only rewrite MODEL_CARD.md from --work/metrics.json of the last run")
    ap.add_argument("--resume", action="store_true",
                    help="checkpoint every epoch to --work/checkpoint.pkl and resume from it")
    args = ap.parse_args()
    t0 = time.time()
    c0 = cpu_seconds()
    work = Path(args.work)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.card_only:
        write_card(out / "MODEL_CARD.md", json.loads((work / "metrics.json").read_text()))
        return

    exe = build_dumper(work)
    render_ms = float(subprocess.run([str(exe), "bench", str(FRAME_W), str(FRAME_H), "2000"],
                                     check=True, capture_output=True, text=True).stdout)
    log(f"renderer: {render_ms:.3f} ms per {FRAME_W}x{FRAME_H} frame")
    # Training frames come in matched quadruplets (one scene, four classes),
    # so nothing but the defect tells the classes apart; calibration and
    # test frames are all independent scenes.
    sets = {"train": (SEED_TRAIN, args.n_train, True), "calib": (SEED_CALIB, args.n_calib, False),
            "test": (SEED_TEST, args.n_test, False)}
    data = {}
    for name, (base, n, paired) in sets.items():
        d = work / "data" / name
        if not args.skip_dump or not (d / "labels.csv").exists():
            dump(exe, d, base, n, paired)
        data[name] = read_set(d)
        log(f"{name}: {len(data[name][1])} frames")
    x_tr, y_tr = data["train"]
    x_ca, y_ca = data["calib"]
    x_te, y_te = data["test"]
    px = x_tr.reshape(-1, 3).astype(np.float64) / 255.0
    log("train set channel mean", px.mean(0).round(4), "std", px.std(0).round(4),
        "(MEAN/STD used:", MEAN, STD, ")")

    p = init_params(np.random.default_rng(args.seed))
    params = sum(v.size for v in p.values())
    log(f"training {params} parameters, {args.epochs} epochs")
    p = train(p, x_tr, y_tr, x_ca, y_ca, args.epochs, args.batch, args.lr, args.wd, args.seed + 1,
              ckpt=work / "checkpoint.pkl" if args.resume else None)
    bn = population_stats(p, x_tr)
    np_test = predict(p, bn, x_te)
    log(f"numpy test accuracy {(np_test.argmax(1) == y_te).mean():.4f}")

    import onnx
    import onnxruntime
    fp32_path = work / "default-fp32.onnx"
    int8_path = work / "default.onnx"
    export_onnx(p, bn, fp32_path)
    lf = ort_logits(fp32_path, x_te)
    log(f"fp32 onnx vs numpy max |diff| {np.abs(lf - np_test).max():.2e}")
    quantize(fp32_path, int8_path, x_ca)
    lq = ort_logits(int8_path, x_te)
    acc = {"fp32": report(lf, y_te), "int8": report(lq, y_te)}
    for k, r in acc.items():
        log(k, f"accuracy {r['accuracy']:.4f}", r["per_class"], r["confusion"])

    fp32_bytes = fp32_path.stat().st_size
    fp32_committed = fp32_bytes < 200_000
    shutil.copy(int8_path, out / "default.onnx")
    if fp32_committed:
        shutil.copy(fp32_path, out / "default-fp32.onnx")
    (out / "default.labels.txt").write_text("".join(c + "\n" for c in CLASSES))
    card = dict(
        acc, int8_bytes=int8_path.stat().st_size, fp32_bytes=fp32_bytes, fp32_committed=fp32_committed,
        n_train=args.n_train, n_calib=args.n_calib, n_test=args.n_test, render_ms=render_ms,
        params=params, lr=args.lr, wd=args.wd, bs=args.batch, epochs=args.epochs, seed=args.seed,
        ort_version=onnxruntime.__version__, onnx_version=onnx.__version__,
        minutes=(time.time() - t0) / 60, cpu_minutes=(cpu_seconds() - c0) / 60)
    (work / "metrics.json").write_text(json.dumps(card, indent=1))
    write_card(out / "MODEL_CARD.md", card)
    summary = {"fp32": acc["fp32"]["accuracy"], "int8": acc["int8"]["accuracy"],
               "render_ms": render_ms, "int8_bytes": int8_path.stat().st_size, "fp32_bytes": fp32_bytes,
               "minutes": round((time.time() - t0) / 60, 1)}
    log("done", json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
