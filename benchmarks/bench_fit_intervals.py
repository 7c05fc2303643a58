"""How wide the Chinchilla exponents' 95% intervals are under four bootstraps, on one sweep.

    OMP_NUM_THREADS=1 python benchmarks/bench_fit_intervals.py RUNS_DIR [--floor auto|E] [--frontier-weight P] [--resamples 200]

`scalelab fit` reports case-bootstrap intervals (runs drawn with replacement, Besiroglu et al.
2024). A designed sweep fixes its sizes and budgets, which argues for bootstraps that keep the
design (Efron & Tibshirani 1993, ch. 9):
  cases       runs drawn with replacement from all runs (what `fit` does)
  per budget  runs drawn with replacement within each compute budget (every budget kept, as the
              IsoFLOP law's intervals do)
  residuals   the fitted curve at every run times a log residual drawn with replacement
  wild        the fitted curve at every run times its own log residual with a random sign
              (Wu 1986; keeps each run's own scatter)
Each resample is refitted by variable projection (the method `--law auto` uses), with the runs
weighted by (C/C_max)^P as `--frontier-weight P` says (the demo's fit: 1). Printed: each parameter's interval and its hi/lo ratio, per bootstrap.
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np

from scalelab.laws import make_law
from scalelab.laws.backtest import runs_frame
from scalelab.laws.isoflop import budget_groups
from scalelab.tables import entropy_floor, load_table

PARAMS = ("A", "B", "alpha", "beta")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", help="a runs folder or CSV with N, D, loss")
    ap.add_argument("--floor", default="auto", help="E held fixed: a number, or auto (the runs' recorded floor)")
    ap.add_argument("--frontier-weight", type=float, default=0.0, help="runs weighted by (C/C_max)^P")
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    frame = runs_frame(a.runs).frame
    if a.floor == "auto":
        E = entropy_floor(load_table(a.runs).frame)
        if E is None:
            raise SystemExit(f"{a.runs}: no recorded entropy floor; give --floor E")
    else:
        E = float(a.floor)
    X, y = frame[["N", "D"]].to_numpy(float), frame["loss"].to_numpy(float)
    groups = budget_groups(frame["C"].to_numpy(float), 0.05)

    def fit(Xs, ys):
        return make_law("chinchilla", bootstrap=0, E_fixed=E, method="vpnls", n_jobs=1,
                        frontier_weight=a.frontier_weight).fit(Xs, ys)

    base = fit(X, y)
    yhat = base.predict(X)
    r = np.log(y) - np.log(yhat)  # the objective's residuals are in log loss
    rng = np.random.default_rng(a.seed)
    draws = {k: [] for k in ("cases", "per budget", "residuals", "wild")}
    for _ in range(a.resamples):
        idx = rng.integers(0, len(y), len(y))
        per = np.concatenate([rng.choice(np.flatnonzero(groups == g), size=int((groups == g).sum()))
                              for g in np.unique(groups)])
        fits = {"cases": fit(X[idx], y[idx]), "per budget": fit(X[per], y[per]),
                "residuals": fit(X, yhat * np.exp(rng.choice(r, len(r)))),
                "wild": fit(X, yhat * np.exp(r * rng.choice([-1.0, 1.0], len(r))))}
        for k, f in fits.items():
            draws[k].append([f.params_[p] for p in PARAMS])
    print(f"{a.runs}: {len(y)} runs in {len(np.unique(groups))} budgets, E held at {E:.6g}, "
          f"runs weighted by (C/C_max)^{a.frontier_weight:g}; "
          f"log residuals scatter {r.std(ddof=4):.4f}; {a.resamples} resamples each")
    print("fit: " + ", ".join(f"{p} {base.params_[p]:.4g}" for p in PARAMS))
    print("| bootstrap | " + " | ".join(f"{p} 95% (hi/lo)" for p in PARAMS) + " |")
    print("|---|" + "---|" * len(PARAMS))
    for k, rows in draws.items():
        P = np.array(rows, float)
        cells = []
        for j in range(len(PARAMS)):
            v = P[np.isfinite(P[:, j]) | np.isinf(P[:, j]), j]  # order statistics: a resample at inf stays inf
            lo, hi = np.percentile(v, 2.5, method="lower"), np.percentile(v, 97.5, method="higher")
            cells.append(f"[{lo:.3g}, {hi:.3g}] ({hi / lo:.3g})")
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
