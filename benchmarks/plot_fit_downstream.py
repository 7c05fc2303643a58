"""Figure: the two-step downstream law on the OLMo ladder, one panel per task (the data and the
variants of bench_fit_downstream.py).

    OMP_NUM_THREADS=1 python benchmarks/plot_fit_downstream.py --out docs/figures/downstream_olmo.png

Each panel: accuracy against task loss (bits per byte of the correct answer) for every checkpoint
of the 190M-1B rungs (grey), step 2's sigmoid with its floor at chance and its ceiling at 1 (black),
the 7B and 13B runs as measured (their final task loss and accuracy: open circles) and as predicted
from (N, D) alone with step 1 tied (filled stars, joined to the measured point).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit_downstream import TASKS, load, task_frame  # noqa: E402

from scalelab.laws.downstream import TwoStepLaw  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("docs/figures/downstream_olmo.png"))
    args = ap.parse_args()
    runs, targets = load(["190M", "370M", "760M", "1B"])
    fig, axes = plt.subplots(2, 5, figsize=(18, 7.5))
    X = np.array([[n, D] for n, D, _ in runs])
    for ax, (task, (_, _, chance)) in zip(axes.flat, TASKS.items()):
        tl = np.array([task_frame(d, task)["loss"].tail(5).mean() for _, _, d in runs])
        ck = pd.concat([task_frame(d, task) for _, _, d in runs]).dropna()
        law = TwoStepLaw(form="tied", chance=chance, ceiling=1.0).fit(X, tl, ck["loss"].to_numpy(), ck["acc"].to_numpy())
        ax.scatter(ck["loss"], ck["acc"], s=3, alpha=0.25, color="0.5")
        errs = []
        for i, (name, (n, D, d)) in enumerate(targets.items()):
            meas = task_frame(d, task).tail(5).mean()
            pred = law.predict([[n, D]])
            pl, pa = float(pred["task_loss"][0]), float(pred["accuracy"][0])
            color = f"C{i + 1}"
            ax.scatter([meas["loss"]], [meas["acc"]], s=50, facecolors="none", edgecolors=color, label=f"{name} measured")
            ax.scatter([pl], [pa], s=90, marker="*", color=color, label=f"{name} predicted")
            ax.plot([meas["loss"], pl], [meas["acc"], pa], color=color, lw=0.7)
            errs.append(f"{name} {100 * (pa - meas['acc']):+.1f}")
        lo = min(ck["loss"].min(), *(float(law.predict([[n, D]])["task_loss"][0]) for n, D, _ in targets.values()))
        grid = np.linspace(lo * 0.95, ck["loss"].max() * 1.02, 200)
        ax.plot(grid, law.step2_.predict(grid), "k-", lw=1)
        ax.axhline(chance, color="k", lw=0.5, ls=":")
        ax.set_title(f"{task}: {', '.join(errs)} points", fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("task loss (bits per byte)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy", fontsize=8)
    fig.suptitle("Two-step downstream law on the OLMo ladder (fitted on 190M-1B): checkpoints, the sigmoid "
                 "(chance to 1), the 7B and 13B runs measured and predicted", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
