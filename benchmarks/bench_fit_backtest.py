"""The backtest table of docs/fitting.md: every data set, every law form, both methods.

    OMP_NUM_THREADS=1 python benchmarks/bench_fit_backtest.py [--methods vpnls,lbfgs] [--holdouts largest-compute,largest-params]

Rows: data set x form (free, tied, fixed-e where the runs record their entropy floor, Kaplan's
L(C), data-constrained where runs repeat data) x method x held-out frontier; columns: the
primary split's mean / max |relative error| and bias, and the rolling backtest's mean and max.
Then the held-out published targets: `fit --law auto` on the OLMo ladder's rungs predicting the
7B and 13B runs, and on the bundled testbed sweep predicting its 6e13-FLOP run (docs/LOG.md),
and the wall time of `--law auto` (backtests included) on Epoch AI's 240 points.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit_vpnls import datablations, epoch240, olmo, olmo_targets, testbed  # noqa: E402

from scalelab.laws.backtest import Runs, backtest, default_candidates  # noqa: E402

FLOOR = {"testbed sweep": 0.3021190105}        # the testbed's exact entropy floor (testbed_sweep.csv)
DATASETS = {
    "epoch240": epoch240,
    "olmo 190M-3B": olmo,
    "olmo 190M-1B": lambda: olmo(("190M", "370M", "760M", "1B")),
    "datablations (229)": datablations,
    "datablations 1 epoch": lambda: datablations(True),
    "testbed sweep": testbed,
}
# The testbed's extra run at 10x the sweep's largest budget (docs/LOG.md, "Extrapolation"):
# d4, 201,280 parameters, 37.2M characters, measured loss 0.3277.
TESTBED_TARGET = pd.DataFrame({"N": [201280.0], "D": [37.2e6], "loss": [0.3277]})


def pct(v):
    return "-" if v is None else f"{100 * v:.2f}"


def table(methods, holdouts) -> None:
    print("| data set | held out | form | method | mean abs err % | max abs err % | bias % | rolling mean % | rolling max % | s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, load in DATASETS.items():
        frame = load()
        names = default_candidates(frame, FLOOR.get(name))
        for ho in holdouts:
            for method in methods:
                t = time.perf_counter()
                bt = backtest(Runs(frame[[c for c in ("N", "D", "C", "loss", "U") if c in frame]]), names,
                              holdout=ho, method=method, floor=FLOOR.get(name))
                dt = time.perf_counter() - t
                for r in bt["candidates"]:
                    ro = r.get("rolling") or {}
                    best = " **best**" if r["law"] == bt["best"] else ""
                    print(f"| {name} | {r.get('held_out', '-')} | {r['law']}{best} | {method} | {pct(r['mean_abs_err'])} "
                          f"| {pct(r['max_abs_err'])} | {pct(r['bias'])} | {pct(ro.get('mean_abs_err'))} "
                          f"| {pct(ro.get('max_abs_err'))} | {dt:.1f} |", flush=True)


def targets() -> None:
    from scalelab.laws.select import fit_auto

    tmp = Path(tempfile.gettempdir())
    cases = [("olmo 190M-1B", olmo(("190M", "370M", "760M", "1B")), olmo_targets(), None),
             ("olmo 190M-3B", olmo(), olmo_targets(), None),
             ("testbed sweep", testbed(), TESTBED_TARGET, None),
             ("testbed sweep, --floor", testbed(), TESTBED_TARGET, FLOOR["testbed sweep"])]
    print("\n| fitted on | --law auto chose | target | predicted | measured | error % | 95% PI |")
    print("|---|---|---|---:|---:|---:|---|")
    from scalelab.laws.intervals import predict_intervals

    for name, frame, tg, floor in cases:
        path = tmp / "bench_backtest_table.csv"
        frame[["N", "D", "loss"]].to_csv(path, index=False)
        law, _, sel = fit_auto(path, floor=floor, bootstrap=200)
        X = tg[["N", "D"]].to_numpy(float)
        if law.name == "power":
            X = 6 * X[:, :1] * X[:, 1:]
        iv = predict_intervals(law, X)
        for i in range(len(tg)):
            label = tg["run"].iloc[i] if "run" in tg else f"N={tg.N.iloc[i]:.3g}, D={tg.D.iloc[i]:.3g}"
            pi = iv["pi"][i]
            print(f"| {name} | {sel['selected_by']['choice']} | {label} | {iv['loss'][i]:.4f} | {tg.loss.iloc[i]:.4f} "
                  f"| {100 * (iv['loss'][i] / tg.loss.iloc[i] - 1):+.2f} | [{pi[0]:.4f}, {pi[1]:.4f}] |", flush=True)


def speed() -> None:
    from scalelab.laws.select import fit_auto

    path = Path(tempfile.gettempdir()) / "bench_backtest_epoch.csv"
    epoch240()[["N", "D", "loss"]].to_csv(path, index=False)
    t = time.perf_counter()
    law, _, sel = fit_auto(path)
    print(f"\n--law auto on Epoch's 240 points (1,000 bootstrap resamples, all backtests): {time.perf_counter() - t:.1f} s; "
          f"{sel['selected_by']['reason']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="vpnls,lbfgs")
    ap.add_argument("--holdouts", default="largest-compute,largest-params")
    ap.add_argument("--skip-table", action="store_true")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    if not args.skip_table:
        table(args.methods.split(","), args.holdouts.split(","))
    targets()
    speed()
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
