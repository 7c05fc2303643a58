"""The test-time figure: accuracy against FLOPs per question, one axis per difficulty and one line
per (model, strategy) — colour says the strategy, the marker says the model, so points of different
models are never joined — with the chance baselines drawn (matplotlib, Agg backend).

    plot_accuracy_vs_flops("runs/tt", "testtime.png")      # scalelab testtime plot RUNS --out F
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from scalelab.errors import InputError
from scalelab.laws.plot import readable_log_ticks
from scalelab.records import RunRecord
from scalelab.tables import load_runs

MARKERS = "osD^vP<>Xh"  # one per model, cycled past ten


def series(recs: list[RunRecord], difficulties: list[int] | None = None
           ) -> dict[int, dict[tuple[str, str], list[RunRecord]]]:
    """{difficulty: {(model, strategy): records by FLOPs per question}}; the model is the run the
    evaluation sampled from (`parent_id`). Allocation reports (kind "adaptive") are left out:
    they mix difficulties."""
    out: dict[int, dict[tuple[str, str], list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in recs:
        if r.phase != "testtime" or r.metrics.get("kind") == "adaptive" or "steps" not in r.metrics:
            continue
        d = int(r.metrics["steps"])
        if difficulties is None or d in difficulties:
            out[d][(r.parent_id or "-", r.technique)].append(r)
    for by_line in out.values():
        for rs in by_line.values():
            rs.sort(key=lambda r: r.metrics["flops_per_question"])
    return out


def accuracy_figure(recs: list[RunRecord], *, difficulties: list[int] | None = None) -> Any:
    """The matplotlib figure (the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    by_d = series(recs, difficulties)
    if not by_d:
        raise InputError("no test-time records" + (f" at difficulties {difficulties}" if difficulties else ""))
    ds = sorted(by_d)
    cols = min(3, len(ds))
    rows = math.ceil(len(ds) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols + 2.8, 3.6 * rows), squeeze=False)
    lines = {k for d in ds for k in by_d[d]}
    pretrain = {m: min(r.flops.get("pretrain") or 0.0 for d in ds for (mm, _), rs in by_d[d].items() if mm == m
                       for r in rs) for m, _ in lines}
    models = sorted(pretrain, key=lambda m: (pretrain[m], m))
    names = sorted({t for _, t in lines})
    colour = {t: plt.get_cmap("tab10" if len(names) <= 10 else "tab20")(i) for i, t in enumerate(names)}
    marker = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    chance: dict[str, Any] = {}
    for ax, d in zip(axes.flat, ds):
        for (m, t), rs in sorted(by_d[d].items()):
            ax.errorbar([r.metrics["flops_per_question"] for r in rs], [r.metrics["accuracy"] for r in rs],
                        yerr=[r.metrics.get("accuracy_se") or 0.0 for r in rs], color=colour[t], marker=marker[m],
                        ms=5 if len(rs) == 1 else 4, lw=1, capsize=2)
        worked = [rs[0].metrics["chance"] for (_, t), rs in by_d[d].items() if t != "direct" and "chance" in rs[0].metrics]
        direct = [rs[0].metrics["chance"] for (_, t), rs in by_d[d].items() if t == "direct" and "chance" in rs[0].metrics]
        if worked:
            chance["chance (worked solution)"] = ax.axhline(worked[0], color="0.4", ls="--", lw=0.8)
        if direct:
            chance["chance (direct answer)"] = ax.axhline(direct[0], color="0.6", ls=":", lw=0.8)
        ax.set(xscale="log", ylim=(-0.02, 1.02), title=f"{d} step{'s' if d != 1 else ''}",
               xlabel="FLOPs per question (policy + verifier)", ylabel="accuracy")
        ax.grid(alpha=0.3)
        readable_log_ticks(ax.xaxis, max_ticks=4)
    for ax in list(axes.flat)[len(ds):]:
        ax.axis("off")
    # two keys in one legend: strategies by colour, models (with their pretraining FLOPs) by marker
    handles = [Line2D([], [], color=colour[t], lw=1.5, label=t) for t in names]
    handles += [Line2D([], [], color="0.3", marker=marker[m], ls="none",
                       label=f"{m} ({pretrain[m]:.2g} FLOPs)" if pretrain[m] else m)  # a plain HF model: unknown
                for m in models]
    handles += [Line2D([], [], color=h.get_color(), ls=h.get_linestyle(), lw=0.8, label=k) for k, h in chance.items()]
    fig.legend(handles=handles, loc="center right", fontsize=8, title="colour: strategy; marker: model",
               title_fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 2.8 / (4.4 * cols + 2.8), 1))
    return fig


def plot_accuracy_vs_flops(runs: str | Path, out: str | Path, *, difficulties: list[int] | None = None) -> Path:
    import matplotlib.pyplot as plt

    recs = load_runs(runs).records  # its own errors name the path already
    try:
        fig = accuracy_figure(recs, difficulties=difficulties)
    except InputError as e:
        raise InputError(f"{runs}: {e}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
