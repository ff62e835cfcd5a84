"""PNG plots of a latency benchmark: latency against MFLOPs, and actual against theoretical speedup over AlexNet
beside the paper's Table 8."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io.figures import save_figure
from ..paper.published import TABLE8_LATENCY_MS, TABLE8_RESOLUTIONS
from .latency import SPEED_REFERENCE


def plot_results(result: dict[str, Any], directory: str | Path, resolution: tuple[int, int] = (224, 224),
                 threads: int = 1) -> list[Path]:
    """Two PNGs for one resolution and thread count: latency vs MFLOPs (log-log, one series per backend), and
    actual vs theoretical speedup over AlexNet with the paper's Table 8 points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chosen = [r for r in result["measurements"]
              if tuple(r["resolution"]) == tuple(resolution) and r["threads"] == threads]
    if not chosen:
        raise ValueError(f"no measurements at {resolution[0]}x{resolution[1]} with {threads} thread(s) to plot")
    backends = list(dict.fromkeys(r["backend"] for r in chosen))
    tag = f"{resolution[0]}x{resolution[1]}_{threads}t"
    written = []

    figure, axes = plt.subplots(figsize=(7, 5))
    for backend in backends:
        rows = [r for r in chosen if r["backend"] == backend]
        axes.scatter([r["mflops"] for r in rows], [r["median_ms"] for r in rows], label=backend)
        for r in rows:
            axes.annotate(r["model"].replace("shufflenet_v1_", "SN ").replace("mobilenet_", "MN "),
                          (r["mflops"], r["median_ms"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    axes.set(xscale="log", yscale="log", xlabel="MFLOPs (multiply-adds)", ylabel="median latency (ms)",
             title=f"Latency vs complexity, {resolution[0]}x{resolution[1]}, {threads} thread(s), batch 1")
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    written.append(save_figure(figure, directory / f"latency_vs_mflops_{tag}.png"))

    figure, axes = plt.subplots(figsize=(6, 5))
    top = 1.0
    for backend in backends:
        rows = [r for r in chosen if r["backend"] == backend and r["speedup_vs_alexnet"]]
        if not rows:  # no AlexNet measured with this backend
            continue
        axes.scatter([r["theoretical_speedup"] for r in rows], [r["speedup_vs_alexnet"] for r in rows], label=backend)
        top = max([top] + [max(r["theoretical_speedup"], r["speedup_vs_alexnet"]) for r in rows])
    column = [i for i, res in enumerate(TABLE8_RESOLUTIONS) if res == tuple(resolution)]
    if column:
        alexnet_mflops, alexnet_ms = TABLE8_LATENCY_MS[SPEED_REFERENCE]
        paper = [(alexnet_mflops / mflops, alexnet_ms[column[0]] / ms[column[0]])
                 for mflops, ms in TABLE8_LATENCY_MS.values()]
        axes.scatter(*zip(*paper), marker="x", color="black", label="paper Table 8 (Snapdragon 820)")
        top = max([top] + [max(p) for p in paper])
    axes.plot([1, top], [1, top], "k--", linewidth=0.8, label="actual = theoretical")
    axes.set(xscale="log", yscale="log", xlabel="theoretical speedup over AlexNet (MFLOPs ratio)",
             ylabel="actual speedup over AlexNet (latency ratio)",
             title=f"Speedup over AlexNet, {resolution[0]}x{resolution[1]}, {threads} thread(s)")
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    written.append(save_figure(figure, directory / f"speedup_{tag}.png"))
    return written
