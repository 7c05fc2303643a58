"""Predicting a large budget from small ones: fit a test-time law on n <= fit_max_n and compare
its prediction at n = at with the measured point.

Honest protocol (what the acceptance test asks): the small-n points must not be estimated from
the large pool, or the "prediction" has seen the large-n samples. Run the evaluation twice with
different sample seeds -- `--n 1,...,8 --set sample_seed=1` into one folder (a pool of 8 samples per
problem) and `--n 64` into another -- and pass the second as `against`. When the fit points come
from a pool larger than fit_max_n, each row says so (`pool_n`).

Laws (`law`):
- `testtime`: acc(n) = A - B n^(-gamma) on the curve's points. Plain majority vote is fitted on its
  odd budgets when three or more are recorded: with ties broken at random, a vote of 2 is exactly
  a single sample and even budgets add ties, so the curve is not smooth across parity.
- `coverage`: pass@k from the per-problem beta-binomial, by maximum likelihood from the small
  pool's per-problem counts; `shared_alpha` fits one alpha for all the difficulties asked for and a
  beta per difficulty (`laws.coverage.SharedTailCoverage`).
- `selection` (best-of-n with a verifier): acc(n) = rho * pass@n, rho = acc / pass@n at the largest
  fitted n on the same pool, pass@n from the coverage law above (needs the `coverage` curve of the
  same problems). It assumes the verifier picks a right sample, when there is one, as often at
  large n as at small n: right for a judge that ranks a problem's samples almost perfectly, wrong
  for one that saturates (a policy's own ORM).

`pooled=True` fits one curve per strategy: the mean accuracy over the difficulties asked for (the
budgets present at every one of them), predicted against the mean at `at`. `bootstrap=B` adds the
standard error of each error over B resamples of the problems (the same problems in the small and
the large records; every fit redone).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import InputError
from scalelab.tables import load_runs

VOTES = ("majority",)  # plain votes: ties broken at random (estimators.vote_at_k)


def _curves(path: str | Path) -> dict[tuple[str, str, Any], dict[int, Any]]:
    out: dict[tuple[str, str, Any], dict[int, Any]] = defaultdict(dict)
    for r in load_runs(path).records:
        if r.phase != "testtime" or r.metrics.get("kind") in ("single", "adaptive"):
            continue
        key = (str(r.parent_id), r.technique, int(r.metrics["steps"]))
        n = int(r.metrics["n"])
        if n in out[key]:
            raise InputError(f"{path}: two records for {key[1]} d{key[2]} n={n} (different settings in one folder?)")
        out[key][n] = r.metrics
    return out


def _pool(curves: dict[tuple[str, str, Any], dict[int, Any]],
          difficulties: list[int] | None) -> dict[tuple[str, str, Any], dict[int, Any]]:
    """One curve per (model, strategy): a point per n present at every difficulty, the problems of
    every difficulty together (so its accuracy is the mean over difficulties of equal size)."""
    groups: dict[tuple[str, str], list[dict[int, Any]]] = defaultdict(list)
    for (pid, tech, steps), pts in sorted(curves.items()):
        if difficulties is None or steps in difficulties:
            groups[(pid, tech)].append(pts)
    out: dict[tuple[str, str, Any], dict[int, Any]] = {}
    for (pid, tech), many in groups.items():
        ns = set.intersection(*(set(pts) for pts in many))
        out[(pid, tech, "pooled")] = {n: {
            "n": n, "accuracy": float(np.mean([pts[n]["accuracy"] for pts in many])),
            "flops_per_question": float(np.mean([pts[n]["flops_per_question"] for pts in many])),
            "pool_n": max(int(pts[n].get("pool_n") or 0) for pts in many) or None,
            "pool_correct": [c for pts in many for c in pts[n].get("pool_correct") or []],
            "per_problem": [c for pts in many for c in pts[n].get("per_problem") or []]} for n in ns}
    return out


@dataclass
class _Curve:
    ns: np.ndarray              # budgets fitted
    per: np.ndarray | None      # [n, problem] expected correctness (None: records without per-problem results)
    acc: np.ndarray             # [n] accuracy
    flops: np.ndarray           # [n] FLOPs per question
    counts: np.ndarray | None   # [problem] right samples of the small pool, when it is no larger than fit_max_n
    pool_n: int | None
    target: Any                 # the record at `at` (metrics), or None
    note: str


def _curve(tech: str, pts: dict[int, Any], big: dict[int, Any], fit_max_n: int, at: int) -> _Curve | None:
    ns = sorted(n for n in pts if n <= fit_max_n)
    if tech in VOTES and sum(n % 2 for n in ns) >= 3:
        ns, note = [n for n in ns if n % 2], "odd n"
    else:
        note = ""
    if len(ns) < 3:
        return None
    per = [pts[n].get("per_problem") for n in ns]
    per = np.array(per, float) if all(p for p in per) and len({len(p) for p in per}) == 1 else None
    pool_n = max(int(pts[n].get("pool_n") or 0) for n in ns) or None
    top = pts[max(n for n in pts if n <= fit_max_n)]
    counts = None
    if pool_n is not None and pool_n <= fit_max_n and top.get("pool_correct"):
        counts = np.array(top["pool_correct"], float)
    if pool_n is not None and pool_n > fit_max_n:
        note = "; ".join(filter(None, [note, f"fit points estimated from a pool of {pool_n}"]))
    return _Curve(np.array(ns, float), per, np.array([pts[n]["accuracy"] for n in ns], float),
                  np.array([pts[n]["flops_per_question"] for n in ns], float), counts, pool_n, big.get(at), note)


def _fit(law: str, x: str, tech: str, c: _Curve, x_at: float, at: int, cov: dict[Any, Any], key: Any,
         idx: np.ndarray | None) -> tuple[float, str, bool]:
    """(prediction, description, converged) on the problems `idx` (None: all, as recorded)."""
    from scalelab.laws.coverage import CoverageLaw
    from scalelab.laws.sampling import TesttimeLaw

    acc = c.acc if idx is None else c.per[:, idx].mean(1)
    if law == "testtime":
        xs = c.ns if x == "n" else c.flops
        est = TesttimeLaw(x=x, bootstrap=0).fit(xs, acc)
        p = est.params_
        return float(est.predict([x_at])[0]), f"A={p['A']:.3f} B={p['B']:.3g} gamma={p['gamma']:.3g}", est.converged_
    if law == "coverage" and "shared" in cov:
        fit, groups = cov["shared"]
        return float(fit.predict([at], groups.index(key))[0]), f"alpha={fit.alpha_:.3g} (shared) " \
            f"beta={fit.betas_[groups.index(key)]:.3g}", fit.converged_
    if law == "coverage":
        counts = None if c.counts is None else (c.counts if idx is None else c.counts[idx], c.pool_n)
        est = CoverageLaw(bootstrap=0).fit(c.ns, acc, counts=counts)
        desc = f"alpha={est.params_['alpha']:.3g} beta={est.params_['beta']:.3g}" + (" (MLE)" if counts else "")
        return float(est.predict([at])[0]), desc, est.converged_
    # selection: rho x the coverage law's pass@at on the same problems
    ckey = (key[0], "coverage", key[2])
    if ckey not in cov["curves"]:
        raise InputError(f"--law selection: {tech} d{key[2]} needs the coverage curve of the same problems (add the "
                         "'coverage' strategy to the small-budget evaluation)")
    cc = cov["curves"][ckey]
    pc, cdesc, ok = _fit("coverage", "n", "coverage", cc, at, at, cov, ckey, idx)
    top = cc.acc[-1] if idx is None else cc.per[-1, idx].mean()
    rho = float(acc[-1] / top) if top > 0 else 0.0
    return rho * pc, f"rho={rho:.3f} x coverage {pc:.3f} ({cdesc})", ok


def _shared(cov_curves: dict[Any, _Curve], idx: dict[Any, np.ndarray] | None) -> tuple[Any, list[Any]]:
    from scalelab.laws.coverage import SharedTailCoverage

    groups = sorted(k for k, c in cov_curves.items() if c.counts is not None)
    if not groups:
        raise InputError("--shared-alpha needs per-problem counts of a small pool (pool_n <= --fit-max-n)")
    N = {cov_curves[k].pool_n for k in groups}
    if len(N) > 1:
        raise InputError(f"--shared-alpha: the curves come from pools of different sizes {sorted(N)}")
    counts = [cov_curves[k].counts if idx is None else cov_curves[k].counts[idx[k]] for k in groups]
    return SharedTailCoverage().fit(counts, N.pop()), groups


def predict_curves(runs: str | Path, *, against: str | Path | None = None, law: str = "testtime", x: str = "n",
                   fit_max_n: int = 8, at: int = 64, strategies: list[str] | None = None,
                   pooled: bool = False, difficulties: list[int] | None = None, shared_alpha: bool = False,
                   bootstrap: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    if law not in ("testtime", "coverage", "selection"):
        raise InputError(f"--law {law!r}: choose testtime, coverage or selection")
    if x not in ("n", "flops"):
        raise InputError(f"--x {x!r}: choose n or flops")
    if law != "testtime" and x != "n":
        raise InputError(f"--law {law} predicts at a budget n; --x flops is for the testtime law")
    if at < 1 or fit_max_n < 1:
        raise InputError(f"--at {at} / --fit-max-n {fit_max_n}: budgets n are 1 or more")
    if not 0 <= bootstrap <= 100_000:
        raise InputError(f"--bootstrap {bootstrap}: expected 0 to 100,000")
    if shared_alpha and (pooled or law == "testtime"):
        raise InputError("--shared-alpha shares the coverage law's alpha across difficulties: use it with --law "
                         "coverage or selection, without --pooled")
    small = _curves(runs)
    big = _curves(against) if against is not None else small
    if pooled:
        small, big = _pool(small, difficulties), _pool(big, difficulties)
    elif difficulties is not None:
        small = {k: v for k, v in small.items() if k[2] in difficulties}
    curves = {k: c for k, pts in small.items() if (c := _curve(k[1], pts, big.get(k, {}), fit_max_n, at))}
    cov = {"curves": {k: c for k, c in curves.items() if k[1] == "coverage"}}
    if shared_alpha:
        cov["shared"] = _shared(cov["curves"], None)
    wanted = {"testtime": lambda t: t != "coverage", "coverage": lambda t: t == "coverage",
              "selection": lambda t: t.startswith("best_of_n")}[law]
    missing = sorted(set(strategies or ()) - {k[1] for k in small})
    if missing:  # a typo or a strategy never run here: say which, and what is there
        raise InputError(f"--strategies {','.join(missing)}: no records of it in {runs}; there: "
                         f"{', '.join(sorted({k[1] for k in small})) or 'none'}")
    keys = [k for k in sorted(curves, key=str) if wanted(k[1]) and (not strategies or k[1] in strategies)]
    rng = np.random.default_rng(seed)
    rows = []
    for key in keys:
        pid, tech, steps = key
        c = curves[key]
        t = c.target
        if x == "flops" and t is None:
            continue
        x_at = t["flops_per_question"] if x == "flops" else at
        pred, desc, ok = _fit(law, x, tech, c, x_at, at, cov, key, None)
        obs = float(t["accuracy"]) if t is not None else None
        err_se = None
        if bootstrap and t is not None and _resamplable(key, c, t, law, cov):
            errs = []
            for _ in range(bootstrap):
                idx = rng.integers(0, c.per.shape[1], c.per.shape[1])
                boot = cov
                if "shared" in cov:  # every difficulty's problems resampled, the shared alpha refitted
                    ids = {k: (idx if k == (pid, "coverage", steps) else
                               rng.integers(0, v.counts.size, v.counts.size)) for k, v in cov["curves"].items()
                           if v.counts is not None}
                    boot = {**cov, "shared": _shared(cov["curves"], ids)}
                p, _, _ = _fit(law, x, tech, c, x_at, at, boot, key, idx)
                errs.append(p - float(np.mean(np.asarray(t["per_problem"], float)[idx])))
            err_se = float(np.std(errs, ddof=1))
        if not ok:
            desc += " NOT CONVERGED"
        if c.note:
            desc += f"; {c.note}"
        rows.append({"model": pid, "strategy": tech, "steps": steps, "points": len(c.ns), "predicted": pred,
                     "observed": obs, "error": None if obs is None else pred - obs, "error_se": err_se, "fit": desc,
                     "observed_se": t.get("accuracy_se") if t is not None else None})
    if not rows:
        raise InputError(f"{runs}: no curve with 3 or more budgets n <= {fit_max_n} to fit"
                         + (" (the coverage law needs the 'coverage' strategy)" if law == "coverage" else ""))
    return rows


def _resamplable(key: Any, c: _Curve, t: Any, law: str, cov: dict[str, Any]) -> bool:
    """The small and the large records hold per-problem results for the same number of problems."""
    n = None if c.per is None else c.per.shape[1]
    ok = n is not None and len(t.get("per_problem") or []) == n
    if law != "testtime":
        ckey = (key[0], "coverage", key[2])
        cc = cov["curves"].get(ckey)
        ok = ok and cc is not None and cc.per is not None and cc.per.shape[1] == n
    return ok


def summary(rows: list[dict[str, Any]]) -> str:
    """How many predictions land within 3 points, and the mean error."""
    errs = np.array([r["error"] for r in rows if r["error"] is not None], float)
    if errs.size == 0:
        return "no observed points to compare with"
    return (f"{errs.size} curves: {int((np.abs(errs) <= 0.03).sum())} within 3 points, mean error "
            f"{100 * errs.mean():+.1f}pt, mean |error| {100 * np.abs(errs).mean():.1f}pt")
