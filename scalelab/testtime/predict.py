"""Predicting a large budget from small ones: fit a test-time law on n <= fit_max_n and compare
its prediction at n = at with the measured point.

Honest protocol (what the acceptance test asks): the small-n points must not be estimated from
the large pool, or the "prediction" has seen the large-n samples. Run the evaluation twice with
different seeds -- `--n 1,2,4,8` into one folder (a pool of 8 samples per problem) and `--n 64`
into another -- and pass the second as `against`. When the fit points come from a pool larger
than fit_max_n, each row says so (`pool_n`).

`pooled=True` fits one curve per strategy: the mean accuracy over the difficulties asked for (the
budgets present at every one of them), predicted against the mean at `at`; a curve of 100
problems per difficulty carries standard errors of ~0.05 per point, the mean of four ~0.025.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import InputError
from scalelab.ledger import load_runs


def _curves(path: str | Path) -> dict[tuple[str, str, int], dict[int, Any]]:
    out: dict[tuple[str, str, int], dict[int, Any]] = defaultdict(dict)
    for r in load_runs(path).records:
        if r.phase != "testtime" or r.metrics.get("kind") in ("single", "adaptive"):
            continue
        key = (str(r.parent_id), r.technique, int(r.metrics["steps"]))
        n = int(r.metrics["n"])
        if n in out[key]:
            raise InputError(f"{path}: two records for {key[1]} d{key[2]} n={n} (different settings in one folder?)")
        out[key][n] = r
    return out


def _pool(curves: dict[tuple[str, str, int], dict[int, Any]],
          difficulties: list[int] | None) -> dict[tuple[str, str, Any], dict[int, Any]]:
    """One curve per (model, strategy): a point per n present at every difficulty, its metrics the
    means over them (per-problem pool counts concatenated)."""
    from types import SimpleNamespace

    groups: dict[tuple[str, str], list[dict[int, Any]]] = defaultdict(list)
    for (pid, tech, steps), pts in curves.items():
        if difficulties is None or steps in difficulties:
            groups[(pid, tech)].append(pts)
    out: dict[tuple[str, str, Any], dict[int, Any]] = {}
    for (pid, tech), many in groups.items():
        ns = set.intersection(*(set(pts) for pts in many))
        out[(pid, tech, "pooled")] = {n: SimpleNamespace(metrics={
            "n": n, "accuracy": float(np.mean([pts[n].metrics["accuracy"] for pts in many])),
            "flops_per_question": float(np.mean([pts[n].metrics["flops_per_question"] for pts in many])),
            "pool_n": max(int(pts[n].metrics.get("pool_n") or 0) for pts in many) or None,
            "pool_correct": [c for pts in many for c in pts[n].metrics.get("pool_correct") or []],
            "accuracy_se": None}) for n in ns}
    return out


def predict_curves(runs: str | Path, *, against: str | Path | None = None, law: str = "testtime", x: str = "n",
                   fit_max_n: int = 8, at: int = 64, strategies: list[str] | None = None,
                   pooled: bool = False, difficulties: list[int] | None = None) -> list[dict[str, Any]]:
    from scalelab.laws.coverage import CoverageLaw
    from scalelab.laws.testtime import TesttimeLaw

    if law not in ("testtime", "coverage"):
        raise InputError(f"--law {law!r}: choose testtime or coverage")
    if x not in ("n", "flops"):
        raise InputError(f"--x {x!r}: choose n or flops")
    small = _curves(runs)
    big = _curves(against) if against is not None else small
    if pooled:
        small, big = _pool(small, difficulties), _pool(big, difficulties)
    elif difficulties is not None:
        small = {k: v for k, v in small.items() if k[2] in difficulties}
    rows = []
    for key, pts in sorted(small.items()):
        pid, tech, steps = key
        if strategies and tech not in strategies:
            continue
        if (law == "coverage") != (tech == "coverage"):
            continue
        fit = [pts[n] for n in sorted(pts) if n <= fit_max_n]
        if len({r.metrics["n"] for r in fit}) < 3:
            continue
        xs = np.array([r.metrics["n"] if x == "n" else r.metrics["flops_per_question"] for r in fit], float)
        ys = np.array([r.metrics["accuracy"] for r in fit], float)
        pool_n = max(int(r.metrics.get("pool_n") or 0) for r in fit) or None
        if law == "coverage":
            counts = None
            if pool_n is not None and pool_n <= fit_max_n and fit[-1].metrics.get("pool_correct"):
                counts = (fit[-1].metrics["pool_correct"], pool_n)
            est = CoverageLaw(bootstrap=0).fit(xs, ys, counts=counts)
            desc = f"alpha={est.params_['alpha']:.3g} beta={est.params_['beta']:.3g}" + (" (MLE)" if counts else "")
        else:
            est = TesttimeLaw(x=x, bootstrap=0).fit(xs, ys)
            p = est.params_
            desc = f"A={p['A']:.3f} B={p['B']:.3g} gamma={p['gamma']:.3g}"
        if not est.converged_:
            desc += " NOT CONVERGED"
        target = big.get(key, {}).get(at)
        if x == "flops":
            if target is None:
                continue
            x_at = target.metrics["flops_per_question"]
        else:
            x_at = at
        pred = float(est.predict([x_at])[0])
        obs = float(target.metrics["accuracy"]) if target is not None else None
        if pool_n is not None and pool_n > fit_max_n:
            desc += f"; fit points estimated from a pool of {pool_n}"
        rows.append({"model": pid, "strategy": tech, "steps": steps, "points": len(fit), "predicted": pred,
                     "observed": obs, "error": None if obs is None else pred - obs, "fit": desc,
                     "observed_se": target.metrics.get("accuracy_se") if target is not None else None})
    if not rows:
        raise InputError(f"{runs}: no curve with 3 or more budgets n <= {fit_max_n} to fit"
                         + (" (the coverage law needs the 'coverage' strategy)" if law == "coverage" else ""))
    return rows
