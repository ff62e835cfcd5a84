"""The machine a figure was measured on: CPU model and instruction-set flags (read once from /proc/cpuinfo),
core count, library versions and date. Every result file records :func:`environment`."""
from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path
from typing import Any

# The flags that decide which kernels run here: AVX2 / AVX-512 vector width, VNNI int8 dot products,
# bf16 / fp16 arithmetic, AMX tiles.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                "amx_bf16", "amx_int8")


@functools.cache
def cpu() -> tuple[str, frozenset[str]]:
    """(CPU model name, its flags); the platform's processor string and no flags where /proc/cpuinfo is absent."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU", frozenset()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    return fields.get("model name", platform.processor() or "unknown CPU"), frozenset(fields.get("flags", "").split())


def has_vnni() -> bool:
    """AVX-512 VNNI or AVX-VNNI: int8 dot products summed into 32 bits (what fast int8 kernels need)."""
    flags = cpu()[1]
    return "avx512_vnni" in flags or "avx_vnni" in flags


def vector_floats() -> int:
    """Floats per SIMD register: 16 with AVX-512, else 8 (AVX2); ONNX Runtime's NCHWc channel block."""
    return 16 if "avx512f" in cpu()[1] else 8


def environment() -> dict[str, Any]:
    """CPU, its kernel-relevant flags, logical CPUs, Python / torch / ONNX Runtime versions, date (UTC)."""
    import torch

    model, flags = cpu()
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": model, "cpu_flags": sorted(flag for flag in KERNEL_FLAGS if flag in flags),
            "logical_cpus": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": ort_version,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
