#!/usr/bin/env python3
"""onnxruntime's quantize_static beside `lookout quantize`, on the same split and inputs.

    python3 benches/quantize_ref.py --model FP32.onnx --calibrate DIR [--labels FILE]
        [--preset NAME] [--bin target/debug/lookout] [--work DIR]

1. Runs `lookout quantize` (MinMax, per-channel weights) into WORK/lookout-int8.onnx; its
   report, WORK/lookout-int8.quant.json, lists the calibration and held-out images.
2. Has lookout write the input tensors of both sets (`lookout classify --dump-input`), so
   every model below sees exactly the same preprocessed inputs.
3. Quantizes the fp32 model with onnxruntime's `quantize_static` (QDQ, MinMax), per tensor and
   per channel, calibrated on the same tensors.
4. Runs the fp32 model and each int8 model in onnxruntime with graph optimisations off (the
   ONNX definition; the fused uint8 x int8 kernel of x86 CPUs without VNNI saturates) on the
   held-out tensors and prints top-1 agreement with fp32 and the mean absolute output
   difference of each. Needs numpy, onnx and onnxruntime (requirements.txt).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static


class Reader(CalibrationDataReader):
    def __init__(self, name, x):
        self.items = iter([{name: x[i : i + 1]} for i in range(x.shape[0])])

    def get_next(self):
        return next(self.items, None)


def session(path):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def outputs(path, x):
    s = session(path)
    name = s.get_inputs()[0].name
    return np.stack([s.run(None, {name: x[i : i + 1]})[0].reshape(-1) for i in range(x.shape[0])])


def dump(bin_, model_args, files, npy):
    subprocess.run([bin_, "classify", *model_args, "--dump-input", npy, *files],
                   check=True, stdout=subprocess.DEVNULL)
    return np.load(npy).astype(np.float32)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--calibrate", required=True)
    ap.add_argument("--labels")
    ap.add_argument("--preset")
    ap.add_argument("--bin", default=os.path.join(here, "..", "target", "debug", "lookout"))
    ap.add_argument("--work")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="lookout-quantize-ref-")
    os.makedirs(work, exist_ok=True)
    model_args = ["--model", args.model] + (["--labels", args.labels] if args.labels else [])
    ours = os.path.join(work, "lookout-int8.onnx")
    cmd = [args.bin, "quantize", *model_args, "--calibrate", args.calibrate, "--out", ours]
    if args.preset:
        cmd += ["--preset", args.preset]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    report = json.load(open(os.path.join(work, "lookout-int8.quant.json")))
    if args.preset:
        # classify takes its preprocessing from a config only: write one.
        conf = os.path.join(work, "model.toml")
        with open(conf, "w") as f:
            f.write(f'[model]\npath = "{args.model}"\n')
            if args.labels:
                f.write(f'labels = "{args.labels}"\n')
            f.write(f'preprocess = {{ preset = "{args.preset}" }}\n')
        model_args = ["--config", conf]
    calib = dump(args.bin, model_args, report["calibration_files"], os.path.join(work, "calib.npy"))
    held = dump(args.bin, model_args, report["held_out_files"], os.path.join(work, "held.npy"))
    name = session(args.model).get_inputs()[0].name
    models = {"lookout quantize (minmax, per-channel)": ours}
    for per_channel in (False, True):
        out = os.path.join(work, f"ort-minmax-{'per-channel' if per_channel else 'per-tensor'}.onnx")
        quantize_static(args.model, out, Reader(name, calib), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel)
        models[f"onnxruntime quantize_static (minmax, {'per-channel' if per_channel else 'per-tensor'})"] = out
    ref = outputs(args.model, held)
    print(f"{len(report['calibration_files'])} calibration and {held.shape[0]} held-out images, "
          f"onnxruntime {ort.__version__}, graph optimisations off\n")
    print(f"| int8 model | top-1 agreement with fp32 | mean abs output difference |")
    print(f"|---|---|---|")
    for label, path in models.items():
        y = outputs(path, held)
        agree = float(np.mean(np.argmax(y, 1) == np.argmax(ref, 1)))
        print(f"| {label} | {agree * 100:.1f} % | {float(np.mean(np.abs(y - ref))):.4f} |")
    print(f"\nlookout's own run of its model (its report): {report['top1_agreement'] * 100:.1f} %, "
          f"int8/fp32 time {report['speed_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
