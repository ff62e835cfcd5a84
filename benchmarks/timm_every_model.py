"""Issue 20's "script/FX work on every model", checked on every model of ours through timm (tests/test_timm.py
checks a sample of 13 within the test budget; this takes about two minutes on 2 cores).

For each registered model, built by ``timm.create_model`` at 64x64: ``torch.jit.script``, ``torch.fx.symbolic_trace``
and torchvision's ``create_feature_extractor`` give outputs equal to eager (zero tolerance), feature maps equal to
``forward_intermediates``; gradients through the FX graph equal eager's; the ``features_only`` backbone scripts and
traces too. Exit code 1 when any model fails.

    python benchmarks/timm_every_model.py
"""
from __future__ import annotations

import sys
import time

import timm
import torch
from torchvision.models.feature_extraction import create_feature_extractor

import shufflenet.timm as ours

SIZE = 64


def check(name: str) -> None:
    """Raise when one of the checks fails for ``name``."""
    model = timm.create_model(name, num_classes=5).eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        eager = model(images)
        for converted in (torch.jit.script(model), torch.fx.symbolic_trace(model)):
            torch.testing.assert_close(converted(images), eager, rtol=0, atol=0)
        levels = {info["module"]: str(i) for i, info in enumerate(model.feature_info.get_dicts())}
        extracted = create_feature_extractor(model, return_nodes={**levels, "classifier": "logits"})(images)
        for i, feature_map in enumerate(model.forward_intermediates(images, intermediates_only=True)):
            torch.testing.assert_close(extracted[str(i)], feature_map, rtol=0, atol=0)
        torch.testing.assert_close(extracted["logits"], eager, rtol=0, atol=0)
    model.train()
    graph = torch.fx.symbolic_trace(model)  # shares the model's parameters
    gradients = []
    for forward in (model, graph):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        forward(images).square().sum().backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
    for through_graph, through_eager in zip(*reversed(gradients)):
        torch.testing.assert_close(through_graph, through_eager, rtol=1e-4, atol=1e-6)
    backbone = timm.create_model(name, features_only=True, out_indices=(1, 3)).eval()
    with torch.no_grad():
        maps = backbone(images)
        for converted in (torch.jit.script(backbone), torch.fx.symbolic_trace(backbone)):
            for got, expected in zip(converted(images), maps):
                torch.testing.assert_close(got, expected, rtol=0, atol=0)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start, failed = time.time(), []
    for name in ours.OURS:
        try:
            check(name)
            print(f"ok   {name} ({time.time() - start:.0f} s)", flush=True)
        except Exception as error:  # every model is checked; the failures are listed at the end
            failed.append(name)
            print(f"FAIL {name}: {str(error).strip().splitlines()[0] if str(error).strip() else error!r}", flush=True)
    print(f"{len(ours.OURS) - len(failed)} of {len(ours.OURS)} models passed" + (f"; failed: {failed}" * bool(failed)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
