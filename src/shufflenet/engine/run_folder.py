"""A run's folder: inside ``--output``, owned by one run at a time, never silently replaced.

Ownership is an exclusive ``flock`` on ``.lock`` in the folder, held for the whole run (by rank 0 under
torchrun); the operating system releases it when the process ends, however it ends, so a killed run never
leaves its folder locked. A folder that already holds a run is continued with ``--resume``, replaced only with
``--overwrite``, and otherwise refused.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

LOCK = ".lock"


class RunFolder:
    def __init__(self, output: str | os.PathLike, name: str) -> None:
        self.output = Path(output)
        self.path = self.output / name
        if self.path.resolve().parent != self.output.resolve():
            raise ValueError(f"run name {name!r} leaves the output folder {self.output}; use a plain folder name")
        self._lock_file: int | None = None

    def holds_run(self) -> bool:
        """Whether the folder holds anything of an earlier run."""
        return self.path.is_dir() and any(not p.name.startswith(".") for p in self.path.iterdir())

    def acquire(self, *, resuming: bool, overwrite: bool) -> None:
        """Lock the folder for this run. A new run (not ``resuming``) refuses a folder that holds a run unless
        ``overwrite``, which then empties it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ValueError(f"cannot create the run folder {self.path} ({error.strerror}); choose a writable "
                             f"--output") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise ValueError(f"{self.path} is in use by another run right now; wait for it to end or choose "
                             f"another --name") from None
        self._lock_file = handle
        if not resuming and self.holds_run():
            if not overwrite:
                self.release()
                raise ValueError(f"{self.path} already holds a run; continue it with --resume auto, choose a fresh "
                                 f"--name, or pass --overwrite to replace it")
            for entry in self.path.iterdir():
                if entry.name != LOCK:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            os.close(self._lock_file)
            self._lock_file = None
