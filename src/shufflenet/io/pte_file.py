"""ExecuTorch programs (.pte): a runner (images -> logits) on ExecuTorch's runtime with a set thread count, and
the record our exports carry inside the program.

The record (model name, class count, preprocessing, class names: ``deploy.export.export_metadata``) is the
JSON text of the constant method :data:`RECORD_METHOD` (a uint8 tensor), so a .pte file is self-contained like
an ONNX export. The program takes one image per call; the runner feeds a batch image by image.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import first_line
from .onnx_file import Runner

RECORD_METHOD = "shufflenet_record"
FLATBUFFER_IDENTIFIER = b"ET"  # bytes 4-5 of an ExecuTorch program (flatbuffer file identifier "ET12")


def encode_record(record: dict[str, str]) -> torch.Tensor:
    return torch.tensor(list(json.dumps(record).encode()), dtype=torch.uint8)


@contextlib.contextmanager
def native_log() -> Iterator[list[str]]:
    """Collect what the runtime writes to standard error (log lines such as ``[program.cpp:114] File size is too
    small...``, at the file-descriptor level or through Python's ``sys.stderr``, where the bindings send them)
    into the yielded list, so that they neither reach the terminal nor break a one-line error; a caller's
    message can quote them."""
    sys.stderr.flush()
    saved = os.dup(2)
    lines: list[str] = []
    with tempfile.TemporaryFile() as capture, contextlib.redirect_stderr(io.StringIO()) as python:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace") + python.getvalue()
            lines.extend(re.sub(r"^\[[\w.]+:\d+\]\s*", "", line).strip() for line in text.splitlines() if line.strip())


def set_threads(threads: int) -> int:
    """Size ExecuTorch's CPU threadpool, which the XNNPACK delegate runs on, to ``threads`` (the calling thread
    included) and return the size it reports. The pool is one per process and a delegate takes it when its
    method is loaded, so set it before loading (``pte_runner`` does) and load again after changing it: the
    runtime calls the reset "unsafe" for methods loaded before it."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    with native_log():  # "Resetting threadpool to N threads."
        if _threadpool_get_thread_count() != threads:
            _unsafe_reset_threadpool(threads)
        return _threadpool_get_thread_count()


def load_program(path: str | Path) -> Any:
    """The ExecuTorch program in ``path``; a missing, empty, truncated or foreign file raises a one-line
    ``ValueError`` saying so."""
    from executorch.runtime import Runtime

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"{path} is {'empty' if path.is_file() else 'not a file'}; give a .pte file written by "
                         f"`shufflenet export --format executorch`, or export it again")
    with path.open("rb") as file:
        head = file.read(8)
    if head[4:6] != FLATBUFFER_IDENTIFIER:
        raise ValueError(f"{path} is not an ExecuTorch program (no ET file identifier); export it again with "
                         f"`shufflenet export --format executorch`")
    with native_log() as log:
        try:
            return Runtime.get().load_program(path)
        except Exception as error:  # the runtime raises RuntimeError for truncated or corrupt programs
            failure = error
    reason = log[-1] if log else first_line(failure)
    raise ValueError(f"{path} is not a readable ExecuTorch program ({reason}); export it again")


def read_pte_record(program: Any) -> dict[str, str]:
    """The record a program carries (empty for a program exported elsewhere)."""
    if RECORD_METHOD not in program.method_names:
        return {}
    with native_log():
        data = program.load_method(RECORD_METHOD).execute([])[0]
    return json.loads(bytes(data.tolist()).decode())


def pte_runner(path: str | Path, threads: int = 1) -> Runner:
    """A function images -> logits running the program's ``forward`` on ``threads`` threads, one image per call
    (a batch is run image by image)."""
    return load_pte(path, threads)[0]


def load_pte(path: str | Path, threads: int = 1) -> tuple[Runner, dict[str, str]]:
    """The runner (:func:`pte_runner`) and the record of the .pte file at ``path``."""
    set_threads(threads)
    program = load_program(path)
    if "forward" not in program.method_names:
        raise ValueError(f"{path} has no forward method; export it again with `shufflenet export --format "
                         f"executorch`")
    failure = None
    with native_log() as log:
        try:
            method = program.load_method("forward")
        except Exception as error:  # a corrupt delegate payload: RuntimeError
            failure = first_line(error)
    if failure is not None:
        raise ValueError(f"{path}: its forward method does not load ({log[-1] if log else failure}); export it "
                         f"again")
    expected = tuple(method.metadata.input_tensor_meta(0).sizes())

    def run(images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != expected[1:]:
            raise ValueError(f"{path} takes images of shape {expected[1:]}, got {tuple(images.shape[1:])}; "
                             f"preprocess with the recorded preprocessing")
        return torch.cat([method.execute([image[None].contiguous()])[0] for image in images.float()])

    return run, read_pte_record(program)
