"""Resumable post-training: a stage's training state saved by wall time, restored when the same
command runs again after a kill, so the steps done before it are not redone.

    RUN_DIR/resume/   model.safetensors      every tensor of the model being trained (LoRA
                                             wrappers and pruning masks included), by name
                      optimizer.safetensors  AdamW moments + the torch RNG state
                      trainer_state.json     the loop's position and counters, this stage's FLOPs
                                             ledger, how many metrics rows were written; last,
                                             so its presence marks completeness

written by `checkpoint.swap_in` (whole to a temporary directory, then renamed; the previous state
stays until then), read with safetensors only. A finished stage deletes it.

What a re-run does: everything a stage does before its training loop (loading, teacher sampling,
data) is computed again from the same seeds, so it lands where it was; its metrics rows, already
in metrics.jsonl, are not written twice (`keep_row`). The training loop then restores the saved
weights, optimizer, RNG, position and ledger (`restore`) and goes on from the saved step. The
ledger is the saved one: the run's FLOPs are those of one uninterrupted run, and
`record.resumed_from_step` says a resume happened and where.

A stage may run several training loops (rejection-sampling fine-tuning trains once per round); the
state names the loop it belongs to (`scope`, counted in order), and only that loop restores it.
Earlier loops run again in full (the work between them depends on their weights), and do not
overwrite the later state while they do.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalelab import checkpoint
from scalelab.records import METRICS_FILE, atomic_write_text

STATE_DIR = "resume"


@dataclass
class Resume:
    run_dir: Path
    interval_s: float                       # save when this long has passed since the last save
    saved: dict[str, Any] | None = None     # the state found when the stage started
    path: Path | None = None
    rows: int = 0                           # metrics rows this attempt has produced (written or replayed)
    scope: int = -1                         # training loops entered so far
    restored: dict[str, Any] | None = None  # where this attempt picked up, once it has
    last: float = field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, run_dir: Path, interval_s: float) -> "Resume":
        """The state of a killed attempt, if any, with metrics.jsonl cut back to the rows it had
        seen (rows logged after the last save are produced again); otherwise a fresh start."""
        path = checkpoint.latest(run_dir, STATE_DIR)
        metrics = run_dir / METRICS_FILE
        if path is None:
            for p in (run_dir / STATE_DIR, metrics):
                _remove(p)
            return cls(run_dir, interval_s)
        saved = json.loads((path / checkpoint.STATE_FILE).read_text())
        if metrics.is_file():
            lines = [ln for ln in metrics.read_text().splitlines(keepends=True) if ln.endswith("\n")]
            atomic_write_text(metrics, "".join(lines[:saved["rows"]]))
        return cls(run_dir, interval_s, saved, path)

    def keep_row(self) -> bool:
        """False for a row an earlier attempt already wrote (the replay before the restore point)."""
        self.rows += 1
        return self.saved is None or self.restored is not None or self.rows > self.saved["rows"]

    def enter(self) -> int:
        """A training loop begins; its scope number."""
        self.scope += 1
        return self.scope

    def restore(self, kind: str, model: Any, optimizer: Any, ledger: Any) -> dict[str, Any] | None:
        """The loop's saved position (and weights, moments, RNG and ledger put back), or None."""
        s = self.saved
        if s is None or self.restored is not None or s["scope"] != self.scope or s["kind"] != kind:
            return None
        from safetensors.torch import load_model

        load_model(model, str(self.path / "model.safetensors"), strict=True)
        checkpoint.load(self.path, optimizer, model)
        ledger.exact, ledger.six_n = dict(s["ledger"]["exact"]), dict(s["ledger"]["six_n"])
        ledger.tokens, ledger.eval_flops = dict(s["ledger"]["tokens"]), float(s["ledger"]["eval_flops"])
        self.rows = s["rows"]
        self.restored = {"scope": s["scope"], "kind": kind, "step": s["loop"].get("step")}
        self.last = time.perf_counter()
        return s["loop"]

    def due(self) -> bool:
        return time.perf_counter() - self.last >= self.interval_s

    def save(self, kind: str, model: Any, optimizer: Any, ledger: Any, loop: dict[str, Any]) -> None:
        """Save the loop's state now (call between steps, after `due()`)."""
        if self.saved is not None and self.restored is None and self.saved["scope"] > self.scope:
            return  # replaying an earlier loop: the later state on disk is further along
        from safetensors.torch import save_model

        state = {"kind": kind, "scope": self.scope, "rows": self.rows, "loop": loop,
                 "ledger": {"exact": ledger.exact, "six_n": ledger.six_n, "tokens": ledger.tokens,
                            "eval_flops": ledger.eval_flops}}
        checkpoint.swap_in(self.run_dir, STATE_DIR, lambda tmp: save_model(model, str(tmp / "model.safetensors")),
                           model, optimizer, state)
        self.last = time.perf_counter()

    def finish(self) -> None:
        """The stage's child is saved: the training state is no longer needed."""
        for p in (self.run_dir / STATE_DIR, self.run_dir / (STATE_DIR + checkpoint.OLD_SUFFIX)):
            _remove(p)


def _remove(p: Path) -> None:
    import shutil

    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        os.unlink(p)
