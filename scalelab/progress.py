"""Progress that reaches a log file too: a rich `Progress` whose bars draw on a terminal and which,
where stderr is not a terminal (a CI log, `2> log`, a batch job), prints a plain line per task at
most every `SCALELAB_PROGRESS_EVERY` seconds (default 30) with its count, elapsed time and ETA.

Rich alone prints nothing until the end when its console is not a terminal: a sweep of an hour
wrote no line for an hour. Every long verb makes its bars with `progress_bars(...)` instead.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from rich.progress import Progress


def _every() -> float:
    try:
        return max(0.0, float(os.environ.get("SCALELAB_PROGRESS_EVERY", "30")))
    except ValueError:
        return 30.0


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class PlainProgress(Progress):
    """See the module docstring. On a terminal it is rich's `Progress` unchanged."""

    def __init__(self, *columns: Any, plain: bool | None = None, **kw: Any):
        super().__init__(*columns, **kw)
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.every = _every()
        self._last: dict[Any, float] = {}
        self._t0: dict[Any, float] = {}

    def update(self, task_id: Any, **kw: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kw)
        if self.plain:
            self._line(task_id)

    def advance(self, task_id: Any, advance: float = 1) -> None:
        super().advance(task_id, advance)
        if self.plain:
            self._line(task_id)

    def _line(self, task_id: Any) -> None:
        now = time.monotonic()
        t0 = self._t0.setdefault(task_id, now)
        if now - self._last.get(task_id, t0) < self.every:
            return
        self._last[task_id] = now
        task = self._tasks[task_id]
        done, total = task.completed, task.total
        where = f"{done:.4g}/{total:.4g} ({100 * done / total:.0f}%)" if total else f"{done:.4g}"
        eta = ""
        if total and 0 < done < total:
            eta = f", ETA {_clock((now - t0) * (total - done) / done)}"
        print(f"{task.description}: {where}, {_clock(now - t0)} elapsed{eta}", file=sys.stderr, flush=True)


def progress_bars(*columns: Any, **kw: Any) -> PlainProgress:
    """Bars on stderr (see the module docstring); `columns` and `kw` as rich's `Progress`, and `plain`
    to force the plain lines on or off (default: on where stderr is not a terminal)."""
    from rich.console import Console

    kw.setdefault("console", Console(stderr=True))
    return PlainProgress(*columns, **kw)
