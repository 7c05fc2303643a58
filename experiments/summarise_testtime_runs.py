"""A markdown table of test-time records: accuracy [95% interval] per model, task, strategy and n,
pooled over the difficulty bins (mean of the bins' accuracies), with FLOPs per question.

    python experiments/summarise_testtime_runs.py user/runs [--n 1,16]
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from scalelab.tables import load_runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--n", default="1,4,16")
    a = ap.parse_args()
    keep = {int(x) for x in a.n.split(",")}
    cells: dict[tuple, list] = defaultdict(list)
    for r in load_runs(a.runs).records:
        m = r.metrics
        if r.phase != "testtime" or m.get("n") not in keep:
            continue
        cells[(r.parent_id, r.task, r.technique, m["n"])].append(m)
    print("| model | task | strategy | n | accuracy (mean of bins) | per bin | FLOPs/question |")
    print("|---|---|---|---:|---:|---|---:|")
    for (model, task, strat, n), ms in sorted(cells.items()):
        ms = sorted(ms, key=lambda m: str(m["difficulty"]))
        acc = np.mean([m["accuracy"] for m in ms])
        bins = " ".join(f"{m['accuracy']:.2f}" for m in ms)
        flops = np.mean([m["flops_per_question"] for m in ms])
        print(f"| {model} | {task} | {strat} | {n} | {acc:.3f} | {bins} | {flops:.3g} |")


if __name__ == "__main__":
    main()
