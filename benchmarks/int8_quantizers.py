"""Which int8 quantizer is faster and more accurate here: ONNX Runtime's (QDQ, per-channel) or PyTorch's (FX,
x86 backend)? Both calibrate on the same images; both are timed on 1 thread, batch 1; top-1 on a labelled set.

    python benchmarks/int8_quantizers.py [--model NAME] [--weights FILE] [--data DIR]
        [--resolution R] [--calib-count 256] [--eval-count 1000] [--repeats 30]

Without --weights the model is random and only the top-1 agreement with fp32 means something; with the
weights of a CIFAR-10 model (``--data`` defaults to the shared CIFAR-10 copy) the table shows the accuracy
change, the deployment target being at most 1 point.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from shufflenet.bench.latency import time_calls
from shufflenet.data.sources import batches, open_folder
from shufflenet.deploy.export import export_onnx
from shufflenet.deploy.int8 import calibration_images, quantize_onnx, quantize_torch
from shufflenet.engine.evaluate import evaluate
from shufflenet.factory import load, model_runner
from shufflenet.io.onnx_file import onnx_runner
from shufflenet.text_table import format_table

SHARED_CIFAR10 = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shufflenet_v1_x1_0_g3")
    parser.add_argument("--weights")
    parser.add_argument("--data", default=str(SHARED_CIFAR10), help="CIFAR-10 root or labelled image folder")
    parser.add_argument("--resolution", type=int, help="default: the weights' crop, else 224")
    parser.add_argument("--calib-count", type=int, default=256)
    parser.add_argument("--eval-count", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load(args.model, args.weights)
    model = loaded.model
    resolution = args.resolution or loaded.preprocessing.crop
    preprocessing = loaded.preprocessing.for_resolution(resolution)
    calibration = calibration_images(args.data, preprocessing, args.calib_count, check_md5=False)
    test_set, _ = open_folder(args.data, "test", preprocessing.transform(), check_md5=False)
    one_image = calibration[:1]
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path, int8_path = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        export_onnx(model, fp32_path, resolution, equalize_with=calibration)
        quantize_onnx(fp32_path, int8_path, calibration)
        runners = {
            "PyTorch fp32 (eager)": model_runner(model),
            "PyTorch int8 (FX, x86)": model_runner(quantize_torch(model, calibration)),
            "ONNX Runtime fp32": onnx_runner(fp32_path),
            "ONNX Runtime int8 (QDQ)": onnx_runner(int8_path),
        }
        scores = evaluate(runners, batches(test_set, 32, limit=args.eval_count))
        rows = []
        for name, run in runners.items():
            timing = time_calls(lambda: run(one_image), args.repeats, warmup=3)
            score = scores[name]
            rows.append((name, round(timing.median_ms, 3), f"{timing.p10_ms:.3f}-{timing.p90_ms:.3f}",
                         round(score["agreement"], 2),
                         round(score["top1"], 2) if args.weights and "top1" in score else None))
    print(f"{args.model} at {resolution}x{resolution}, 1 thread, batch 1; {scores[name]['images']} images of "
          f"{args.data}{'' if args.weights else ' (random weights: only the agreement is meaningful)'}")
    print(format_table(("runner", "median ms", "p10-p90 ms", "top-1 agreement with PyTorch fp32 %", "top-1 %"), rows))


if __name__ == "__main__":
    main()
