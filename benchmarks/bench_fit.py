"""Benchmark: the Chinchilla approach-3 fit of Epoch AI's 240 points, side by side.

    .venv/bin/python benchmarks/bench_fit.py [--plain-fraction 0.1] [--pkg-grid coarse|full] [--repeats 3]

Compared in one run, on the same data (Besiroglu et al. 2024: D = C/(6N), the five highest-loss
points dropped) and the same objective (sum of Huber losses, delta = 1e-3, of log residuals):

1. scalelab: `ChinchillaLaw` from all 4,500 Hoffmann-grid starts (batched L-BFGS, analytic
   gradient, processes over the CPUs), and 1,000 bootstrap refits.
2. a plain loop: scipy.optimize.minimize(method="L-BFGS-B") once per start, numerical
   gradient, default tolerances, as a replication notebook would write it. Run on an evenly
   spaced subset of the grid (--plain-fraction) and extrapolated linearly to 4,500 starts;
   the same loop with the analytic gradient is timed as well, to show where the time goes.
3. the `chinchilla` package (PyPI 0.2.0; BFGS in long double over its grid, a process per CPU),
   with the log-Huber loss. Its grid is a product of axes, so a subset is a coarser grid:
   --pkg-grid coarse runs 3 values per axis (243 starts) and extrapolates per start.

Each line reports wall seconds measured, seconds per 4,500 starts, the ratio to scalelab, and
the objective reached (recomputed with one function for all, so they compare). Run it on a quiet
machine: the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from scalelab.laws import ChinchillaLaw
from scalelab.laws.loghuber import LogHuberObjective, hoffmann_grid

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "svg_extracted_data.csv"


def load(path: Path):
    d = pd.read_csv(path)
    N, C, L = d["Model Size"].to_numpy(), d["Training FLOP"].to_numpy(), d["loss"].to_numpy()
    keep = np.argsort(L, kind="stable")[:-5]
    return np.column_stack([N[keep], C[keep] / (6 * N[keep])]), L[keep]


def objective(theta, X, y, delta=1e-3):
    """One plain definition used to score every method's answer."""
    a, b, e, alpha, beta = theta
    pred = np.logaddexp.reduce([a - alpha * np.log(X[:, 0]), b - beta * np.log(X[:, 1]), np.full(len(y), e)], axis=0)
    r = pred - np.log(y)
    return float(np.sum(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))))


def theta_of(p):
    return np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]])


def run_scalelab(X, y, repeats):
    times, law = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        law = ChinchillaLaw(bootstrap=0).fit(X, y)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    boot = ChinchillaLaw(bootstrap=1000, seed=0).fit(X, y)
    total = time.perf_counter() - t0
    return law, float(np.median(times)), times, boot, total


def run_plain(X, y, fraction, analytic):
    grid = hoffmann_grid()
    step = max(1, int(round(1 / fraction)))
    starts = grid[::step]
    obj = LogHuberObjective(np.log(X), np.log(y))
    # The analytic gradient is scalelab's objective, in its centred coordinates (converted back).
    f = (lambda t: obj.single(t)) if analytic else (lambda t: objective(t, X, y))
    x0s = obj.to_internal(starts) if analytic else starts
    t0 = time.perf_counter()
    best = None
    for s in x0s:
        r = minimize(f, s, jac=analytic, method="L-BFGS-B")
        if np.isfinite(r.fun) and (best is None or r.fun < best.fun):
            best = r
    wall = time.perf_counter() - t0
    if analytic:
        best.x = obj.to_external(best.x)[0]
    return best, wall, len(starts)


def run_package(X, y, coarse):
    from chinchilla import Chinchilla
    from chinchilla._metrics import log_huber

    if coarse:
        grid = {"e": [-1.0, 0.0, 1.0], "a": [0.0, 10.0, 20.0], "b": [0.0, 10.0, 20.0],
                "alpha": [0.0, 1.0, 2.0], "beta": [0.0, 1.0, 2.0]}
    else:  # Hoffmann et al.'s grid
        grid = {"e": list(np.arange(-1, 1.5, 0.5)), "a": list(np.arange(0, 30, 5.0)), "b": list(np.arange(0, 30, 5.0)),
                "alpha": list(np.arange(0, 2.5, 0.5)), "beta": list(np.arange(0, 2.5, 0.5))}
    n_starts = int(np.prod([len(v) for v in grid.values()]))
    with tempfile.TemporaryDirectory() as tmp:
        cc = Chinchilla(project_dir=tmp, param_grid=grid, loss_fn=functools.partial(log_huber, delta=1e-3),
                        log_level=40)
        for (N, D), L in zip(X, y):
            cc.database.append(N=float(N), D=float(D), loss=float(L))
        t0 = time.perf_counter()
        cc.fit(parallel=True)
        wall = time.perf_counter() - t0
    return cc.get_params(), wall, n_starts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--plain-fraction", type=float, default=0.1, help="share of the 4,500 starts the plain loop runs")
    ap.add_argument("--pkg-grid", choices=["coarse", "full", "skip"], default="coarse")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    X, y = load(args.data)
    print(f"data: {args.data.name}, n = {len(y)}; machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    rows = []

    law, t_fit, times, boot, t_boot_total = run_scalelab(X, y, args.repeats)
    f_ours = objective(law.theta_, X, y)
    rows.append(("scalelab (4,500 starts, batched)", 4500, t_fit, t_fit, f_ours, law.params_))
    print(f"scalelab fit times: {', '.join(f'{t:.2f}' for t in times)} s; "
          f"with 1,000 bootstrap refits: fit {boot.timing_['fit_s']:.2f} s + bootstrap "
          f"{boot.timing_['bootstrap_s']:.2f} s (total {t_boot_total:.2f} s, {boot.bootstrap_failed_} failed)")
    ci = {k: tuple(round(v, 3) for v in boot.ci_[k]) for k in ("E", "alpha", "beta")}
    print(f"bootstrap 95% intervals: {ci}")

    for analytic in (False, True):
        best, wall, n = run_plain(X, y, args.plain_fraction, analytic)
        label = f"scipy loop, {'analytic' if analytic else 'numerical'} gradient ({n} starts)"
        p = {"E": np.exp(best.x[2]), "A": np.exp(best.x[0]), "B": np.exp(best.x[1]), "alpha": best.x[3], "beta": best.x[4]}
        rows.append((label, n, wall, wall * 4500 / n, objective(best.x, X, y), p))

    if args.pkg_grid != "skip":
        p, wall, n = run_package(X, y, args.pkg_grid == "coarse")
        rows.append((f"chinchilla 0.2.0 package ({n} starts)", n, wall, wall * 4500 / n, objective(theta_of(p), X, y), p))

    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}\n")
    print(f"{'method':48s} {'wall s':>8s} {'s/4500':>9s} {'ratio':>8s} {'objective':>14s}   E      alpha   beta")
    for label, n, wall, per4500, f, p in rows:
        ratio = per4500 / t_fit
        print(f"{label:48s} {wall:8.2f} {per4500:9.1f} {ratio:7.1f}x {f:14.10f}   {p['E']:.4f} {p['alpha']:.4f} {p['beta']:.4f}")
    worse = [r[0] for r in rows[1:] if r[4] < f_ours * (1 - 1e-9)]
    print("\nscalelab's objective is the lowest (to 1e-9 relative)" if not worse
          else f"\nWARNING: lower objective found by: {', '.join(worse)}")


if __name__ == "__main__":
    main()
