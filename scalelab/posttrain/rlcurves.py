"""Figures of the feedback and RL techniques, from their records' `metrics.curve`:

    plot_rl(runs_dir, "rl.png")            # held-out greedy accuracy against this stage's FLOPs,
                                           # one line per run of rlvr / rlhf / rlaif / rft / dpo
    plot_overoptimisation(runs_dir, "overopt.png")   # rlhf: the reward model's score and the exact
                                           # verifier's accuracy of the same greedy answers, and
                                           # KL(policy || reference), against FLOPs, per kl_coef

Every curve point was measured during the run on the same held-out validation questions
(`curve_problems` per difficulty; greedy answers), so the lines of one parent compare at equal
post-training FLOPs; the x value is the stage's own ledger so far (sampling, reward or judge
passes, reference and policy passes; the parent's SFT FLOPs are not in it). Over-optimisation
follows Gao et al. 2023 ("Scaling Laws for Reward Model Overoptimization"): the proxy reward keeps
rising with the distance from the reference while the gold score (here the verifier) peaks.
Command line: `scalelab posttrain plot-rl RUNS --out rl.png [--overopt overopt.png]`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scalelab.errors import InputError
from scalelab.tables import load_runs

RL_FAMILY = ("rlvr", "rlhf", "rlaif", "rft", "dpo")


def rl_table(runs_dir: str | Path) -> Any:
    """One row per curve point of every RL-family run: run_id, parent_id, technique, kl_coef, x
    (step or round), flops, greedy_accuracy, greedy_reward, reward, sample_accuracy, kl."""
    import pandas as pd

    rows = []
    for r in load_runs(runs_dir).records:
        if r.phase != "posttrain" or not r.technique.startswith(RL_FAMILY) or not r.metrics.get("curve"):
            continue
        for c in r.metrics["curve"]:
            rows.append({"run_id": r.run_id, "parent_id": r.parent_id, "technique": r.technique,
                         "label": _label(r), "kl_coef": r.config.get("kl_coef"), "x": c.get("step", c.get("round")),
                         "flops": c.get("posttrain_flops", math.nan), **{k: c.get(k) for k in
                         ("greedy_accuracy", "greedy_reward", "reward", "sample_accuracy", "kl")}})
    if not rows:
        raise InputError(f"{runs_dir}: no rlvr / rlhf / rlaif / rft / dpo records with a curve "
                         "(make one with `scalelab posttrain rlvr --from RUN`)")
    return pd.DataFrame(rows).astype({"greedy_accuracy": float, "flops": float})


def _label(r: Any) -> str:
    """What tells runs of one technique apart on the figure (the settings this page varies)."""
    c = r.config
    bits = [r.technique]
    if r.technique in ("rlhf", "rlaif", "rlvr"):
        bits.append(f"KL {c.get('kl_coef', 0):g}")
        if c.get("negative_weight", 1.0) != 1.0:
            bits.append(f"neg {c['negative_weight']:g}")
        if c.get("reward_level") == "step":
            bits.append("step rewards")
        who = c.get("judge") or c.get("reward_model")
        if who:
            name = str(who).rstrip("/").rsplit("/", 1)[-1]
            name = name if len(name) <= 20 else f"{name[:6]}..{name[-8:]}"
            bits.append(("judge " if c.get("judge") else "RM ") + name)
    if r.technique == "dpo":
        bits.append(f"beta {c.get('beta', 0):g}")
        if c.get("sft_weight"):
            bits.append(f"+NLL {c['sft_weight']:g}")
    lr = c.get("lr") or r.metrics.get("lr")
    if lr is not None:
        bits.append(f"lr {lr:g}")
    return ", ".join(bits)


def _setup() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    fig.clf()
    return out


def plot_rl(runs_dir: str | Path, out: str | Path) -> Path:
    """Held-out greedy accuracy against the stage's FLOPs; the parent's starting point is each
    line's first point (FLOPs 0, drawn at the left end of a symmetric-log axis)."""
    plt = _setup()
    df = rl_table(runs_dir)
    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    labels = sorted(df.label.unique())
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    for i, lab in enumerate(labels):
        for _, s in df[df.label == lab].groupby("run_id"):
            s = s.sort_values("flops")
            ax.plot(s.flops, s.greedy_accuracy, marker="o", ms=3, lw=1.2, color=cmap(i), label=lab)
    pos = df.flops[df.flops > 0]
    lin = float(pos.min()) / 10 if len(pos) else 1.0
    ax.set_xscale("symlog", linthresh=lin)
    ax.set_xlim(-0.3 * lin, float(df.flops.max()) * 2)
    ax.set(xlabel="post-training FLOPs of the stage (exact)", ylabel="greedy accuracy, held-out validation",
           title="accuracy against RL / preference-optimisation FLOPs")
    ax.grid(alpha=0.3)
    handles, seen = [], set()
    for h, lab in zip(*ax.get_legend_handles_labels()):
        if lab not in seen:
            seen.add(lab)
            handles.append((h, lab))
    ax.legend([h for h, _ in handles], [lab for _, lab in handles], fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, out)


def plot_overoptimisation(runs_dir: str | Path, out: str | Path) -> Path:
    """rlhf runs against the stage's FLOPs: the proxy reward (the reward model's mean score of the
    greedy answers), the verifier's accuracy of the same answers, and the KL estimate of the step's
    samples; one colour per kl_coef. (Against KL itself, as Gao et al. plot it, a per-batch estimate
    of a few tenths of a nat zig-zags; FLOPs order the points.)"""
    plt = _setup()
    df = rl_table(runs_dir)
    df = df[df.technique == "rlhf"].dropna(subset=["kl"])
    if df.empty:
        raise InputError(f"{runs_dir}: no rlhf records with a curve (make them with `scalelab posttrain rlhf`)")
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.2))
    kls = sorted(df.kl_coef.unique())
    cmap = plt.get_cmap("viridis")
    styles = ["-", "--", ":", "-."]
    for i, k in enumerate(kls):
        col = cmap(0.85 * i / max(1, len(kls) - 1))
        for j, (_, s) in enumerate(df[df.kl_coef == k].groupby("run_id")):
            s = s.sort_values("flops")
            lab = s.label.iloc[0].replace("rlhf, ", "")
            for ax, y in ((axes[0], s.greedy_reward), (axes[1], s.greedy_accuracy), (axes[2], s.kl)):
                ax.plot(s.flops, y, marker="o", ms=3, color=col, ls=styles[j % len(styles)], label=lab)
    titles = (("reward model score (proxy)", "proxy reward of the greedy answers"),
              ("verifier accuracy (gold)", "what the verifier says of the same answers"),
              ("KL(policy || reference), nats", "distance from the reference"))
    for ax, (ylab, title) in zip(axes, titles):
        ax.set(xlabel="post-training FLOPs of the stage", ylabel=ylab, title=title)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("symlog", linthresh=0.1)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)
