"""Learning curves of a sweep against FLOPs: is the scaling smooth?

A Chinchilla fit extrapolates only if loss falls smoothly with compute. This figure shows every
member's training loss (a running mean, so single batches do not hide the trend) and held-out
evaluations against exact training FLOPs, minus the source's entropy floor where it is known (the
testbed's), on log-log axes: a sudden drop (a phase transition, FINDINGS.md's narrow arithmetic
task) shows as a cliff, smooth scaling as straight, evenly spaced curves. The frontier (the best
final loss at each budget) gets a power law L - floor = k C^(-g) by least squares in log space, and
its residuals are printed, so "smooth" is a number, not a look.

    scalelab curves runs/sweep --out curves.png
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scalelab.errors import InputError
from scalelab.records import read_metrics
from scalelab.tables import iter_run_dirs, load_runs


@dataclass
class Frontier:
    C: np.ndarray        # budgets (exact training FLOPs)
    loss: np.ndarray     # best final held-out loss per budget
    model: list[str]     # the model that reached it
    floor: float         # subtracted before the power law (0 when unknown)
    k: float
    g: float             # L - floor = k * C^-g
    residual_rms: float  # of log(L - floor), i.e. relative

    def as_dict(self) -> dict:
        """The power law and, per budget, the best run and the law's relative error there."""
        pred = self.floor + self.k * self.C ** -self.g
        return {"floor": self.floor, "k": self.k, "g": self.g, "residual_rms": self.residual_rms,
                "budgets": [{"C": float(c), "model": m, "loss": float(l), "predicted": float(p),
                             "rel_err": float(l / p - 1)} for c, l, m, p in zip(self.C, self.loss, self.model, pred)]}

    def lines(self) -> list[str]:
        out = [f"frontier: L - {self.floor:.4f} = {self.k:.4g} * C^-{self.g:.4f}  "
               f"(rms relative residual {100 * self.residual_rms:.2f}%)"]
        for c, l, m in zip(self.C, self.loss, self.model):
            pred = self.floor + self.k * c ** -self.g
            out.append(f"  C {c:9.3g}  best {m:<6} loss {l:.4f}  power law {pred:.4f}  ({100 * (l / pred - 1):+.2f}%)")
        return out


def frontier(runs_dir: str | Path, *, budget_tol_dex: float = 0.1) -> Frontier:
    """Best final loss per budget (budgets are clusters of log10 C) and a power law through them."""
    recs = [r for r in load_runs(runs_dir).records if r.phase == "pretrain" and r.metrics.get("loss") is not None]
    if len(recs) < 3:
        raise InputError(f"{runs_dir}: {len(recs)} complete pretraining runs; a frontier needs at least 3")
    recs.sort(key=lambda r: r.flops["pretrain"])
    groups: list[list] = []
    for r in recs:
        if groups and math.log10(r.flops["pretrain"]) - math.log10(groups[-1][0].flops["pretrain"]) <= budget_tol_dex:
            groups[-1].append(r)
        else:
            groups.append([r])
    best = [min(g, key=lambda r: r.metrics["loss"]) for g in groups]
    floor = best[0].metrics.get("entropy_floor") or 0.0
    C = np.array([float(np.mean([r.flops["pretrain"] for r in g])) for g in groups])
    L = np.array([r.metrics["loss"] for r in best])
    if len(C) < 2 or np.any(L <= floor):
        raise InputError(f"{runs_dir}: need >= 2 budgets with losses above the floor {floor:.4f} for a frontier")
    slope, icpt = np.polyfit(np.log(C), np.log(L - floor), 1)
    res = np.log(L - floor) - (icpt + slope * np.log(C))
    return Frontier(C, L, [r.config.get("model", "?") for r in best], float(floor), float(math.exp(icpt)),
                    float(-slope), float(np.sqrt(np.mean(res ** 2))))


def plot_curves(runs_dir: str | Path, out: str | Path, *, smooth: int = 200) -> tuple[Path, Frontier]:
    """The figure of the module docstring; returns its path and the frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(runs_dir)
    recs = [r for r in runs.records if r.phase == "pretrain"]
    front = frontier(runs_dir)
    floor = front.floor
    models = sorted({r.config.get("model", "?") for r in recs}, key=lambda m: (len(m), m))
    cmap = plt.get_cmap("viridis")
    colour = {m: cmap(i / max(1, len(models) - 1)) for i, m in enumerate(models)}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6))
    seen: set[str] = set()
    where = {d.name: d for d in iter_run_dirs(runs_dir)}  # records are found recursively; so are their metrics
    for r in recs:
        rows = read_metrics(where.get(r.run_id, Path(runs_dir) / r.run_id))
        train = [(row["flops"], row["loss"]) for row in rows if row.get("loss") is not None and row["flops"] > 0]
        evals = [(row["flops"], row["eval_loss"]) for row in rows if row.get("eval_loss") is not None and row["flops"] > 0]
        m = r.config.get("model", "?")
        if train:
            f, l = map(np.asarray, zip(*train))
            w = max(1, min(smooth, len(l) // 10))
            ls = np.convolve(l, np.ones(w) / w, mode="valid")
            ax.plot(f[w - 1:], np.maximum(ls - floor, 1e-4), color=colour[m], lw=0.8, alpha=0.7,
                    label=m if m not in seen else None)
            seen.add(m)
        if evals:
            f, l = map(np.asarray, zip(*evals))
            ax.plot(f, np.maximum(l - floor, 1e-4), "o", ms=2.5, color=colour[m])
    cs = np.geomspace(front.C.min() / 3, front.C.max() * 10, 50)
    ax.plot(cs, front.k * cs ** -front.g, "k--", lw=1, label=f"frontier C^-{front.g:.3f}")
    ax.plot(front.C, front.loss - floor, "k*", ms=9)
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs (exact)",
           ylabel=f"loss - floor ({floor:.3f})" if floor else "loss (nats/token)",
           title="learning curves (running mean of train loss; dots: held-out)")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    # right: final loss against tokens per parameter for each budget (how wide the bowl is)
    by_budget: dict[float, list] = {}
    for r in recs:
        if r.metrics.get("loss") is None:
            continue
        key = min(front.C, key=lambda c: abs(math.log10(c) - math.log10(r.flops["pretrain"])))
        by_budget.setdefault(float(key), []).append(r)
    bc = plt.get_cmap("plasma")
    for i, (c, rs) in enumerate(sorted(by_budget.items())):
        rs.sort(key=lambda r: r.n_params_nonembedding or 0)
        x = [r.tokens / (r.n_params_active or r.n_params_nonembedding) for r in rs]
        y = [r.metrics["loss"] - floor for r in rs]
        bx.plot(x, y, "o-", color=bc(i / max(1, len(by_budget) - 1) * 0.85), label=f"C = {c:.2g}")
    bx.set(xscale="log", yscale="log", xlabel="tokens per parameter", ylabel="final loss - floor",
           title="IsoFLOP profiles against tokens per parameter")
    bx.legend(fontsize=7)
    bx.grid(alpha=0.3, which="both")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out, front
