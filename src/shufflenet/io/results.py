"""Result files: every figure in the README and docs comes from a JSON record under ``results/`` holding the
command that produced it, the machine (CPU and its flags), the date and the figures."""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ..machine import environment
from .atomic import write_atomically


def result_record(figures: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """``figures`` with the command that produced them (default: this process's command line) and
    :func:`machine.environment`."""
    if command is None:
        script = sys.argv[0]
        program = ["python", os.path.relpath(script)] if script.endswith(".py") else [Path(script).name]
        command = shlex.join([*program, *sys.argv[1:]])
    return {"command": command, "machine": environment(), **figures}


def write_result(path: str | Path, figures: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """Write :func:`result_record` as indented JSON, atomically; returns the record."""
    record = result_record(figures, command)
    write_atomically(path, (json.dumps(record, indent=1) + "\n").encode())
    return record


def read_result(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
