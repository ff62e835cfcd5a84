"""Atomic file output: write to a temporary file beside the target, then ``os.replace`` it into place."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Raise a ``ValueError`` saying what to fix unless a file can be written at ``path`` (its folder exists and
    is writable, and ``path`` is not a folder): called before long work, so that it is not lost at the end."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"output {target} is a directory; give a file name")
    if not target.parent.is_dir():
        raise ValueError(f"output directory {target.parent} does not exist; create it first")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise ValueError(f"output directory {target.parent} is not writable; choose another output path")
    return target


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success it replaces ``path`` in one step, on any
    error it is deleted, so ``path`` is either the complete new file or untouched."""
    target = check_writable(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise ValueError(f"cannot write in {target.parent} ({error.strerror}); choose another output path") from None
    os.close(handle)
    try:
        yield Path(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output`, flushed to disk before the rename: readers see
    the old file or the new one, never a partial one."""
    with atomic_output(path) as temporary, open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
