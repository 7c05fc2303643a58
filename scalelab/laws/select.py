"""`fit --law auto`: choose the law form by backtest on the table itself, then fit it on all runs.

The candidates (`backtest.default_candidates`) are refitted below the held-out frontier and
scored on it (`backtest.backtest`); the one with the lowest rolling mean |relative error| is
fitted on every run with the requested settings. FIT.json then carries `selected_by` (the choice
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


def fit_auto(table: str | Path, *, col_map: dict[str, str] | None = None, floor: float | None = None,
             holdout: str | int = "both", method: str | None = None, names: list[str] | None = None,
             bootstrap: int | None = None, seed: int = 0, n_init: int | None = None,
             progress: Callable[[int, int], None] | None = None):
    """Returns (fitted law, `table.Prepared`, selection dict with `reason` and `backtest`)."""
    from scalelab.laws import fit_table

    runs = runs_frame(table, col_map)
    names = names or default_candidates(runs.frame, floor)
    bt = backtest(runs, names, holdout=holdout, method=method or "vpnls", floor=floor)
    cand = candidate(bt["best"])
    hyper: dict[str, Any] = {"seed": seed}
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
