"""Strategies against a baseline at equal or lower FLOPs, paired over the same problems.

    rows = compare_at_budget("runs/tt", baseline="cot", budget=("majority", 16), difficulties=[3, 4, 5])

For every strategy and difficulty the point kept is the largest budget n whose FLOPs per question
(policy + verifier) are at most those of `budget` (a strategy and its n, on the same difficulty:
"no more compute than n = 16 samples"). Its gap to the baseline comes with the paired standard
error: both answered the same problems (the same seed, split and count), so the per-problem
differences are averaged and the spread of problem difficulty cancels, which an unpaired
comparison of two accuracies with their own standard errors would count twice. A `pooled` row per
strategy pools the problems of all the difficulties asked for. Records are read, nothing is run.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import InputError
from scalelab.tables import load_runs
from scalelab import passk as est
SAME_PROBLEMS = ("seed", "problems", "split", "modulus", "task")  # config fields that fix the problem set


def _points(path: str | Path) -> dict[tuple[str, int], dict[int, Any]]:
    out: dict[tuple[str, int], dict[int, Any]] = defaultdict(dict)
    for r in load_runs(path).records:
        m = r.metrics
        if r.phase != "testtime" or m.get("kind") == "adaptive" or "per_problem" not in m:
            continue
        out[(r.technique, int(m["steps"]))][int(m["n"])] = r
    return out


def _problem_set(r: Any) -> tuple[Any, ...]:
    return tuple(r.config.get(k) for k in SAME_PROBLEMS) + (str(r.parent_id),)


def compare_at_budget(runs: str | Path, *, baseline: str = "cot", budget: tuple[str, int] = ("majority", 16),
                      difficulties: list[int] | None = None,
                      strategies: list[str] | None = None) -> list[dict[str, Any]]:
    pts = _points(runs)
    steps = sorted({d for _, d in pts if difficulties is None or d in difficulties})
    if not steps:
        raise InputError(f"{runs}: no test-time records" + (f" at difficulties {difficulties}" if difficulties else ""))
    names = sorted({t for t, _ in pts if t not in (baseline,) and (strategies is None or t in strategies)})
    rows: list[dict[str, Any]] = []
    pooled: dict[str, list[np.ndarray]] = defaultdict(list)  # strategy -> [per-problem accuracy, gap]
    for d in steps:
        base = pts.get((baseline, d), {}).get(1)
        cap = pts.get((budget[0], d), {}).get(budget[1])
        if base is None or cap is None:
            missing = baseline if base is None else f"{budget[0]} n={budget[1]}"
            raise InputError(f"{runs}: no record of {missing} at {d} steps to compare against")
        limit = cap.metrics["flops_per_question"]
        b = np.asarray(base.metrics["per_problem"], float)
        for t in names:
            within = [r for n, r in sorted(pts.get((t, d), {}).items()) if r.metrics["flops_per_question"] <= limit]
            if not within:
                continue
            r = within[-1]
            if _problem_set(r) != _problem_set(base):
                raise InputError(f"{t} and {baseline} at {d} steps were evaluated on different problems "
                                 f"(seed, problems, split or modulus differ); compare runs of one evaluation")
            a = np.asarray(r.metrics["per_problem"], float)
            gap, gap_se = est.mean_and_se(a - b)
            acc, se = est.mean_and_se(a)
            rows.append({"strategy": t, "steps": d, "n": int(r.metrics["n"]), "flops": r.metrics["flops_per_question"],
                         "budget_flops": limit, "accuracy": acc, "accuracy_se": se, "baseline": float(b.mean()),
                         "gap": gap, "gap_se": gap_se, "problems": int(a.size)})
            pooled[t].append(np.stack([a, a - b]))
    for t in names:
        if len(pooled[t]) < 2 or len(pooled[t]) < len(steps):
            continue  # a pooled row only where the strategy is present at every difficulty asked for
        a, g = np.concatenate(pooled[t], axis=1)
        acc, se = est.mean_and_se(a)
        gap, gap_se = est.mean_and_se(g)
        rows.append({"strategy": t, "steps": "pooled", "n": None, "flops": math.nan, "budget_flops": math.nan,
                     "accuracy": acc, "accuracy_se": se, "baseline": float(acc - gap), "gap": gap, "gap_se": gap_se,
                     "problems": int(a.size)})
    return rows
