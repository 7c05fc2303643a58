"""`fit --law auto`: choose the law form by backtest on the table itself, then fit it on all runs.

The candidates (`backtest.default_candidates`) are refitted below the held-out frontier and
scored on it (`backtest.backtest`); the one the one-standard-error rule picks is fitted on every
run with the requested settings. Backtest refits and the final fit weight the runs towards the
largest compute (AUTO_FRONTIER_WEIGHT, below). FIT.json then carries `selected_by` (the choice
and its one-line reason) and `backtest` (every candidate's errors), so the reader sees how far
each form could be trusted on this very table.

Backtest refits and the final fit use variable projection (`method="vpnls"`) unless told otherwise: it reaches the
same optimum as the 4,500-start L-BFGS on the published data sets (benchmarks/bench_fit_vpnls.py)
in a fraction of the time, which keeps all the refits of a selection within seconds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from scalelab.laws.backtest import backtest, candidate, default_candidates, reason, runs_frame

# Runs weighted by (C/C_max)^1 in every backtest refit and in the final fit (loghuber.frontier_weights:
# Shimodaira 2000's flattened importance weights towards where the law will be used). Power 1: a run
# a decade of compute below the largest counts a tenth. docs/fitting.md has the held-out cases.
AUTO_FRONTIER_WEIGHT = 1.0


def fit_auto(table: str | Path, *, col_map: dict[str, str] | None = None, floor: float | None = None,
             holdout: str | int = "both", method: str | None = None, names: list[str] | None = None,
             bootstrap: int | None = None, seed: int = 0, n_init: int | None = None,
             frontier_weight: float | None = None, progress: Callable[[int, int], None] | None = None):
    """Returns (fitted law, `table.Prepared`, selection dict with `reason` and `backtest`)."""
    from scalelab.laws import fit_table

    runs = runs_frame(table, col_map)
    names = names or default_candidates(runs.frame, floor)
    fw = AUTO_FRONTIER_WEIGHT if frontier_weight is None else float(frontier_weight)
    bt = backtest(runs, names, holdout=holdout, method=method or "vpnls", floor=floor, frontier_weight=fw)
    cand = candidate(bt["best"])
    hyper: dict[str, Any] = {"seed": seed, "frontier_weight": fw}
    if bootstrap is not None:
        hyper["bootstrap"] = bootstrap
    if cand.law == "chinchilla":
        hyper.update(method=method or "vpnls", n_init=n_init, E_fixed=floor if cand.name == "fixed-e" else None)
    law, prep = fit_table(table, cand.make(**hyper), col_map=col_map, progress=progress)
    why = reason(bt)
    selection = {"selected_by": {"by": "backtest", "choice": cand.name, "law": cand.law, "reason": why,
                                 "criterion": bt["criterion"]},
                 "backtest": bt}
    return law, prep, selection
