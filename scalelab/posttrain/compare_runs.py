"""Paired comparison of models on the same testbed problems: greedy accuracy and its change.

    scalelab posttrain compare BASE CHILD [CHILD ...] --split val --problems 1000 --difficulties 2-4

Every model answers the same problems (one greedy worked solution each, the exact verifier); the
change of a child against BASE is the mean of the per-problem differences, and its standard error
is that of the paired differences, sd(c_child - c_base) / sqrt(n), much smaller than the two
accuracies' own errors because both models find the same problems hard. `mid` pools the given
difficulties. Problems are the first `problems` distinct ones of the split's seeded stream; the
later ones of a large request are the rarer (and harder) ones, since common problems repeat.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from scalelab.errors import InputError


@dataclass
class Comparison:
    models: list[str]
    difficulties: list[int]
    correct: dict[tuple[str, int], np.ndarray]  # (model, steps) -> per-problem correctness

    def accuracy(self, model: str, d: int) -> float:
        return float(self.correct[(model, d)].mean())

    def delta(self, model: str, ds: Sequence[int]) -> tuple[float, float, int]:
        """Mean paired change against the base over difficulties `ds`, its standard error, n."""
        diff = np.concatenate([self.correct[(model, d)] - self.correct[(self.models[0], d)] for d in ds])
        se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
        return float(diff.mean()), se, int(diff.size)

    def as_dict(self) -> dict[str, Any]:
        base = self.models[0]
        return {"base": base, "difficulties": self.difficulties,
                "models": {m: {"accuracy": {str(d): self.accuracy(m, d) for d in self.difficulties},
                               "problems": {str(d): int(self.correct[(m, d)].size) for d in self.difficulties},
                               **({} if m == base else {
                                   "delta": {str(d): self.delta(m, [d])[:2] for d in self.difficulties},
                                   "delta_pooled": self.delta(m, self.difficulties)[:2]})}
                           for m in self.models}}


def compare(paths: Sequence[str], *, split: str = "test", problems: int = 1000, difficulties: Sequence[int] | None = None,
            seed: int = 0, max_batch: int = 512, progress: Any = None) -> Comparison:
    from scalelab.posttrain.stage import open_run, same_tokenizer
    from scalelab.inference.engine import Engine, SamplingParams
    from scalelab.tasks.testbed import TestbedTask

    if len(paths) < 2:
        raise InputError("compare needs a base run and at least one other run")
    refs = [open_run(p, role="run") for p in paths]
    for r in refs[1:]:
        same_tokenizer(refs[0], r, role="run")
    src, task = refs[0].testbed(), TestbedTask()
    ds = sorted(set(difficulties or range(1, src.config.max_steps + 1)))
    bad = [d for d in ds if not 1 <= d <= src.config.max_steps]
    if bad:
        raise InputError(f"difficulties {bad}: the base run's testbed has 1..{src.config.max_steps} steps")
    names = [r.run_id for r in refs]
    if len(set(names)) < len(names):
        raise InputError("the same run is given twice")
    correct: dict[tuple[str, int], np.ndarray] = {}
    sets = {d: src.problems(split, problems, steps=d, seed=seed) for d in ds}
    for i, (name, ref) in enumerate(zip(names, refs)):
        eng = Engine(ref.load_model(train=False), ref.tokenizer, max_batch=max_batch)
        for d, probs in sets.items():
            g = eng.generate([task.prompt(p) for p in probs], 1,
                             SamplingParams(temperature=0.0, max_tokens=max(task.max_tokens(p) for p in probs)))
            correct[(name, d)] = np.array([task.verify(p, r[0].text).correct for p, r in zip(probs, g.completions)],
                                          float)
        if progress is not None:
            progress("models", i + 1, len(refs))
    return Comparison(names, ds, correct)
