"""Inference latency beside theoretical complexity, as in ShuffleNet Table 8, on this machine's CPU.

Per model, backend, resolution and thread count: the latency of one batch after warm-up (median and the
10th-90th percentile spread of many runs), the model's multiply-adds (our ``profile`` count, the papers'
"FLOPs"), its actual speedup over AlexNet next to the theoretical one (AlexNet MFLOPs / model MFLOPs), and its
latency over its compute bound: multiply-adds divided by the fp32 multiply-add rate of a large matrix product
measured in the same run with the same thread count (its best runs: what a kernel can sustain here).

Backends: ``eager`` (the model as built), ``eager-opt`` (BN folded, channels_last), ``eager-compile``
(``eager-opt`` through ``torch.compile`` with weight freezing), ``ort`` (ONNX Runtime fp32 of our export:
BN folded, blocked-layout rewrite), ``ort-plain`` (the same without the rewrite) and ``ort-int8``
(``ort`` quantized by :func:`quantize_onnx`), ``executorch`` and ``executorch-int8`` (our .pte lowered to
XNNPACK, fp32 and PT2E int8: ``deploy.executorch``; run by ExecuTorch's runtime with its threadpool set to the
cell's thread count, which the cell records as the runtime reports it).
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..deploy.executorch import export_executorch
from ..deploy.export import export_onnx, random_inputs
from ..deploy.folding import fold_batchnorm
from ..deploy.int8 import quantize_onnx
from ..io.onnx_file import onnx_session
from ..io.pte_file import pte_runner, set_threads
from ..models.complexity import profile
from ..text_table import format_table

BACKENDS = ("eager", "eager-opt", "eager-compile", "ort", "ort-plain", "ort-int8", "executorch", "executorch-int8")
DEFAULT_BACKENDS = ("eager", "eager-opt", "ort", "ort-int8")
# Table 8's models and the references: AlexNet (the speed reference), MobileNet V1 1.0 and V2,
# torchvision's ShuffleNet V2 1.0x.
DEFAULT_MODELS = (
    "shufflenet_v1_x0_5_g3", "shufflenet_v1_x1_0_g3", "shufflenet_v1_x2_0_g3", "tv_alexnet",
    "mobilenet_v1_x1_0", "mobilenet_v2_x1_0", "tv_shufflenet_v2_x1_0",
)
SPEED_REFERENCE = "tv_alexnet"
CALIBRATION_IMAGES = 8  # int8 speed does not depend on what the ranges are, only that there are some


def parse_resolution(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '480x640' -> (480, 640) (height x width)."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 32:
        raise ValueError(f"resolution {text!r} is not SIZE or HEIGHTxWIDTH with sides >= 32, e.g. 224 or 480x640")
    return parts[0], parts[1]


@dataclass
class Timing:
    """Milliseconds per call: median, quartiles and 10th / 90th percentiles of ``runs`` timed calls."""

    median_ms: float
    p10_ms: float
    p25_ms: float
    p75_ms: float
    p90_ms: float
    runs: int


def time_calls(call: Callable[[], Any], repeats: int, warmup: int = 3, max_seconds: float = math.inf,
               min_runs: int = 5) -> Timing:
    """Time ``call`` ``repeats`` times after ``warmup`` untimed calls; stops early after ``max_seconds`` of timed
    calls once ``min_runs`` are in."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats:
        begin = time.perf_counter()
        call()
        times.append((time.perf_counter() - begin) * 1e3)
        if len(times) >= min_runs and time.perf_counter() - started > max_seconds:
            break
    p10, p25, p75, p90 = np.percentile(times, [10, 25, 75, 90])
    return Timing(statistics.median(times), float(p10), float(p25), float(p75), float(p90), len(times))


def gemm_rate(threads: int, size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """The machine's fp32 compute bound: multiply-adds per second (GMAC/s) of a ``size``-cubed matrix product
    on ``threads`` threads: median and best (from the 10th-percentile time) of ``repeats``."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    timing = time_calls(lambda: torch.mm(a, b), repeats, warmup=2)
    macs = size ** 3
    return {"gmacs_median": macs / timing.median_ms / 1e6, "gmacs_best": macs / timing.p10_ms / 1e6,
            "size": size, "runs": timing.runs}


class Artifacts:
    """ONNX and ExecuTorch files of one model at one resolution, exported (and quantized) once, in a scratch
    directory."""

    def __init__(self, model: nn.Module, name: str, resolution: tuple[int, int], directory: Path,
                 calibration: torch.Tensor | None) -> None:
        self.model, self.name, self.resolution, self.directory = model, name, resolution, directory
        self.calibration = calibration
        self.files: dict[str, Path] = {}

    def calibration_images(self) -> torch.Tensor:
        calibration = self.calibration
        if calibration is None or calibration.shape[-2:] != self.resolution:
            calibration = random_inputs(self.model, self.resolution, CALIBRATION_IMAGES)
        return calibration

    def pte(self, kind: str) -> Path:
        """The .pte file of ``kind`` "fp32" or "int8" (operators XNNPACK does not take run on portable
        kernels)."""
        key = f"pte-{kind}"
        if key not in self.files:
            path = self.directory / f"{self.name}_{self.resolution[0]}x{self.resolution[1]}_{kind}.pte"
            # allow_portable: a reference model may keep operators outside XNNPACK (torchvision's ShuffleNet V2:
            # its channel split and mean); it is timed as a user would export it.
            export_executorch(self.model, path, self.resolution, allow_portable=True,
                              calibration=self.calibration_images() if kind == "int8" else None)
            self.files[key] = path
        return self.files[key]

    def onnx(self, kind: str) -> Path:
        if kind not in self.files:
            path = self.directory / f"{self.name}_{self.resolution[0]}x{self.resolution[1]}_{kind}.onnx"
            if kind == "int8":
                quantize_onnx(self.onnx("fp32"), path, self.calibration_images())
            else:
                export_onnx(self.model, path, self.resolution, rewrite=kind == "fp32")
            self.files[kind] = path
        return self.files[kind]


def make_runner(backend: str, model: nn.Module, artifacts: Artifacts, threads: int, batch: int) -> Callable[[], Any]:
    """A no-argument function running one inference of a random batch on ``backend``."""
    torch.set_num_threads(threads)
    x = random_inputs(model, artifacts.resolution, batch)
    if backend.startswith("ort"):
        session = onnx_session(artifacts.onnx({"ort": "fp32", "ort-plain": "plain", "ort-int8": "int8"}[backend]),
                               threads)
        feed = {session.get_inputs()[0].name: x.numpy()}
        return lambda: session.run(None, feed)
    if backend.startswith("executorch"):
        path = artifacts.pte("int8" if backend.endswith("int8") else "fp32")
        reported = set_threads(threads)
        if reported != threads:
            raise RuntimeError(f"ExecuTorch's threadpool reports {reported} threads where {threads} were set")
        run = pte_runner(path, threads)
        return lambda: run(x)
    if backend == "eager":
        module = model.eval()
    elif backend in ("eager-opt", "eager-compile"):
        module = fold_batchnorm(model).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        if backend == "eager-compile":
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # constant-fold the weights into prepacked oneDNN kernels
            module = torch.compile(module)
    else:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run


def run_benchmark(
    models: Mapping[str, nn.Module],
    backends: Sequence[str] = DEFAULT_BACKENDS,
    resolutions: Sequence[tuple[int, int]] = ((224, 224),),
    threads: Sequence[int] = (1,),
    batch: int = 1,
    repeats: int = 50,
    warmup: int = 5,
    max_seconds: float = 10.0,
    calibration: torch.Tensor | None = None,
    only: Callable[[str, str, tuple[int, int], int], bool] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every (model, resolution, backend, threads) cell for which ``only`` (default: all) is true and
    return the JSON-ready result: settings, compute bound per thread count, one record per cell with
    the derived Table 8 quantities (see :func:`derive`), and the cells that failed with their error
    (``io.results.write_result`` adds the machine and the command)."""
    from tqdm import tqdm

    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    cells = [(name, res, backend, t) for name in models for res in resolutions for backend in backends
             for t in threads if only is None or only(name, backend, res, t)]
    bar = tqdm(total=len(cells) + len(threads), disable=not progress, desc="bench", unit="cell")
    compute_bound = {}
    for t in threads:
        bar.set_postfix_str(f"GEMM, {t} thread(s)")
        compute_bound[str(t)] = gemm_rate(t)
        bar.update()
    records: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shufflenet-bench-") as scratch:
        for name, model in models.items():
            model.eval()
            for res in resolutions:
                mine = [cell for cell in cells if cell[0] == name and cell[1] == res]
                if not mine:
                    continue
                macs = profile(model, res, name=name).macs
                artifacts = Artifacts(model, name, res, Path(scratch), calibration)
                for _, _, backend, t in mine:
                    bar.set_postfix_str(f"{name} {res[0]}x{res[1]} {backend} {t}t")
                    cell = {"model": name, "backend": backend, "resolution": list(res), "threads": t, "batch": batch}
                    try:
                        timing = time_calls(make_runner(backend, model, artifacts, t, batch), repeats, warmup,
                                            max_seconds)
                    except Exception as error:  # noqa: BLE001 - one failing cell must not lose a long run
                        failures.append({**cell, "error": f"{type(error).__name__}: {error}"})
                    else:
                        records.append({**cell, "mflops": macs / 1e6, **asdict(timing)})
                    bar.update()
    bar.close()
    result = {
        "settings": {"repeats": repeats, "warmup": warmup, "max_seconds_per_cell": max_seconds, "batch": batch},
        "compute_bound": compute_bound,
        "measurements": records,
        "failures": failures,
    }
    derive(result)
    return result


def derive(result: dict[str, Any]) -> None:
    """Add to each record: ``bound_ms`` (batch x multiply-adds / best GEMM rate at its thread count: the peak,
    which a busy machine lowers less than the median),
    ``latency_over_bound``, and, when AlexNet ran in the same cell, ``speedup_vs_alexnet`` (its latency over
    this one) and ``theoretical_speedup`` (its MFLOPs over this one's)."""
    records = result["measurements"]
    reference = {(r["backend"], tuple(r["resolution"]), r["threads"]): r
                 for r in records if r["model"] == SPEED_REFERENCE}
    for r in records:
        rate = result["compute_bound"][str(r["threads"])]["gmacs_best"]
        r["bound_ms"] = r["batch"] * r["mflops"] / rate  # 1e6 MACs / (1e9 MACs/s) = 1 ms
        r["latency_over_bound"] = r["median_ms"] / r["bound_ms"]
        alexnet = reference.get((r["backend"], tuple(r["resolution"]), r["threads"]))
        r["speedup_vs_alexnet"] = alexnet["median_ms"] / r["median_ms"] if alexnet else None
        r["theoretical_speedup"] = alexnet["mflops"] / r["mflops"] if alexnet else None


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def results_table(result: dict[str, Any]) -> str:
    """One Markdown row per measurement."""
    rows = [
        (r["model"], r["backend"], f"{r['resolution'][0]}x{r['resolution'][1]}", r["threads"], rounded(r["mflops"], 1),
         rounded(r["median_ms"], 3), f"{r['p10_ms']:.3f}-{r['p90_ms']:.3f}", r["runs"],
         rounded(r["speedup_vs_alexnet"], 1), rounded(r["theoretical_speedup"], 1), rounded(r["latency_over_bound"]))
        for r in result["measurements"]
    ]
    headers = ("model", "backend", "input", "threads", "MFLOPs", "median ms", "p10-p90 ms", "runs",
               "speedup vs AlexNet", "theoretical", "latency / bound")
    bounds = result["compute_bound"]
    rates = ", ".join(f"{t} thread(s): {b['gmacs_best']:.1f} GMAC/s" for t, b in bounds.items())
    size = next(iter(bounds.values()))["size"]
    failed = "".join(f"\nFAILED {f['model']} {f['backend']} {f['resolution'][0]}x{f['resolution'][1]} "
                     f"{f['threads']} thread(s): {f['error']}" for f in result.get("failures", []))
    return format_table(headers, rows) + f"\n\nfp32 compute bound (GEMM {size}^3): {rates}" + failed
