"""Backtests: refit each candidate law below a held-out frontier and score its predictions there.

A scaling law is used to extrapolate, so the error that matters is the error beyond the data.
OLMo-core's ladder analysis checks rollouts on held-out larger runs; this module does the same on
any table of runs:

* `largest-compute`: hold out the largest compute budget, fit the rest;
* `largest-params`: hold out the largest model size, fit the smaller ones;
* an integer K: hold out the K largest budgets at once.

The primary split needs two levels below the held-out one. Rolling versions repeat the split one
level lower each time (fit budgets < b, predict b) for up to `ROLLING` levels, as long as at
least three levels stay below for fitting. Errors are
relative, prediction/observation - 1, as fractions: mean and max of |error|, and the signed
mean (bias). Budgets are clusters of log10 C (0.1 dex, as `isoflop.budget_groups`); a table
whose compute is a continuum is binned in 0.25 dex steps instead (×1.8 per budget); model sizes
the same way (1% clusters, else 0.1 dex bins). A level of fewer than 3 runs joins the one below.
`both` scores the largest-compute and the largest-params splits together. `choose` picks a form
from the scores (the one-standard-error rule, see there). With `frontier_weight` P every refit
weights its runs by (C/C_max)^P (`loghuber.frontier_weights`), as `fit --law auto` does with P = 1.

    >>> bt = backtest(runs_frame("runs.csv"), ["free", "tied", "kaplan"])
    >>> bt["best"], bt["candidates"][0]["mean_abs_err"]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scalelab.errors import InputError
from scalelab.laws.isoflop import budget_groups

ROLLING = 4          # levels scored in the rolling backtest (the top one included)
MIN_LEVEL = 3        # runs a held-out level needs (smaller ones join the level below)
MIN_FIT_LEVELS = 2   # levels left below the held-out one to fit on (a law that needs more says so)
BIN_DEX = 0.25       # budget width for tables whose compute is a continuum
PARALLEL_MIN_ROWS = 2000   # runs x refits below which the refits stay in one process


@dataclass(frozen=True)
class Candidate:
    """A law form by the name `backtest --law` and `fit --law auto` use."""

    name: str
    law: str                       # registry name
    hyper: tuple[tuple[str, Any], ...] = ()
    columns: tuple[str, ...] = ("N", "D")
    title: str = ""

    def make(self, **extra: Any):
        from scalelab.laws import make_law

        return make_law(self.law, **{**dict(self.hyper), **extra})


CANDIDATES: dict[str, Candidate] = {
    "free": Candidate("free", "chinchilla", (("form", "free"),), title="Chinchilla, E free"),
    "tied": Candidate("tied", "chinchilla", (("form", "tied"),), title="Chinchilla, alpha = beta (over-training form)"),
    "fixed-e": Candidate("fixed-e", "chinchilla", (("form", "fixed-e"),), title="Chinchilla, E fixed (--floor)"),
    "kaplan": Candidate("kaplan", "power", (("x", "C"),), ("C",), title="Kaplan L(C) = E + A·C^-alpha"),
    "datacon": Candidate("datacon", "datacon", (), ("N", "D", "U"), title="data-constrained L(N, D, U)"),
}
ALIASES = {"chinchilla": "free", "chinchilla:free": "free", "chinchilla:tied": "tied",
           "chinchilla:fixed-e": "fixed-e", "power": "kaplan"}


def candidate(name: str) -> Candidate:
    key = ALIASES.get(name, name)
    if key not in CANDIDATES:
        raise InputError(f"--law {name!r}: backtest candidates are {', '.join(CANDIDATES)} "
                         "(chinchilla = free)")
    return CANDIDATES[key]


def default_candidates(frame: pd.DataFrame, floor: float | None) -> list[str]:
    """What `fit --law auto` compares: the Chinchilla forms, Kaplan's L(C), and the
    data-constrained law when the table gives U and some run repeats data."""
    names = ["free", "tied"] + (["fixed-e"] if floor is not None else []) + ["kaplan"]
    if "U" in frame and (frame["D"] > frame["U"] * (1 + 1e-9)).any():
        names.append("datacon")
    return names


# ---- the table ---------------------------------------------------------------------------------
@dataclass
class Runs:
    frame: pd.DataFrame                 # N, D, C, loss [, U]
    notices: list[str] = field(default_factory=list)


def runs_frame(table: Any, col_map: dict[str, str] | None = None) -> Runs:
    """A table (path, or an already loaded DataFrame) as standard columns N, D, C, loss and U
    when present. C is the table's own when it has one (it may count attention), else 6·N·D."""
    from scalelab.laws.chinchilla import ChinchillaLaw
    from scalelab.laws.table import _numeric, _present, prepare
    from scalelab.laws.tables_io import load_runs_table

    frame = table if isinstance(table, pd.DataFrame) else load_runs_table(table).frame
    if "phase" in frame.columns and (frame["phase"] == "pretrain").any():
        frame = frame[frame["phase"] == "pretrain"]   # a whole pipeline's runs: the pretraining ones, as fit reads them
    col_map = dict(col_map or {})
    prep = prepare(frame, ChinchillaLaw, col_map=col_map)
    out = prep.frame.copy()
    c_col, u_col = col_map.get("C", "C"), col_map.get("U", "U")
    out["C"] = _numeric(frame, c_col, repr(c_col)) if _present(frame, c_col) else 6.0 * out["N"] * out["D"]
    if _present(frame, u_col):
        out["U"] = _numeric(frame, u_col, repr(u_col))
    return Runs(out.reset_index(drop=True), list(prep.notices))


# ---- splits ------------------------------------------------------------------------------------
def levels(v: np.ndarray, tol_dex: float, bin_dex: float) -> np.ndarray:
    """0, 1, ... in increasing v: clusters of log10 v (`tol_dex` gaps), or `bin_dex` bins when v is
    a continuum (fewer than 4 clusters, one holding over a third of the runs, or mostly single
    runs); then a level of fewer than MIN_LEVEL runs joins the one below it."""
    labels = budget_groups(v, tol_dex)
    counts = np.bincount(labels)
    if len(counts) < 4 or counts.max() > len(v) / 3 or np.mean(counts < MIN_LEVEL) > 0.5:
        lv = np.log10(v)
        labels = np.unique(np.floor((lv - lv.min()) / bin_dex + 1e-9).astype(int), return_inverse=True)[1]
    for lev in range(labels.max(), 0, -1):
        if (labels == lev).sum() < MIN_LEVEL:
            labels[labels == lev] = lev - 1
    return np.unique(labels, return_inverse=True)[1]


def splits(frame: pd.DataFrame, holdout: str | int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, train mask, test mask) for the primary split first, then the rolling ones.
    `both`: the largest-compute splits, then the largest-params ones."""
    if holdout == "both":
        parts = []
        for kind in ("largest-compute", "largest-params"):
            try:
                parts.append(splits(frame, kind))
            except InputError:
                continue
        if not parts:
            return splits(frame, "largest-compute")   # raises the one-line reason
        out = parts[0]
        for s in (parts[1] if len(parts) > 1 else []):
            if not any(np.array_equal(s[2], o[2]) and np.array_equal(s[1], o[1]) for o in out):
                out.append(s)
        return out
    if holdout == "largest-params":
        lev, what = levels(frame["N"].to_numpy(), 0.004, 0.1), "N"
    else:
        lev, what = levels(frame["C"].to_numpy(), 0.1, BIN_DEX), "C"
    top = lev.max()
    k = int(holdout) if isinstance(holdout, int) else 1
    if top + 1 - k < MIN_FIT_LEVELS:
        raise InputError(f"--holdout {holdout}: the table has {top + 1} distinct "
                         f"{'model sizes' if what == 'N' else 'compute budgets'} of {MIN_LEVEL}+ runs; a "
                         f"backtest needs at least {k + MIN_FIT_LEVELS} ({k} held out and {MIN_FIT_LEVELS} to fit)")

    def label(test):
        v = frame[what].to_numpy()[test]
        return f"{what} {v.min():.3g}" + (f"–{v.max():.3g}" if v.max() > v.min() * 1.01 else "")

    test = lev > top - k
    out = [(label(test), lev <= top - k, test)]
    if isinstance(holdout, str):
        for j in range(top - 1, max(top - ROLLING, 2), -1):   # rolling splits keep 3+ levels to fit
            t = lev == j
            out.append((label(t), lev < j, t))
    return out


# ---- scoring -----------------------------------------------------------------------------------
def _errors(pred: np.ndarray, obs: np.ndarray) -> dict[str, float]:
    e = pred / obs - 1.0
    return {"mean_abs_err": float(np.mean(np.abs(e))), "max_abs_err": float(np.max(np.abs(e))),
            "bias": float(np.mean(e)), "n_test": int(len(e))}


def _fit_predict(cand: Candidate, frame: pd.DataFrame, train: np.ndarray, test: np.ndarray,
                 hyper: dict[str, Any]) -> np.ndarray:
    law = cand.make(**hyper)
    Xtr = frame.loc[train, list(cand.columns)].to_numpy(float)
    with np.errstate(all="ignore"):   # a candidate running off to inf is scored as failed below, not warned about
        law.fit(Xtr, frame.loc[train, "loss"].to_numpy(float))
        pred = law.predict(frame.loc[test, list(cand.columns)].to_numpy(float))
    if not np.all(np.isfinite(pred)):
        raise ValueError("the fit predicts a non-finite loss on the held-out runs")
    return pred


def _refit(args) -> np.ndarray | str:
    """One candidate on one split: its predictions, or why it could not be fitted (a string)."""
    try:
        return _fit_predict(*args)
    except (InputError, ValueError, FloatingPointError) as e:
        return str(e)


def _run_refits(tasks: list, n_jobs: int | None) -> list:
    from scalelab.laws.optimize import usable_cpus

    jobs = min(usable_cpus() if n_jobs in (None, -1) else max(1, int(n_jobs)), len(tasks))
    # Refits of a small table take milliseconds, less than starting a process: those stay here.
    if jobs <= 1 or sum(len(t[1]) for t in tasks) < PARALLEL_MIN_ROWS:
        return [_refit(t) for t in tasks]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
        return list(ex.map(_refit, tasks))


def backtest(runs: Runs | pd.DataFrame, names: list[str], *, holdout: str | int = "largest-compute",
             method: str = "vpnls", floor: float | None = None, frontier_weight: float = 0.0,
             n_jobs: int | None = None) -> dict[str, Any]:
    """Score every candidate on the held-out frontier (module docstring). Candidates that cannot
    be fitted on a split keep an `error` and are never chosen. `frontier_weight`: every refit of
    the Chinchilla forms and L(C) weights its runs by (C/C_max)^this (`loghuber.frontier_weights`),
    as the final fit will; datacon fits unweighted. The refits run in `n_jobs` processes (None:
    all CPUs) when the table is large enough to repay starting them."""
    if not (np.isfinite(frontier_weight) and frontier_weight >= 0):
        raise InputError(f"--frontier-weight must be a number >= 0, got {frontier_weight!r}")
    frame = runs.frame if isinstance(runs, Runs) else runs
    folds = splits(frame, holdout)
    cands = []
    for name in names:
        cand = candidate(name)
        hyper: dict[str, Any] = {"bootstrap": 0, "frontier_weight": frontier_weight}
        if cand.law == "chinchilla":
            hyper.update(method=method, n_jobs=1)
            if cand.name == "fixed-e":   # only this form holds E; free and tied fit it
                if floor is None:
                    raise InputError("backtest candidate 'fixed-e' needs --floor (a known irreducible loss)")
                hyper["E_fixed"] = floor
        if "U" in cand.columns and "U" not in frame:
            raise InputError(f"backtest candidate {name!r} needs unique tokens U per run (a U column or --col U=NAME)")
        cands.append((cand, hyper))
    tasks = [(cand, frame, train, test, hyper) for cand, hyper in cands for _, train, test in folds]
    preds = iter(_run_refits(tasks, n_jobs))
    rows = []
    for cand, _ in cands:
        row: dict[str, Any] = {"law": cand.name, "title": cand.title}
        per_fold, error = [], None
        for lab, train, test in folds:
            pred = next(preds)
            if error is None and isinstance(pred, str):
                error = pred
            elif error is None:
                per_fold.append({"held_out": lab, "n_train": int(train.sum()), **_errors(pred, frame.loc[test, "loss"].to_numpy())})
        if error is not None:
            row.update(mean_abs_err=None, max_abs_err=None, bias=None, error=error)
            rows.append(row)
            continue
        row.update({k: per_fold[0][k] for k in ("mean_abs_err", "max_abs_err", "bias", "n_test", "n_train")})
        row["held_out"] = per_fold[0]["held_out"]
        if len(per_fold) > 1:
            row["rolling"] = {"folds": len(per_fold),
                              "mean_abs_err": float(np.mean([f["mean_abs_err"] for f in per_fold])),
                              "max_abs_err": float(np.max([f["max_abs_err"] for f in per_fold])),
                              "bias": float(np.mean([f["bias"] for f in per_fold])),
                              "per_fold": per_fold}
        rows.append(row)
    scored = [r for r in rows if r.get("mean_abs_err") is not None]
    if not scored:
        raise InputError("backtest: no candidate could be fitted below the held-out frontier: "
                         + "; ".join(f"{r['law']}: {r['error']}" for r in rows))
    best = choose(scored)
    return {"holdout": holdout, "method": method, "frontier_weight": frontier_weight, "criterion": CRITERION,
            "candidates": rows, "best": best["law"]}


CRITERION = ("one-standard-error rule on the rolling backtest: among the nested forms of the best one's "
             "family whose mean |relative error| is within one standard error (over the held-out splits) of "
             "the lowest, the one with the fewest parameters; the lowest error when there is a single split")
# Free parameters of each candidate, and its family: the rule moves only between nested forms
# (tied and fixed-e are Chinchilla's law with one parameter held), never to another family.
N_PARAMS = {"kaplan": 3, "tied": 4, "fixed-e": 4, "free": 5, "datacon": 7}
FAMILY = {"free": "chinchilla", "tied": "chinchilla", "fixed-e": "chinchilla", "kaplan": "kaplan", "datacon": "datacon"}


def score(row: dict[str, Any]) -> float:
    return row["rolling"]["mean_abs_err"] if "rolling" in row else row["mean_abs_err"]


def score_se(row: dict[str, Any]) -> float:
    """Standard error of `score` over the held-out splits (0 with one split)."""
    folds = [f["mean_abs_err"] for f in (row.get("rolling") or {}).get("per_fold", [])]
    return float(np.std(folds, ddof=1) / np.sqrt(len(folds))) if len(folds) > 1 else 0.0


def choose(scored: list[dict[str, Any]]) -> dict[str, Any]:
    """Breiman et al. 1984's one-standard-error rule (Hastie et al. 2009, Sec. 7.10): an error
    estimated from a handful of held-out budgets cannot separate forms closer than its own
    standard error, and of nested forms the one with fewer parameters extrapolates with less
    variance. Forms of other families (L(C), datacon) are chosen only with the lowest error."""
    lowest = min(scored, key=score)
    limit = score(lowest) + score_se(lowest)
    within = [r for r in scored if score(r) <= limit * (1 + 1e-12)
              and FAMILY.get(r["law"], r["law"]) == FAMILY.get(lowest["law"], lowest["law"])]
    pick = min(within, key=lambda r: (N_PARAMS.get(r["law"], 99), score(r)))
    for r in scored:
        r["score"], r["score_se"] = score(r), score_se(r)
    pick["chosen_over"] = lowest["law"] if pick is not lowest else None
    return pick


def reason(bt: dict[str, Any]) -> str:
    """One line: which candidate won and against what."""
    rows = {r["law"]: r for r in bt["candidates"]}
    best = rows[bt["best"]]
    others = ", ".join(f"{r['law']} {100 * score(r):.2f}%" for r in bt["candidates"]
                       if r["law"] != bt["best"] and r.get("mean_abs_err") is not None)
    where = (f"rolling over {best['rolling']['folds']} held-out levels" if "rolling" in best
             else f"holding out {best['held_out']}")
    why = ""
    if best.get("chosen_over"):
        low = rows[best["chosen_over"]]
        why = (f", within one standard error of the lowest ({low['law']} {100 * score(low):.2f}% ± "
               f"{100 * score_se(low):.2f}) with fewer parameters")
    fw = bt.get("frontier_weight") or 0
    weights = f", runs weighted by (C/C_max)^{fw:g}" if fw else ""
    return (f"chose {best['law']} ({best['title']}) by backtest: mean |error| {100 * score(best):.2f}% "
            f"({where}; --holdout {bt['holdout']}{weights}){why}" + (f"; others: {others}" if others else ""))
