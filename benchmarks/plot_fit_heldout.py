"""Figure: predicted against observed loss of every held-out run, case by case, for `--law auto`
unweighted and with its frontier weights (the cases of bench_fit_heldout.py).

    OMP_NUM_THREADS=1 python benchmarks/plot_fit_heldout.py --out docs/figures/heldout_backtest.png

One panel per case: each held-out run's observed loss (x) and the loss `--law auto` predicted for
it from the cut table (y), with frontier weight 0 (grey) and the default (blue); the band is
±2% around the diagonal. The panel title gives the form auto chose and the mean |error|.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit_heldout import case_result, cases, errors  # noqa: E402

from scalelab.laws.select import AUTO_FRONTIER_WEIGHT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("docs/figures/heldout_backtest.png"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    runs = [(name, train.reset_index(drop=True), test.reset_index(drop=True)) for name, train, test in cases()]
    rows = -(-len(runs) // 4)
    fig, axes = plt.subplots(rows, 4, figsize=(16, 3.85 * rows), squeeze=False)
    for ax in axes.flat[len(runs):]:  # a last row not filled
        ax.set_visible(False)
    styles = ((0.0, "0.55", "o", "unweighted"), (AUTO_FRONTIER_WEIGHT, "tab:blue", "s", f"(C/C_max)^{AUTO_FRONTIER_WEIGHT:g}"))
    for ax, (name, train, test) in zip(axes.flat, runs):
        obs = test["loss"].to_numpy(float)
        title = []
        for fw, color, marker, label in styles:
            best, preds = case_result(train, test, fw)
            mean, _ = errors(preds[best], test)
            ax.scatter(obs, preds[best], s=22, c=color, marker=marker, alpha=0.8, label=f"{label}: {best}, {mean:.2f}%")
            title.append(f"{mean:.2f}%")
            print(f"{name}: weight {fw:g} chose {best}, mean |error| {mean:.2f}%", flush=True)
        lo, hi = obs.min() * 0.97, obs.max() * 1.03
        grid = np.linspace(lo, hi, 2)
        ax.plot(grid, grid, "k-", lw=0.8)
        ax.fill_between(grid, grid * 0.98, grid * 1.02, color="k", alpha=0.08, lw=0)
        ax.set_xlim(lo, hi)
        ax.set_title(name.replace(" → ", "\n→ "), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.tick_params(labelsize=7)
    for ax in axes.flat[max(0, len(runs) - 4):len(runs)]:  # the lowest panel of each column
        ax.set_xlabel("observed loss", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("predicted by --law auto", fontsize=8)
    fig.suptitle("Held-out runs beyond the fitted frontier: predicted vs observed (band: ±2%)", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
