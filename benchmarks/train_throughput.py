"""Training throughput on this CPU: ShuffleNet 1x (g=3) beside torchvision's shufflenet_v2_x1_0 and mobilenet_v2.

One SGD step (forward, cross-entropy, backward, update) on a 32 x 3 x 224 x 224 batch of random images, channels_last,
timed in alternation across the models so that noise hits all alike; prints the median images/s of each and the
ratio to ShuffleNet V1.

    python benchmarks/train_throughput.py [--batch 32] [--repeats 7] [--threads 2] [--json FILE]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import shufflenet
from shufflenet.io.results import write_result


def make_step(model: torch.nn.Module, batch: int):
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, 224, 224).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the result record here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {name: shufflenet.create_model(name) for name in ("shufflenet_v1_x1_0_g3", "tv_shufflenet_v2_x1_0",
                                                                "tv_mobilenet_v2")}
    steps = {name: make_step(model, args.batch) for name, model in models.items()}
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(args.repeats + 1):  # round 0 is warm-up
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_:
                seconds[name].append(time.perf_counter() - start)
    reference = args.batch / statistics.median(seconds["shufflenet_v1_x1_0_g3"])
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, 224x224, "
          f"median of {args.repeats} steps")
    medians = {}
    print("| model | MFLOPs | images/s (median) | min-max | ratio to ShuffleNet V1 |")
    print("|---|---:|---:|---:|---:|")
    for name, model in models.items():
        rates = sorted(args.batch / s for s in seconds[name])
        mflops = shufflenet.profile(model).mflops
        median = statistics.median(rates)
        print(f"| {name} | {mflops:.0f} | {median:.1f} | {rates[0]:.1f}-{rates[-1]:.1f} | {median / reference:.2f} |")
        medians[name] = median
    if args.json:
        write_result(args.json, {"batch": args.batch, "threads": args.threads, "repeats": args.repeats,
                                 "images_per_sec": medians})


if __name__ == "__main__":
    main()
