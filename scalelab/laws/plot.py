"""Figures of a fitted law over the runs it was fitted on (matplotlib, Agg backend: no display).

L(N, D) laws: runs in the (N, D) plane coloured by loss, iso-loss contours of the fit and the
compute-optimal frontier N*(C), D*(C) with faint iso-FLOP lines 6·N·D = C. IsoFLOP: loss against
N per budget with each parabola and its minimum, and the optima against C with their power laws.
Power law: loss against x with the fit. Any other law: observed against predicted loss.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from scalelab.errors import InputError
from scalelab.laws.base import Law


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fit(law: Law, X: np.ndarray, y: np.ndarray, path: str | Path, *, title: str | None = None) -> Path:
    plt = _pyplot()
    drawer = PLOTTERS.get(law.name, _plot_observed_predicted)
    fig = drawer(plt, law, np.asarray(X, float), np.asarray(y, float))
    fig.suptitle(title or law.title, fontsize=10)
    return save_figure(plt, fig, path)


def save_figure(plt: Any, fig: Any, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a figure; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def readable_log_ticks(axis: Any, max_ticks: int = 5) -> None:
    """Label a log axis with at most `max_ticks` short labels that cannot collide.

    matplotlib's default labels every minor tick of an axis spanning under a decade, in long
    scientific notation ("2x10^4 3x10^4 4x10^4 ..."), and none at all on one that holds no
    decade once its minor labels are switched off. Here: whole decades when two or more are in
    view (every k-th one when there are many), else 1-9, 1-2-5, 1-3 or 1 times a power of ten,
    the finest step that gives at most `max_ticks`. Call it after the data and limits are set.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    if not (lo > 0 and np.isfinite(hi)):
        return
    k_lo, k_hi = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    decades = [10.0 ** k for k in range(k_lo, k_hi + 1) if lo <= 10.0 ** k <= hi]
    if len(decades) >= 2:
        ticks = decades[::-(-len(decades) // max_ticks)]
    else:
        ticks = []
        for subs in (range(1, 10), (1, 2, 5), (1, 3), (1,)):
            ticks = [m * 10.0 ** k for k in range(k_lo, k_hi + 1) for m in subs if lo <= m * 10.0 ** k <= hi]
            if len(ticks) <= max_ticks:
                break
        ticks = ticks or [float(f"{np.sqrt(lo * hi):.1g}")]  # a sliver of one decade: its middle

    def label(v: float, _pos: Any = None) -> str:
        k = int(np.floor(np.log10(v) + 1e-9))
        m = round(v / 10.0 ** k, 6)
        return f"$10^{{{k}}}$" if m == 1 else f"${m:g}{{\\cdot}}10^{{{k}}}$"

    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(NullFormatter())


def _nd_plane(plt, ax, law: Law, N, D, y, predict: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    ln, ld = np.log10(N), np.log10(D)
    pad = 0.3
    gn = np.logspace(ln.min() - pad, ln.max() + pad, 120)
    gd = np.logspace(ld.min() - pad, ld.max() + pad, 120)
    NN, DD = np.meshgrid(gn, gd)
    LL = predict(NN.ravel(), DD.ravel()).reshape(NN.shape)
    levels = np.quantile(y, np.linspace(0.05, 0.95, 8))
    cs = ax.contour(NN, DD, LL, levels=np.unique(levels), colors="0.35", linewidths=0.8)
    ax.clabel(cs, fmt="%.2f", fontsize=7)
    sc = ax.scatter(N, D, c=y, cmap="viridis_r", s=14, edgecolors="k", linewidths=0.2, zorder=3)
    plt.colorbar(sc, ax=ax, label="loss")
    C_lo, C_hi = 6 * NN.min() * DD.min(), 6 * NN.max() * DD.max()
    Cs = np.logspace(np.log10(C_lo), np.log10(C_hi), 200)
    for C in np.logspace(np.ceil(np.log10(C_lo)), np.floor(np.log10(C_hi)), 12):
        ax.plot(gn, C / (6 * gn), color="0.85", lw=0.5, zorder=1)
    try:
        with np.errstate(all="ignore"):
            opt = [law.compute_optimal(C) for C in Cs]
    except InputError:  # alpha or beta <= 0: the fit has no compute-optimal allocation to draw
        opt = []
    if opt:
        ax.plot([o.N for o in opt], [o.D for o in opt], color="crimson", lw=1.6, label="compute-optimal N*(C), D*(C)")
    ax.set(xscale="log", yscale="log", xlim=(gn[0], gn[-1]), ylim=(gd[0], gd[-1]),
           xlabel="parameters N", ylabel="training tokens D")
    readable_log_ticks(ax.xaxis)
    readable_log_ticks(ax.yaxis)
    if opt:
        ax.legend(fontsize=7, loc="upper left")


def _plot_chinchilla(plt, law: Law, X, y):
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.4, 1]})
    N, D = X[:, 0], X[:, 1]
    _nd_plane(plt, ax, law, N, D, y, lambda n, d: law.predict(np.column_stack([n, d])))
    _observed_predicted(ax2, y, law.predict(X), 6 * N * D, "compute 6ND")
    return fig


def _plot_datacon(plt, law: Law, X, y):
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.4, 1]})
    N, D, U = X.T
    _nd_plane(plt, ax, law, N, D, y, lambda n, d: law.predict(np.column_stack([n, d, np.full_like(n, np.inf)])))
    ax.set_title("contours: unlimited unique data", fontsize=8)
    _observed_predicted(ax2, y, law.predict(X), D / np.minimum(U, D), "epochs D/U")
    return fig


def _observed_predicted(ax, y, yhat, colour, label):
    sc = ax.scatter(yhat, y, c=np.log10(colour), cmap="plasma", s=12)
    lo, hi = min(y.min(), yhat.min()), max(y.max(), yhat.max())
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8)
    ax.set(xlabel="predicted loss", ylabel="observed loss")
    ax.figure.colorbar(sc, ax=ax, label=f"log10 {label}")


def _plot_isoflop(plt, law: Law, X, y):
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    N, D, C = X.T
    labels = law.labels_ if hasattr(law, "labels_") else None
    cmap = plt.get_cmap("viridis")
    budgets = law.budgets_
    for g, b in enumerate(budgets):
        col = cmap(g / max(1, len(budgets) - 1))
        m = labels == g if labels is not None else np.isclose(np.log10(C), np.log10(b["C"]), atol=0.1)
        ax.scatter(N[m], y[m], color=col, s=12, label=f"C = {b['C']:.2g} FLOPs" + ("" if b.get("used") else " (not used)"))
        if b.get("used") and m.sum() >= 3:
            u = np.log(N[m])
            coef = np.polyfit(u - u.mean(), y[m], 2)
            grid = np.linspace(u.min(), u.max(), 60)
            ax.plot(np.exp(grid), np.polyval(coef, grid - u.mean()), color=col, lw=1)
            ax.scatter([b["N_opt"]], [b["loss_min"]], marker="*", s=90, color=col, edgecolors="k", zorder=4)
    ax.set(xscale="log", xlabel="parameters N", ylabel="loss", title="IsoFLOP parabolas and their minima")
    readable_log_ticks(ax.xaxis)
    ax.legend(fontsize=7, title="budget (stars: minima)", title_fontsize=7)
    used = [b for b in budgets if b.get("used")]
    Cs = np.array([b["C"] for b in used])
    grid = np.logspace(np.log10(Cs.min()) - 0.3, np.log10(Cs.max()) + 1.0, 50)
    p = law.params_
    ax2.scatter(Cs, [b["N_opt"] for b in used], color="C0", label=f"N_opt  (a = {p['a']:.3f})")
    ax2.scatter(Cs, [b["D_opt"] for b in used], color="C1", label=f"D_opt  (b = {p['b']:.3f})")
    ax2.plot(grid, p["coef_N"] * grid ** p["a"], color="C0")
    ax2.plot(grid, p["coef_D"] * grid ** p["b"], color="C1")
    env = getattr(law, "envelope_", {}) or {}
    if env:
        ax2.plot(grid, env["coef_N"] * grid ** env["a"], color="C0", ls=":", lw=1,
                 label=f"approach 1 envelope (a = {env['a']:.3f})")
    ax2.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="optimal N, D")
    readable_log_ticks(ax2.xaxis)
    readable_log_ticks(ax2.yaxis)
    ax2.legend(fontsize=7)
    return fig


def _plot_power(plt, law: Law, X, y):
    fig, ax = plt.subplots(figsize=(6, 4.2))
    x = X[:, 0]
    ax.scatter(x, y, s=12, color="C0", label="runs")
    grid = np.logspace(np.log10(x.min()) - 0.2, np.log10(x.max()) + 0.5, 200)
    p = law.params_
    ax.plot(grid, law.predict(grid), color="crimson",
            label=f"E + A·{law.x}^-α: E={p['E']:.3g}, A={p['A']:.3g}, α={p['alpha']:.3g}")
    if p["E"] > 0:
        ax.axhline(p["E"], color="0.5", ls="--", lw=0.8, label="irreducible E")
    ax.set(xscale="log", yscale="log", xlabel=law.x, ylabel="loss")
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
    ax.legend(fontsize=7)
    return fig


def _plot_observed_predicted(plt, law: Law, X, y):
    fig, ax = plt.subplots(figsize=(5, 4.2))
    _observed_predicted(ax, y, law.predict(X), np.arange(1, len(y) + 1), "run index")
    return fig


PLOTTERS: dict[str, Callable[..., Any]] = {
    "chinchilla": _plot_chinchilla,
    "datacon": _plot_datacon,
    "isoflop": _plot_isoflop,
    "power": _plot_power,
}
