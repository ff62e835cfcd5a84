"""Where the time goes in ExecuTorch: per-operator time of a .pte program's XNNPACK delegate, grouped by kind.

Uses ExecuTorch's own event tracer (the program loaded with ETDump enabled, the dump read by the devtools'
``Inspector``). XNNPACK reports one event per operator it runs, named by its kernel (``Convolution (NHWC, F32)
IGEMM``, ``... DWConv``, ``Transpose (ND, X32)``...), so the kinds are XNNPACK's: a grouped or dense 1x1
convolution is an IGEMM or a GEMM, a depthwise one a DWConv, and the layout changes XNNPACK puts around each
channel shuffle show up as transposes.
"""
from __future__ import annotations

import re
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..io.pte_file import native_log, set_threads

RUNTIME_EVENTS = ("Method::execute", "DELEGATE_CALL")  # the runtime's own spans around the operators


def profile_pte(path: str | Path, input_shape: tuple[int, ...], runs: int = 30,
                threads: int = 1) -> list[dict[str, Any]]:
    """Mean time per run of each kind of operator, largest first: ``kind``, ``nodes`` (operators per run),
    ``us`` and ``share`` (of the summed operator time); the first run (warm-up) is left out."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    set_threads(threads)
    image = torch.randn(input_shape)
    with tempfile.TemporaryDirectory() as scratch, native_log(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Output Buffer not found": no tensors were dumped, only times
        module = _load_for_executorch(str(path), enable_etdump=True)
        for _ in range(runs + 1):
            module.forward((image,))
        dump = Path(scratch) / "trace.etdp"
        module.write_etdump_result_to_file(str(dump))
        blocks = Inspector(etdump_path=str(dump)).event_blocks
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: {"nodes": 0, "us": 0.0})
    for block in blocks:
        for event in block.events:
            if event.name in RUNTIME_EVENTS or event.perf_data is None or len(event.perf_data.raw) != runs + 1:
                continue  # the runtime's spans, and loading (timed once)
            kind = re.sub(r" #\d+$", "", event.name)
            kinds[kind]["nodes"] += 1
            kinds[kind]["us"] += 1e3 * sum(event.perf_data.raw[1:]) / runs
    total = sum(k["us"] for k in kinds.values())
    return [{"kind": kind, "nodes": int(k["nodes"]), "us": k["us"], "share": k["us"] / total}
            for kind, k in sorted(kinds.items(), key=lambda item: -item[1]["us"])]
