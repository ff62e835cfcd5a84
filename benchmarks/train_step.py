"""Training-step speed at 32x32, batch 256: our ShuffleNet against a plain straightforward one, and where the
time of a step goes on this CPU.

One step = the trainer's own step function (``engine.step.train_step`` with the classification loss:
forward, label-smoothed cross-entropy, backward, Nesterov SGD update), on a batch already in memory (the data
pipeline is timed on its own: ``TensorBatches`` augmentation of a batch). Models: ours
(``create_model(..., small_input=True)``, channels_last as the trainer runs it, and contiguous) and the plain
implementation (``shufflenet.bench.plain_shufflenet``, same weights, same function), with 1 and 2 threads,
timed in alternation; medians of the repeats. Then a ``torch.profiler`` breakdown of our step by kind of
operation (depthwise convs, grouped and dense 1x1 convs, stem, BN, shuffle, ...).

    python benchmarks/train_step.py [--model shufflenet_v1_x0_5_g3] [--repeats 15] [--bf16] [--compile]
        [--json results/train_step.json]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from functools import partial
from typing import Any, Callable

import torch

from shufflenet import create_model
from shufflenet.bench.plain_shufflenet import PlainShuffleNet
from shufflenet.data.loaders import TensorBatches
from shufflenet.data.sources import TensorImages
from shufflenet.engine.step import train_step
from shufflenet.engine.task import classification_loss
from shufflenet.io.results import write_result
from shufflenet.text_table import format_table

BATCH, SIZE, CLASSES = 256, 32, 10


def make_step(model: torch.nn.Module, channels_last: bool, bf16: bool = False) -> Callable[[], None]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator).contiguous(memory_format=memory_format)
    batch = (images, torch.randint(0, CLASSES, (BATCH,), generator=generator), 0)

    def step() -> None:
        train_step(model, batch, partial(classification_loss, label_smoothing=0.1), optimizer, 0.01,
                   amp_dtype=torch.bfloat16 if bf16 else None)

    return step


def per_image_augmentation() -> Callable[[torch.Tensor], torch.Tensor]:
    """The usual per-image CIFAR pipeline (what the trainer ran before TensorBatches): pad-4 random crop, flip,
    scale, normalise, one image at a time."""
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), v2.RandomCrop(SIZE, padding=4), v2.RandomHorizontalFlip(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize((0.5,) * 3, (0.25,) * 3)])


def median_seconds(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each step, timed in alternation so that noise hits all alike."""
    times: dict[str, list[float]] = defaultdict(list)
    for round_ in range(repeats + 2):  # two warm-up rounds
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_ >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def conv_kind(shapes: list) -> str:
    """Kind of a convolution from its recorded input shapes: (input, weight, ...)."""
    if len(shapes) < 2 or len(shapes[1]) != 4 or len(shapes[0]) != 4:
        return "convolution (other)"
    (_, channels, _, _), (_, per_group, kh, kw) = shapes[0], shapes[1]
    if per_group == 1 and channels > 1:
        return "depthwise 3x3 conv"
    if kh * kw > 1:
        return "stem 3x3 conv"
    return "grouped 1x1 conv" if per_group < channels else "dense 1x1 conv"


KINDS = [("batch_norm", "BN"), ("channel_shuffle", "channel shuffle"), ("relu", "ReLU"), ("threshold", "ReLU"),
         ("avg_pool", "avg-pool shortcut"), ("cat", "concat"), ("add_", "add / optimizer"), ("_foreach", "optimizer"),
         ("sgd", "optimizer"), ("cross_entropy", "loss"), ("log_softmax", "loss"), ("nll_loss", "loss"),
         ("addmm", "classifier"), ("mm", "classifier"), ("mean", "global pool"), ("copy_", "layout copies"),
         ("clone", "layout copies"), ("contiguous", "layout copies")]


def profile_step(step: Callable[[], None], steps: int = 3) -> list[tuple[str, float]]:
    """Self CPU milliseconds per step by kind of operation, largest first."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    by_kind: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        name = event.key
        if "convolution" in name and "backward" not in name.lower():
            kind = conv_kind(event.input_shapes)
        elif "convolution_backward" in name:
            kind = conv_kind(event.input_shapes[1:]) + " (backward)"
        else:
            kind = next((label for pattern, label in KINDS if pattern in name), "other")
        by_kind[kind] += event.self_cpu_time_total / 1e3 / steps
    return sorted(by_kind.items(), key=lambda item: -item[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shufflenet_v1_x0_5_g3")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--bf16", action="store_true", help="also time ours under bfloat16 autocast")
    parser.add_argument("--compile", action="store_true", help="also time ours through torch.compile")
    parser.add_argument("--json", help="write the result record here")
    args = parser.parse_args()
    figures: dict[str, Any] = {"model": args.model, "batch": BATCH, "resolution": SIZE, "repeats": args.repeats,
                               "images_per_sec": {}, "profile_ms": {}}
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        ours = create_model(args.model, num_classes=CLASSES, small_input=True)
        variants = {
            "ours, channels_last": make_step(ours, True),
            "ours, contiguous": make_step(create_model(args.model, num_classes=CLASSES, small_input=True), False),
            "plain, contiguous": make_step(PlainShuffleNet(ours), False),
            "plain, channels_last": make_step(PlainShuffleNet(ours), True),
        }
        if args.bf16:
            variants["ours, channels_last, bf16 autocast"] = make_step(
                create_model(args.model, num_classes=CLASSES, small_input=True), True, bf16=True)
        if args.compile:
            variants["ours, channels_last, torch.compile"] = make_step(
                torch.compile(create_model(args.model, num_classes=CLASSES, small_input=True)), True)
        data = TensorImages(torch.randint(0, 256, (50_000, 3, SIZE, SIZE), dtype=torch.uint8),
                            torch.randint(0, CLASSES, (50_000,)))
        loader = TensorBatches(data, (0.5,) * 3, (0.25,) * 3, BATCH, seed=0)
        batches = loader.epoch(0)
        variants["data: augment one batch (TensorBatches)"] = lambda: next(batches)
        per_image = per_image_augmentation()
        variants["data: one batch, per-image torchvision transforms"] = lambda: torch.stack(
            [per_image(image) for image in data.images[:BATCH]])
        seconds = median_seconds(variants, args.repeats)
        rates = {name: BATCH / s for name, s in seconds.items()}
        figures["images_per_sec"][str(threads)] = rates
        reference = rates["plain, contiguous"]
        for name, rate in rates.items():
            rows.append((threads, name, round(rate, 1), round(rate / reference, 2)))
    figures["profile_ms"] = {kind: round(ms, 2) for kind, ms in profile_step(
        make_step(create_model(args.model, num_classes=CLASSES, small_input=True), True))}
    print(format_table(("threads", "variant", "images/s (median)", "/ plain contiguous"), rows))
    print()
    total = sum(figures["profile_ms"].values())
    print(format_table(("operation (ours, channels_last, last thread count)", "ms per step", "share"),
                       [(kind, ms, f"{100 * ms / total:.1f}%") for kind, ms in figures["profile_ms"].items()]))
    if args.json:
        write_result(args.json, figures)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
