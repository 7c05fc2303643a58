"""Loss -> downstream accuracy in two steps, reproduced on the OLMo ladder (Bhagia et al. 2024).

    OMP_NUM_THREADS=1 python benchmarks/bench_fit_downstream.py [--rungs 190M,370M,760M,1B,3B] [--frontier-weight P]

Step 1 fits each task's loss (bits per byte of the correct answer, `eval/downstream_bpb/..._rc_5shot_bpb`)
as a Chinchilla law of (N, D) on the ladder's final checkpoints (the mean of the last 5
evaluations, as the paper's `--moving_avg 5`); step 2 fits accuracy (`..._rc_5shot_len_norm`,
BoolQ `..._acc`) as a sigmoid of that loss on every checkpoint of the same runs. The 7B (3.9T
tokens, `peteish7_eval_anneal`) and 13B (5T tokens, `peteish13_eval_final`) runs are predicted
from (N, D) alone. MMLU is the mean of its four test subsets. Errors are in accuracy points.

Variants: the paper's sigmoid (floor, scale, k, L0 all free); the floor held at the task's chance
accuracy; floor at chance and ceiling at 1 (only k and L0 fitted); the last with step 1 tied
(alpha = beta). `step 2 only` feeds the measured task
loss of the target into step 2, to show which step misses. `step 1 weighted` fits step 1 with
each run's Huber term weighted by (C/C_max)^P (`--frontier-weight P`, default 1; the weights of
`fit --law auto`): the table shows it for "chance to 1", the summary for every variant, with
step 1's own error on the targets' task loss.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit_vpnls import OLMO_SIZES, OLMO_TARGETS, SHARED  # noqa: E402

from scalelab.laws.downstream import TwoStepLaw  # noqa: E402
from scalelab.laws.loghuber import frontier_weights  # noqa: E402

RUNS = SHARED / "olmo_ladder" / "ladder-runs"
MMLU = [f"mmlu_{s}_test" for s in ("stem", "humanities", "social_sciences", "other")]
# task -> (eval names averaged, accuracy metric, chance accuracy)
TASKS = {
    "ARC-Easy": (["arc_easy_test"], "len_norm", 0.25), "ARC-Challenge": (["arc_challenge_test"], "len_norm", 0.25),
    "HellaSwag": (["hellaswag_val"], "len_norm", 0.25), "MMLU": (MMLU, "len_norm", 0.25),
    "PIQA": (["piqa_val"], "len_norm", 0.5), "CSQA": (["csqa_val"], "len_norm", 0.2),
    "SocialIQA": (["socialiqa_val"], "len_norm", 1 / 3), "Winogrande": (["winogrande_val"], "len_norm", 0.5),
    "OpenBookQA": (["openbookqa_test"], "len_norm", 0.25), "BoolQ": (["boolq_val"], "acc", 0.5),
}


def columns(task: str) -> tuple[list[str], list[str]]:
    names, metric, _ = TASKS[task]
    return ([f"eval/downstream_bpb/{n}_rc_5shot_bpb" for n in names],
            [f"eval/downstream/{n}_rc_5shot_{metric}" for n in names])


def task_frame(d: pd.DataFrame, task: str) -> pd.DataFrame:
    bpb, acc = columns(task)
    return pd.DataFrame({"loss": d[bpb].mean(axis=1), "acc": d[acc].mean(axis=1)})


def tokens(d: pd.DataFrame) -> float:
    if "throughput/total_tokens" in d:
        return float(d["throughput/total_tokens"].iloc[-1])
    return float(d["_step"].iloc[-1] * d["batch_size_in_tokens"].iloc[-1])


def load(rungs) -> tuple[list, dict]:
    runs = []
    for size in rungs:
        for m in (1, 2, 5, 10):
            d = pd.read_csv(RUNS / f"{size}-{m}xC.csv")
            runs.append((OLMO_SIZES[size], tokens(d), d))
    targets = {k: (n, tokens(pd.read_csv(RUNS / f)), pd.read_csv(RUNS / f)) for k, (n, f) in OLMO_TARGETS.items()}
    return runs, targets


VARIANTS = {"paper (4-parameter sigmoid)": "", "floor at chance": "chance",
            "chance to 1": "chance-1", "chance to 1, tied step 1": "chance-1-tied"}
WEIGHTED = "chance to 1"   # the variant whose weighted twin gets a column in the table


def fit_variant(how: str, chance: float, weight: float, X, tl, ck) -> TwoStepLaw:
    return TwoStepLaw(chance=chance if how else None, ceiling=1.0 if "-1" in how else None,
                      form="tied" if how.endswith("tied") else "free", frontier_weight=weight).fit(
        X, tl, ck["loss"].to_numpy(), ck["acc"].to_numpy())


def summary(label: str, e: list[float], unweighted: list[float] | None = None) -> str:
    """Mean |error| over the finite predictions (a degenerate step 1 can predict no finite loss);
    when some are left out, the unweighted variant's mean over the same predictions beside it."""
    e = np.abs(np.asarray(e, float))
    bad = int((~np.isfinite(e)).sum())
    note = ""
    if bad:
        same = np.abs(np.asarray(unweighted, float))[np.isfinite(e)]
        note = f"; {bad} not finite, left out of the means (unweighted on the same {len(same)}: {same.mean():.2f})"
    return (f"  {label}: {np.nanmean(e):.2f} ({int((e <= 2).sum())}/{len(e)} within 2); "
            f"7B {np.nanmean(e[0::2]):.2f}, 13B {np.nanmean(e[1::2]):.2f}{note}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rungs", default="190M,370M,760M,1B")
    ap.add_argument("--frontier-weight", type=float, default=1.0, help="P of the weighted step 1: (C/C_max)^P")
    args = ap.parse_args()
    P = args.frontier_weight
    runs, targets = load(args.rungs.split(","))
    keys = [(v, 0.0) for v in VARIANTS] + [(v, P) for v in VARIANTS]
    weights = frontier_weights(np.array([n * D for n, D, _ in runs]), P)
    ess = len(runs) if weights is None else weights.sum() ** 2 / (weights ** 2).sum()   # Kish's effective n
    print(f"rungs {args.rungs}: {len(runs)} runs; step 1 weighted by (C/C_max)^{P:g}: {ess:.1f} runs' worth of weight")
    print("| task | target | measured | " + " | ".join(VARIANTS) + f" | {WEIGHTED}, step 1 weighted (C/C_max)^{P:g} "
          "| step 2 only (chance to 1) |")
    print("|---|---|---:|" + "---:|" * (len(VARIANTS) + 2))
    errs = {key: [] for key in [*keys, "step2"]}
    loss_errs = {key: [] for key in keys}   # step 1: % error on the target's task loss
    scatter = {}                                # step 1's sd of log residuals, unweighted free fit
    for task, (_, _, chance) in TASKS.items():
        X = np.array([[n, D] for n, D, _ in runs])
        tl = np.array([task_frame(d, task)["loss"].tail(5).mean() for _, _, d in runs])
        ck = pd.concat([task_frame(d, task) for _, _, d in runs]).dropna()
        fits = {(v, w): fit_variant(VARIANTS[v], chance, w, X, tl, ck) for v, w in keys}
        scatter[task] = 100 * fits[("chance to 1", 0.0)].step1_.noise_["sigma_log"]
        for k, (n, D, d) in targets.items():
            t = task_frame(d, task).tail(5).mean()
            acc = {}
            for key, f in fits.items():
                with np.errstate(over="ignore", invalid="ignore"):   # a degenerate step 1 overflows
                    p = f.predict([[n, D]])
                acc[key] = float(p["accuracy"][0])
                errs[key].append(100 * (acc[key] - t.acc))
                loss_errs[key].append(100 * (float(p["task_loss"][0]) / t.loss - 1))
            cells = [f"{100 * acc[key]:.1f} ({100 * (acc[key] - t.acc):+.1f})"
                     for key in [(v, 0.0) for v in VARIANTS] + [(WEIGHTED, P)]]
            p2 = float(fits[("chance to 1", 0.0)].step2_.predict([t.loss])[0])
            errs["step2"].append(100 * (p2 - t.acc))
            print(f"| {task} | {k} | {100 * t.acc:.1f} | " + " | ".join(cells) + f" | {100 * p2:.1f} ({100 * (p2 - t.acc):+.1f}) |")
    print("\nmean |error| in points (and how many of the 20 predictions are within 2 points):")
    for v in VARIANTS:
        print(summary(v, errs[(v, 0.0)]))
        print(summary(f"{v}, step 1 weighted (C/C_max)^{P:g}", errs[(v, P)], errs[(v, 0.0)]))
    print(summary("step2", errs["step2"]))
    print(f"\nstep 1 alone, mean |error| on the targets' task loss in % (unweighted -> weighted (C/C_max)^{P:g}):")
    for form, v in (("free", "chance to 1"), ("tied", "chance to 1, tied step 1")):
        a, b = (np.abs(np.asarray(loss_errs[(v, w)])) for w in (0.0, P))
        ok = np.isfinite(b)
        note = "" if ok.all() else f" ({(~ok).sum()} not finite; unweighted on the same {ok.sum()}: {a[ok].mean():.2f})"
        print(f"  {form}: {a.mean():.2f} -> {b[ok].mean():.2f}{note}")
    print(f"step 1's scatter around its unweighted free fit (sd of log residuals, {len(runs) - 5} dof), in %: "
          + ", ".join(f"{t} {v:.2f}" for t, v in scatter.items()))


if __name__ == "__main__":
    main()
