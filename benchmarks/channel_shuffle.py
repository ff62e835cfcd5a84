"""Is PyTorch's native channel shuffle as fast as the plain reshape-transpose form?

Times ``torch.channel_shuffle`` (what ``shufflenet.channel_shuffle`` uses) against
``view(b, g, c/g, h, w).transpose(1, 2).reshape(b, c, h, w)`` on the stage-2..4 shapes of ShuffleNet 1x g=3
(bottleneck widths 60/120/240), forward and forward+backward, contiguous and channels_last; both return the
input's layout.
Prints medians of several repeats and the ratio native / reshape (below 1 = native faster).

    python benchmarks/channel_shuffle.py [--batch 32] [--repeats 15] [--json results/channel_shuffle.json]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from shufflenet.io.results import write_result


def reshape_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The reshape form, returning the input's memory layout (a channels_last input would otherwise come back
    NCHW and cost the next convolution a conversion)."""
    b, c, h, w = x.shape
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w).contiguous(memory_format=layout)


def median_ms_side_by_side(fns, x: torch.Tensor, backward: bool, repeats: int, inner: int = 10) -> list[float]:
    """Median milliseconds per call of each function, timed in alternation so that noise hits both alike."""
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(repeats + 3):  # the first three rounds are warm-up
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            for _ in range(inner):
                y = fn(x)
                if backward:
                    y.backward(torch.ones_like(y))
            if round_ >= 3:
                bucket.append((time.perf_counter() - start) / inner * 1e3)
    return [statistics.median(bucket) for bucket in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="write the result record here")
    args = parser.parse_args()
    cases = []
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, batch {args.batch}, median of {args.repeats}")
    print("| shape | layout | pass | native ms | reshape ms | native / reshape |")
    print("|---|---|---|---:|---:|---:|")
    for channels, size in ((60, 28), (120, 14), (240, 7)):
        for layout in (torch.contiguous_format, torch.channels_last):
            for backward in (False, True):
                x = torch.randn(args.batch, channels, size, size).to(memory_format=layout)
                x.requires_grad_(backward)
                native, plain = median_ms_side_by_side(
                    (lambda t: torch.channel_shuffle(t, 3), lambda t: reshape_shuffle(t, 3)), x, backward, args.repeats
                )
                name = "channels_last" if layout is torch.channels_last else "contiguous"
                print(f"| {channels}x{size}x{size} | {name} | {'fwd+bwd' if backward else 'fwd'} | "
                      f"{native:.3f} | {plain:.3f} | {native / plain:.2f} |")
                cases.append({"shape": [channels, size, size], "layout": name, "backward": backward,
                              "native_ms": native, "reshape_ms": plain})
    if args.json:
        write_result(args.json, {"batch": args.batch, "repeats": args.repeats, "cases": cases,
                                 "ratios": [c["native_ms"] / c["reshape_ms"] for c in cases]})


if __name__ == "__main__":
    main()
