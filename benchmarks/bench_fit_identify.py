"""How much per-run noise a sweep's design can carry and still identify Chinchilla's law.

    OMP_NUM_THREADS=1 python benchmarks/bench_fit_identify.py RUNS_DIR [--floor auto|E] [--frontier-weight P] \
        [--noise 0.028,0.014,0.007,0.004] [--designs sweep,sweep_x2] [--draws 5] [--resamples 200]

A power analysis, not a fit: the sweep's own Chinchilla fit (E held at the floor) is taken as
the truth, losses are drawn from it at the sweep's (N, D) with log-normal noise of each given
standard deviation, and each draw is fitted as `scalelab demo` fits it (case bootstrap, runs
weighted by (C/C_max)^P). Printed: the median over draws of each parameter's 95%-interval hi/lo
ratio, against the bars an identified fit needs (alpha, beta <= 2.5; A, B <= 100). Next to it,
the sweep's measured noise: the fit's log-residual standard deviation, and where a size was
trained with several seeds at one budget, the replicates' standard deviation of log loss.

Designs: `sweep` (the runs as they are), `sweep_x2` (every run twice, as with a second seed),
`isoBxS` (B budgets spread log-evenly over the sweep's compute range, S sizes each, spread over
a factor 10 around the fitted law's compute-optimal size; e.g. iso4x5).
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np

from scalelab.laws import make_law
from scalelab.laws.backtest import runs_frame
from scalelab.laws.chinchilla import IDENTIFIED_BARS as BARS
from scalelab.tables import entropy_floor, load_table


def hilo(ci: tuple[float, float]) -> float:
    lo, hi = ci
    return hi / lo if lo > 0 else float("inf")


def design(name: str, X: np.ndarray, law) -> np.ndarray:
    if name == "sweep":
        return X
    if name == "sweep_x2":
        return np.vstack([X, X])
    if name.startswith("iso") and "x" in name:
        nb, ns = (int(v) for v in name[3:].split("x"))
        C = 6 * X[:, 0] * X[:, 1]
        rows = []
        for c in np.logspace(np.log10(C.min()), np.log10(C.max()), nb):
            for n in float(law.compute_optimal(c).N) * np.logspace(-0.5, 0.5, ns):
                rows.append([n, c / (6 * n)])
        return np.array(rows)
    raise SystemExit(f"unknown design {name!r}: sweep, sweep_x2 or isoBxS")


def seed_noise(frame) -> tuple[float | None, int]:
    """Pooled sd of log loss between runs of one size at one budget (replicates: other seeds)."""
    key = np.round(np.log10(frame["C"].to_numpy(float)), 1)
    dev, dof = 0.0, 0
    for _, g in frame.assign(_c=key).groupby(["_c", "N"]):
        if len(g) > 1:
            lg = np.log(g["loss"].to_numpy(float))
            dev += float(((lg - lg.mean()) ** 2).sum())
            dof += len(g) - 1
    return (float(np.sqrt(dev / dof)), dof) if dof else (None, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", help="a runs folder or CSV with N, D, loss")
    ap.add_argument("--floor", default="auto", help="E held fixed: a number, or auto (the runs' recorded floor)")
    ap.add_argument("--frontier-weight", type=float, default=1.0, help="runs weighted by (C/C_max)^P (the demo: 1)")
    ap.add_argument("--noise", default="0.028,0.014,0.007,0.004", help="sd of log loss per run, comma-separated")
    ap.add_argument("--designs", default="sweep,sweep_x2")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--resamples", type=int, default=200)
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    frame = runs_frame(a.runs).frame
    E = entropy_floor(load_table(a.runs).frame) if a.floor == "auto" else float(a.floor)
    if E is None:
        raise SystemExit(f"{a.runs}: no recorded entropy floor; give --floor E")
    X, y = frame[["N", "D"]].to_numpy(float), frame["loss"].to_numpy(float)

    def fit(Xs, ys, seed):
        return make_law("chinchilla", bootstrap=a.resamples, E_fixed=E, frontier_weight=a.frontier_weight,
                        seed=seed).fit(Xs, ys)

    truth = fit(X, y, 0)
    resid = np.log(y) - np.log(truth.predict(X))
    sd_seed, dof = seed_noise(frame)
    p = truth.params_
    print(f"# {len(X)} runs, E fixed at {E:.4g}, frontier weight {a.frontier_weight:g}; its fit: "
          f"A {p['A']:.3g} alpha {p['alpha']:.3g} B {p['B']:.3g} beta {p['beta']:.3g}; "
          + " ".join(f"{k} {hilo(truth.ci_[k]):.3g}" for k in BARS))
    print(f"# measured noise: fit residual sd {resid.std(ddof=4):.4f}"
          + (f"; seed-to-seed sd {sd_seed:.4f} ({dof} degrees of freedom)" if sd_seed is not None else ""))
    print("| noise sd | design | runs | alpha hi/lo | beta hi/lo | A hi/lo | B hi/lo | identified (median) |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    rng = np.random.default_rng(0)
    for sd in (float(s) for s in a.noise.split(",")):
        for name in a.designs.split(","):
            Xd = design(name, X, truth)
            ratios = []
            for i in range(a.draws):
                yd = truth.predict(Xd) * np.exp(rng.normal(0, sd, len(Xd)))
                ci = fit(Xd, yd, i + 1).ci_
                ratios.append([hilo(ci[k]) for k in BARS])
            med = np.median(np.array(ratios), axis=0)
            ok = all(m <= BARS[k] for m, k in zip(med, BARS))
            print(f"| {sd:.3f} | {name} | {len(Xd)} | " + " | ".join(f"{m:.3g}" for m in med)
                  + f" | {'yes' if ok else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
