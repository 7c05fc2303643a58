"""Post-training scaling curves from the records: accuracy by difficulty against post-training FLOPs
(one line per technique) and against the parent's pretraining FLOPs.

    plot_posttrain("runs/post", "figs/posttrain.png")

x values: `posttrain_flops` is the child's `flops.posttrain` (this stage and any post-training
ancestors: everything after pretraining that the artefact embodies); `pretrain_flops` is the
parent's pretraining ledger as the child recorded it (`parent_flops.pretrain`; a distilled student
re-initialised from scratch carries none of it, but its parent's size is still the x value).
Stages that run no forward pass (quantization, pruning without recovery) sit at 0 FLOPs: the first
panels use a symmetric-log axis so they are drawn at its left end. The parent's accuracy on the same
problems (recorded by each child) is the dashed line, and chance the dotted one.
Command line: `scalelab posttrain plot RUNS --out FILE.png`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scalelab.errors import InputError
from scalelab.tables import posttrain_table


def plot_posttrain(runs_dir: str | Path, out: str | Path, *, difficulties: list[str] | None = None) -> Path:
    """Accuracy against post-training FLOPs, then against the parent's pretraining FLOPs: one panel
    per difficulty (and the mean) in each, three to a row; one colour per technique."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = posttrain_table(runs_dir)
    ds = sorted((d for d in df.difficulty.unique() if d != "mean"), key=int) + ["mean"]
    if difficulties:
        ds = [d for d in ds if d in difficulties]
        if not ds:
            raise InputError(f"difficulties {difficulties}: none in the records of {runs_dir}")
    techs = sorted(df.technique.unique())
    colour = {t: plt.get_cmap("tab10" if len(techs) <= 10 else "tab20")(i) for i, t in enumerate(techs)}
    # at most three panels a row, so that the figure keeps readable text at a page's width: the
    # post-training-FLOPs panels first, then the pretraining-FLOPs panels in the same order
    cols = min(3, len(ds))
    rows = math.ceil(len(ds) / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(3.8 * cols, 3.5 * 2 * rows), squeeze=False)
    tops, bottoms = list(axes[:rows].flat), list(axes[rows:].flat)
    positive = df.posttrain_flops[df.posttrain_flops > 0]
    lin = float(positive.min()) / 10 if len(positive) else 1.0
    for j, d in enumerate(ds):
        sub = df[df.difficulty == d]
        top, bottom = tops[j], bottoms[j]
        for t in techs:
            s = sub[sub.technique == t].sort_values("posttrain_flops")
            if len(s):
                top.errorbar(s.posttrain_flops, s.accuracy, yerr=s.accuracy_se.fillna(0), color=colour[t], marker="o",
                             ms=4, lw=1, capsize=2, label=t)
            s = sub[sub.technique == t].groupby("pretrain_flops", as_index=False).accuracy.max()
            if len(s):
                bottom.plot(s.pretrain_flops, s.accuracy, color=colour[t], marker="o", ms=4, lw=1, label=t)
        parents = sub.groupby("parent_id").agg(parent_accuracy=("parent_accuracy", "first"),
                                               pretrain_flops=("pretrain_flops", "first")).dropna()
        for acc in parents.parent_accuracy.unique():
            top.axhline(acc, color="0.3", ls="--", lw=0.8, label="parent")
        if len(parents):
            p = parents.groupby("pretrain_flops", as_index=False).parent_accuracy.max()
            bottom.plot(p.pretrain_flops, p.parent_accuracy, color="0.3", ls="--", marker="s", ms=4, lw=1, label="parent")
        for ax in (top, bottom):
            ch = sub.chance.dropna()
            if len(ch):
                ax.axhline(float(ch.mean()), color="0.6", ls=":", lw=0.8, label="chance")
            ax.set(ylim=(-0.02, 1.02), ylabel="accuracy")
            ax.grid(alpha=0.3)
        title = "mean over difficulties" if d == "mean" else f"{d} step{'s' if d != '1' else ''}"
        top.set(xscale="symlog", title=title, xlabel="post-training FLOPs")
        top.set_xscale("symlog", linthresh=lin)
        # FLOPs are never negative: start the axis just left of 0 and tick 0 and whole decades above
        # the linear region only (matplotlib's symlog ticks would label -10^k and crowd 0)
        hi = float(df.posttrain_flops.max()) if len(positive) else 10 * lin
        top.set_xlim(-0.3 * lin, hi * 2)
        decades = range(math.ceil(math.log10(lin)), math.floor(math.log10(hi * 2)) + 1)
        top.set_xticks([0.0] + [10.0 ** k for k in decades])
        top.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        bottom.set(xscale="log", title=title, xlabel="parent's pretraining FLOPs")
        pts = sorted(sub.pretrain_flops.dropna().unique())
        if pts:  # tick the parents' budgets themselves: a span under a decade gets colliding minor labels
            bottom.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            bottom.set_xticks(pts, [f"{v:.3g}" for v in pts])
    for ax in tops[len(ds):] + bottoms[len(ds):]:
        ax.axis("off")
    seen: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen.keys()), loc="lower center", ncol=min(6, len(seen)), fontsize=7)
    fig.tight_layout(rect=(0, (0.05 + 0.02 * math.ceil(len(seen) / 6)) / rows, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
