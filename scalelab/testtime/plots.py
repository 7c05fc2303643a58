"""The test-time figure: accuracy against FLOPs per question, every strategy on one axis per
difficulty, with the chance baselines drawn (matplotlib, Agg backend)."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from scalelab.errors import InputError
from scalelab.tables import load_runs


def plot_accuracy_vs_flops(runs: str | Path, out: str | Path, *, difficulties: list[int] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # evaluation points only: allocation reports (kind "adaptive") are mixtures of difficulties
    recs = [r for r in load_runs(runs).records
            if r.phase == "testtime" and r.metrics.get("kind") != "adaptive" and "steps" in r.metrics]
    by_d: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in recs:
        d = int(r.metrics.get("steps", 0))
        if difficulties is None or d in difficulties:
            by_d[d][r.technique].append(r)
    if not by_d:
        raise InputError(f"{runs}: no test-time records" + (f" at difficulties {difficulties}" if difficulties else ""))
    ds = sorted(by_d)
    cols = min(4, len(ds))
    rows = math.ceil(len(ds) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 2.2, 3.6 * rows), squeeze=False)
    names = sorted({t for d in ds for t in by_d[d]})
    colour = {t: plt.get_cmap("tab10" if len(names) <= 10 else "tab20")(i) for i, t in enumerate(names)}
    for ax, d in zip(axes.flat, ds):
        worked_chance, direct_chance = None, None
        for t, rs in sorted(by_d[d].items()):
            rs = sorted(rs, key=lambda r: r.metrics["flops_per_question"])
            xs = [r.metrics["flops_per_question"] for r in rs]
            ys = [r.metrics["accuracy"] for r in rs]
            se = [r.metrics.get("accuracy_se") or 0.0 for r in rs]
            single = rs[0].metrics.get("kind") == "single"
            ax.errorbar(xs, ys, yerr=se, color=colour[t], marker="*" if single else "o", ms=8 if single else 3,
                        lw=1, capsize=2, ls="none" if single else "-", label=t)
            if t == "direct":
                direct_chance = rs[0].metrics["chance"]
            else:
                worked_chance = rs[0].metrics["chance"]
        if worked_chance is not None:
            ax.axhline(worked_chance, color="0.4", ls="--", lw=0.8, label="chance (worked solution)")
        if direct_chance is not None:
            ax.axhline(direct_chance, color="0.6", ls=":", lw=0.8, label="chance (direct answer)")
        ax.set(xscale="log", ylim=(-0.02, 1.02), title=f"{d} step{'s' if d != 1 else ''}",
               xlabel="FLOPs per question (policy + verifier)", ylabel="accuracy")
        ax.grid(alpha=0.3)
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels overlap
    for ax in list(axes.flat)[len(ds):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    for ax in list(axes.flat)[1:len(ds)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen.keys()), loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 2.2 / (4.2 * cols + 2.2), 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
