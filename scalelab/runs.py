"""One run lifecycle for every kind of run: pretraining runs, post-training stages, reward-model
training and test-time evaluations.

    run_id("d4", "3M", key=config)     -> "d4-3M-1a2b3c4d": readable parts, then a hash of the config
    with run_lock(run_dir): ...        one process per run; the kernel drops the lock when it dies
    done = finished(run_dir)           the complete record of a run, to reuse instead of re-running
    with torch_threads(1): ...         pin torch's threads for a block, then restore them

A run id is a pure function of the config that made the run (its execution settings left out), so
re-running a command finds the finished run and reuses it, and an interrupted one resumes.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Iterator

from scalelab.errors import ScalelabError
from scalelab.records import RECORD_FILE, RunRecord, config_hash, read_record


def run_id(*parts: str, key: dict[str, Any]) -> str:
    """Readable parts joined by "-", then the 8-hex-digit hash of `key` (the config that matters)."""
    return "-".join([*parts, config_hash(key)])


def finished(run_dir: str | Path) -> RunRecord | None:
    """The run's record if it completed, else None (absent, running, failed or unreadable)."""
    path = Path(run_dir)
    if not (path / RECORD_FILE).is_file():
        return None
    try:
        rec = read_record(path)
    except ScalelabError:
        return None
    return rec if rec.status == "complete" else None


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """An exclusive lock on a run; the kernel drops it when its process dies, even by kill -9."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"{run_dir}: another process is training this run") from None
        yield
    finally:
        os.close(fd)


class RunBusy(ScalelabError):
    """The run is being trained by another live process."""


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with `n` torch threads (None: as they are), then restore the previous count,
    so that a run inside a longer-lived process (tests, sweeps in process) leaves it as it found it."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
