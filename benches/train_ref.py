"""`lookout train` against scikit-learn on NEU-DET steel defects (issue #30's benchmark).

Train on the first 200 images of each of the 6 classes (by file number), test on the other
100. lookout: `lookout train` on the MobileNetV2 int8 backbone (torchvision-imagenet
preprocessing), then `lookout classify` of the 600 test images with the trained model, and
onnxruntime's top-1 on the very tensors lookout fed it (`--dump-input`). Reference: the
backbone's features computed by onnxruntime (Pillow preprocessing, the feature tensor added as
an output and dequantized with its scale and zero point), then scikit-learn's StandardScaler +
LogisticRegression(class_weight="balanced") with C chosen from lookout's grid on a stratified
80/20 split and refitted on all 1,200 images, as lookout does; once with scikit-learn's default
tolerance and once run to the optimum.

Usage (from the checkout, after `cargo build --release` or `cargo build`):
    .venv/bin/python benches/train_ref.py --lookout target/release/lookout \
        --assets ../shared/assets --work /tmp/train-bench
Needs numpy, Pillow, onnx, onnxruntime and scikit-learn (all pinned in requirements.txt,
which scripts/test installs into .venv). Prints a JSON summary.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
C_GRID = [0.01, 0.03, 0.1, 0.3, 1.0]  # lookout::train::C_GRID
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def number(path):
    return int(re.search(r"_(\d+)\.jpg$", path.name).group(1))


def split(assets, work):
    """Symlinks train/<class>/ (files 1..200) and lists the test images (201..300)."""
    train, test = [], []
    for c in CLASSES:
        files = sorted((assets / "images/defects" / c).glob("*.jpg"), key=number)
        (work / "train" / c).mkdir(parents=True, exist_ok=True)
        for f in files:
            if number(f) <= 200:
                link = work / "train" / c / f.name
                if not link.exists():
                    link.symlink_to(f)
                train.append((f, c))
            else:
                test.append((f, c))
    return train, test


def preprocess(path):
    """torchvision's Resize(256) + CenterCrop(224) + Normalize on a PIL image."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        size = (256, int(256 * h / w))
    else:
        size = (int(256 * w / h), 256)
    img = img.resize(size, Image.BILINEAR)
    left = int(round((size[0] - 224) / 2.0))
    top = int(round((size[1] - 224) / 2.0))
    img = img.crop((left, top, left + 224, top + 224))
    x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def features_session(backbone, work):
    """The backbone with the quantized input of its final QLinearMatMul as an extra output."""
    m = onnx.load(str(backbone))
    fc = [n for n in m.graph.node if n.op_type == "QLinearMatMul"][-1]
    feat, scale, zp = fc.input[0], fc.input[1], fc.input[2]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    m.graph.output.append(onnx.helper.make_tensor_value_info(feat, onnx.TensorProto.UINT8, None))
    path = work / "backbone-features.onnx"
    onnx.save(m, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    s, z = inits[scale].astype(np.float32), inits[zp].astype(np.float32)
    return lambda x: (sess.run([feat], {"input": x})[0].reshape(1, -1).astype(np.float32) - z) * s


def sklearn_reference(x_train, y_train, x_test, y_test):
    xa, xv, ya, yv = train_test_split(x_train, y_train, test_size=0.2, stratify=y_train, random_state=0)
    sc = StandardScaler().fit(xa)
    trials = []
    for c in C_GRID:
        m = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(sc.transform(xa), ya)
        trials.append((m.score(sc.transform(xv), yv), c))
    best_c = max(trials, key=lambda t: (t[0], t[1]))[1]
    sc = StandardScaler().fit(x_train)
    m = LogisticRegression(C=best_c, class_weight="balanced", max_iter=5000).fit(sc.transform(x_train), y_train)
    # scikit-learn's default tol (1e-4) stops lbfgs early (a dozen iterations here); run to
    # the optimum too, as lookout does (its gradient tolerance is 1e-6).
    exact = LogisticRegression(C=best_c, class_weight="balanced", max_iter=50000, tol=1e-8).fit(
        sc.transform(x_train), y_train
    )
    return {
        "c": best_c,
        "validation": [{"c": c, "accuracy": a} for a, c in trials],
        "test_accuracy": float(m.score(sc.transform(x_test), y_test)),
        "iterations": int(m.n_iter_[0]),
        "test_accuracy_converged": float(exact.score(sc.transform(x_test), y_test)),
        "iterations_converged": int(exact.n_iter_[0]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lookout", default="target/release/lookout")
    ap.add_argument("--assets", default=os.environ.get("LOOKOUT_ASSETS", "../shared/assets"))
    ap.add_argument("--work", default="/tmp/lookout-train-bench")
    ap.add_argument("--flip", action="store_true", help="pass --flip to lookout train")
    args = ap.parse_args()
    assets, work = Path(args.assets), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    backbone = assets / "models/mobilenetv2-12-int8.onnx"
    train, test = split(assets, work)
    out = work / "neu.onnx"

    # lookout train (a fresh cache: the embeddings are timed), peak RSS from the kernel.
    cache = work / "cache"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    cmd = [args.lookout, "train", "--backbone", str(backbone), "--data", str(work / "train"),
           "--out", str(out), "--preset", "torchvision-imagenet", "--cache", str(cache)]
    if args.flip:
        cmd.append("--flip")
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        sys.exit(f"lookout train failed:\n{done.stderr}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    card = json.loads((work / "neu.card.json").read_text())
    sys.stderr.write(done.stdout)
    t0 = time.monotonic()
    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    cached_wall = time.monotonic() - t0

    # lookout's own run of the trained model on the test images, and onnxruntime's.
    conf = work / "neu.toml"
    conf.write_text(f'[model]\npath = "{out}"\n[model.preprocess]\npreset = "torchvision-imagenet"\n')
    npy = work / "test-inputs.npy"
    cls = subprocess.run([args.lookout, "classify", "--config", str(conf), "--top-k", "1",
                          "--dump-input", str(npy)] + [str(p) for p, _ in test],
                         capture_output=True, text=True, check=True)
    ours = [json.loads(l)["top"][0]["label"] for l in cls.stdout.splitlines()]
    truth = [c for _, c in test]
    lookout_acc = float(np.mean([a == b for a, b in zip(ours, truth)]))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    labels = json.loads(sess.get_modelmeta().custom_metadata_map["labels"])
    inputs = np.load(npy)
    theirs = [labels[int(np.argmax(sess.run(None, {"input": inputs[i:i + 1]})[0][0]))] for i in range(len(test))]
    same = sum(a == b for a, b in zip(ours, theirs))

    # The reference: onnxruntime embeddings, scikit-learn's regression.
    embed = features_session(backbone, work)
    t0 = time.monotonic()
    x_train = np.concatenate([embed(preprocess(p)) for p, _ in train])
    x_test = np.concatenate([embed(preprocess(p)) for p, _ in test])
    ref_embed_s = time.monotonic() - t0
    y_train = np.array([CLASSES.index(c) for _, c in train])
    y_test = np.array([CLASSES.index(c) for _, c in test])
    ref = sklearn_reference(x_train, y_train, x_test, y_test)

    print(json.dumps({
        "images": {"train": len(train), "test": len(test)},
        "lookout": {
            "test_accuracy": lookout_acc,
            "validation_accuracy": card["validation_accuracy"],
            "c": card["c"],
            "train_wall_s": round(wall, 2),
            "embed_s": round(card["embed_seconds"], 2),
            "fit_s": round(card["train_seconds"], 2),
            "second_run_wall_s": round(cached_wall, 2),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "onnxruntime_same_top1": f"{same}/{len(test)}",
        },
        "sklearn": {**ref, "onnxruntime_embed_s": round(ref_embed_s, 2)},
        "difference_points": round(100 * (lookout_acc - ref["test_accuracy"]), 2),
        "difference_points_converged": round(100 * (lookout_acc - ref["test_accuracy_converged"]), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
