"""The iso-accuracy frontier figure (Jones 2021, fig. 8, for accuracy instead of Elo): one panel per
difficulty, pretraining FLOPs across, test-time FLOPs per question up, every measured point
coloured by its accuracy, and the exchange law's lines of equal accuracy through them. Their
slope is the exchange rate: a line falling by k decades per decade of pretraining means 10x
pretraining is worth 10^k x test-time FLOPs.

    plot_frontier(table, doc, "frontier.png", strategy="majority")   # scalelab exchange RUNS --plot F
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalelab.errors import InputError

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def default_strategy(doc: dict[str, Any]) -> str:
    """The deployable strategy (not an oracle, not greedy) with the most points."""
    from scalelab.laws.exchange_tables import GREEDY

    cands = [(e["points"], s) for s, e in doc["strategies"].items() if s != GREEDY and not e["oracle"]
             and "error" not in e["pooled"]]
    if not cands:
        raise InputError("no fitted test-time strategy with several budgets to draw (greedy alone has one C_test "
                         "per model); evaluate e.g. --strategies cot,majority --n 1,2,4,8,16")
    return max(cands)[1]


def plot_frontier(table: pd.DataFrame, doc: dict[str, Any], out: str | Path, *, strategy: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scalelab.laws.exchange import ExchangeLaw
    from scalelab.laws.exchange_tables import GREEDY
    from scalelab.laws.plot import readable_log_ticks

    s = strategy or default_strategy(doc)
    if s not in doc["strategies"]:
        raise InputError(f"strategy {s!r}: the exchange fit has {', '.join(doc['strategies'])}")
    table = table[table.model.isin({m["model"] for m in doc["ladder"]})]  # the document's ladder (its frontier)
    pts = table[table.strategy == s]
    greedy = table[table.strategy == GREEDY]
    ds = sorted(pts.difficulty.unique())
    cols = min(2 if len(ds) <= 4 else 4, len(ds))
    rows = math.ceil(len(ds) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols + 1.0, 3.9 * rows), squeeze=False, layout="constrained")
    cmap, norm = plt.get_cmap("viridis"), matplotlib.colors.Normalize(0, 1)
    xlabel = "pretraining FLOPs (6ND from --pretraining)" if doc.get("pretraining") else "pretraining FLOPs (exact)"
    for ax, d in zip(axes.flat, ds):
        sub, g = pts[pts.difficulty == d], greedy[greedy.difficulty == d]
        ax.scatter(sub.C_train, sub.C_test, c=sub.accuracy, cmap=cmap, norm=norm, s=28, edgecolor="0.3", lw=0.4)
        if len(g):
            ax.scatter(g.C_train, g.C_test, c=g.accuracy, cmap=cmap, norm=norm, s=90, marker="*", edgecolor="k",
                       lw=0.5, label="greedy (cot)")
        f = doc["strategies"][s]["by_difficulty"].get(str(d)) or {}
        title = f"{d} step{'s' if d != 1 else ''}"
        if "error" not in f and f:
            law = ExchangeLaw.from_dict(f)
            lo, hi = math.log10(sub.C_train.min()), math.log10(sub.C_train.max())
            xs = np.logspace(lo - 0.3, hi + 0.3, 200)
            for lev in LEVELS:
                ys = law.iso_c_test(xs, lev, difficulty=law.difficulties_[0])
                ys = np.where((ys > sub.C_test.min() / 100) & (ys < sub.C_test.max() * 100), ys, np.nan)  # in view
                if np.isfinite(ys).any():
                    ax.plot(xs, ys, color=cmap(norm(lev)), lw=1.2)
                    k = int(np.nanargmin(np.abs(np.log10(ys) - math.log10(sub.C_test.median()))))
                    ax.annotate(f"{lev:.1f}", (xs[k], ys[k]), fontsize=6, color="0.2")
            ci = f["ci95"].get("multiplier")
            title += f": 10x pretraining = {_g(f['params']['multiplier'])}x test-time FLOPs"
            title += f"\n95% interval [{_g(ci[0])}, {_g(ci[1])}]" if ci else "\n(no bootstrap interval)"
        ylo = min(sub.C_test.min(), g.C_test.min() if len(g) else math.inf)
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="test-time FLOPs per question",
               ylim=(ylo / 2, sub.C_test.max() * 2), title=title)
        ax.title.set_fontsize(9)
        readable_log_ticks(ax.xaxis)
        readable_log_ticks(ax.yaxis)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(ds):]:
        ax.axis("off")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="accuracy", shrink=0.8)
    fig.suptitle(f"{s}: measured points (stars: greedy) and the exchange law's lines of equal accuracy", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return out


def _g(v: Any) -> str:
    """3 significant digits; 'inf' where test-time compute buys nothing."""
    x = math.nan if v is None else float(v)
    return "inf" if x == math.inf else ("-" if math.isnan(x) else f"{x:.3g}")
