"""Loss -> downstream accuracy in two steps, reproduced on the OLMo ladder (Bhagia et al. 2024).

    OMP_NUM_THREADS=1 python benchmarks/bench_fit_downstream.py [--rungs 190M,370M,760M,1B] [--with-3b]

Step 1 fits each task's loss (bits per byte of the correct answer, `eval/downstream_bpb/..._rc_5shot_bpb`)
as a Chinchilla law of (N, D) on the ladder's final checkpoints (the mean of the last 5
evaluations, as the paper's `--moving_avg 5`); step 2 fits accuracy (`..._rc_5shot_len_norm`,
BoolQ `..._acc`) as a sigmoid of that loss on every checkpoint of the same runs. The 7B (3.9T
tokens, `peteish7_eval_anneal`) and 13B (5T tokens, `peteish13_eval_final`) runs are predicted
from (N, D) alone. MMLU is the mean of its four test subsets. Errors are in accuracy points.

Variants: the paper's sigmoid (floor, scale, k, L0 all free); the floor held at the task's chance
accuracy; floor at chance and ceiling at 1 (only k and L0 fitted); the last with step 1 tied
(alpha = beta). `step 2 only` feeds the measured task
loss of the target into step 2, to show which step misses.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rungs", default="190M,370M,760M,1B")
    args = ap.parse_args()
    runs, targets = load(args.rungs.split(","))
    variants = {"paper (4-parameter sigmoid)": "", "floor at chance": "chance",
                "chance to 1": "chance-1", "chance to 1, tied step 1": "chance-1-tied"}
    print(f"rungs {args.rungs}: {len(runs)} runs")
    print("| task | target | measured | " + " | ".join(variants) + " | step 2 only (chance to 1) |")
    print("|---|---|---:|" + "---:|" * (len(variants) + 1))
    errs = {v: [] for v in [*variants, "step2"]}
    for task, (_, _, chance) in TASKS.items():
        X = np.array([[n, D] for n, D, _ in runs])
        tl = np.array([task_frame(d, task)["loss"].tail(5).mean() for _, _, d in runs])
        ck = pd.concat([task_frame(d, task) for _, _, d in runs]).dropna()
        fits = {}
        for v, how in variants.items():
            fits[v] = TwoStepLaw(chance=chance if how else None, ceiling=1.0 if "-1" in how else None,
                                 form="tied" if how.endswith("tied") else "free").fit(
                X, tl, ck["loss"].to_numpy(), ck["acc"].to_numpy())
        for k, (n, D, d) in targets.items():
            t = task_frame(d, task).tail(5).mean()
            cells = []
            for v, f in fits.items():
                p = float(f.predict([[n, D]])["accuracy"][0])
                errs[v].append(100 * (p - t.acc))
                cells.append(f"{100 * p:.1f} ({100 * (p - t.acc):+.1f})")
            p2 = float(fits["chance to 1"].step2_.predict([t.loss])[0])
            errs["step2"].append(100 * (p2 - t.acc))
            print(f"| {task} | {k} | {100 * t.acc:.1f} | " + " | ".join(cells) + f" | {100 * p2:.1f} ({100 * (p2 - t.acc):+.1f}) |")
    print("\nmean |error| in points (and how many of the 20 predictions are within 2 points):")
    for v, e in errs.items():
        e = np.abs(e)
        print(f"  {v}: {e.mean():.2f} ({int((e <= 2).sum())}/{len(e)} within 2); 7B {e[0::2].mean():.2f}, 13B {e[1::2].mean():.2f}")


if __name__ == "__main__":
    main()
