"""Progress on stderr for long verbs: one rich bar per stage with its ETA on a terminal, plain result
lines elsewhere. Library code reports through callbacks (`begin`/`update`/`end`); only the command
line draws."""
from __future__ import annotations

from typing import Any


class StageDisplay:
    """One rich progress line per stage on stderr, with its ETA, and one result line per finished
    stage. Where stderr is not a terminal the bars stay hidden: periodic plain lines (scalelab.progress)
    and the result lines are printed."""

    def __init__(self, stages: tuple[str, ...], enabled: bool = True):
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from scalelab.progress import progress_bars

        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.plain = enabled and not self.live
        self.progress = progress_bars(TextColumn("{task.description:<10}"), BarColumn(bar_width=24),
                                      TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TextColumn("ETA"),
                                      TimeRemainingColumn(), TextColumn("{task.fields[what]}"), console=self.console,
                                      disable=not self.live, plain=self.plain)
        self.tasks = {s: self.progress.add_task(s, total=None, start=False, what="waiting") for s in stages}

    def __enter__(self) -> "StageDisplay":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def begin(self, stage: str, total: float, what: str = "") -> None:
        self.progress.start_task(self.tasks[stage])
        self.progress.update(self.tasks[stage], total=max(total, 1e-9), completed=0, what=what)

    def update(self, stage: str, completed: float | None = None, what: str | None = None) -> None:
        kw: dict[str, Any] = {} if completed is None else {"completed": completed}
        self.progress.update(self.tasks[stage], **kw, **({} if what is None else {"what": what}))

    def end(self, stage: str, line: str) -> None:
        """The bar completes and the stage's result is printed (above the bars on a terminal)."""
        self.progress.update(self.tasks[stage], completed=self.progress.tasks[self.tasks[stage]].total, what="done")
        self.progress.stop_task(self.tasks[stage])
        if self.live or self.plain:
            self.console.print(f"{stage:<10} {line}", highlight=False, soft_wrap=True)
