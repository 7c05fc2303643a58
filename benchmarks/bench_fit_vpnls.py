"""Benchmark: variable projection (VPNLS) against multi-start L-BFGS on every published data set.

    OMP_NUM_THREADS=1 python benchmarks/bench_fit_vpnls.py [--resamples 20] [--forms free,tied]

For each data set in ../shared/data (and the bundled testbed sweep) and each Chinchilla form:

* optimum: the Huber objective each method reaches on all runs (`ChinchillaLaw(method=...)`),
  and the largest relative difference of the five parameters between the two;
* stability: `--resamples` bootstrap resamples of the runs refitted from scratch by both methods:
  the spread (standard deviation) of alpha and beta, and how often each method ends above the
  other's objective by more than 1e-6 relative (a missed optimum);
* speed: wall seconds of one fit on all runs, and per resample.

The data-set loaders are shared with benchmarks/bench_fit_backtest.py.
"""
from __future__ import annotations

import argparse
import ast
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.laws import ChinchillaLaw

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCALELAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
OLMO_SIZES = {"190M": 190354176, "370M": 371262464, "760M": 758220288, "1B": 1279395840, "3B": 3169537280}
OLMO_TARGETS = {"7B": (6887575552, "peteish7_eval_anneal.csv"), "13B": (13202396160, "peteish13_eval_final.csv")}
C4 = "eval/c4_en-validation/CrossEntropyLoss"


def epoch240() -> pd.DataFrame:
    """Besiroglu et al. 2024: D = C/(6N), the five highest losses dropped."""
    d = pd.read_csv(SHARED / "svg_extracted_data.csv").nsmallest(240, "loss", keep="first")
    N, C = d["Model Size"].to_numpy(), d["Training FLOP"].to_numpy()
    return pd.DataFrame({"N": N, "D": C / (6 * N), "C": C, "loss": d["loss"].to_numpy()})


def olmo_run(file: str, n: int) -> dict:
    r = pd.read_csv(SHARED / "olmo_ladder" / "ladder-runs" / file).tail(5)
    D = float(r["throughput/total_tokens"].iloc[-1]) if "throughput/total_tokens" in r else \
        float(r["_step"].iloc[-1] * r["batch_size_in_tokens"].iloc[-1])
    return {"run": file.removesuffix(".csv"), "N": n, "D": D, "C": 6 * n * D, "loss": float(r[C4].mean())}


def olmo(sizes=("190M", "370M", "760M", "1B", "3B")) -> pd.DataFrame:
    return pd.DataFrame([olmo_run(f"{s}-{m}xC.csv", OLMO_SIZES[s]) for s in sizes for m in (1, 2, 5, 10)])


def olmo_targets() -> pd.DataFrame:
    return pd.DataFrame([olmo_run(f, n) | {"run": k} for k, (n, f) in OLMO_TARGETS.items()])


def datablations(single_epoch: bool = False) -> pd.DataFrame:
    m = pd.read_csv(SHARED / "colpret" / "datablations_contour_losses.csv")
    out = pd.DataFrame({"N": m.num_params, "D": m.token_num, "C": 6 * m.num_params * m.token_num,
                        "U": m.token_num / m.epochs, "loss": m.openLM_loss, "epochs": m.epochs,
                        "run": m.model_args.map(lambda s: ast.literal_eval(s)["name"])})
    return out[out.epochs == 1].reset_index(drop=True) if single_epoch else out


def testbed() -> pd.DataFrame:
    return pd.read_csv(ROOT / "scalelab" / "data" / "testbed_sweep.csv")


def testbed_facts() -> pd.DataFrame:
    return pd.read_csv(ROOT / "scalelab" / "data" / "testbed_facts_sweep.csv")


DATASETS = {
    "epoch240": epoch240,
    "olmo 190M-3B": olmo,
    "olmo 190M-1B": lambda: olmo(("190M", "370M", "760M", "1B")),
    "datablations 1 epoch": lambda: datablations(True),
    "testbed sweep": testbed,
}


def fit(df: pd.DataFrame, form: str, method: str) -> tuple[ChinchillaLaw, float]:
    t = time.perf_counter()
    law = ChinchillaLaw(form=form, method=method, bootstrap=0, n_jobs=1).fit(df[["N", "D"]].to_numpy(float),
                                                                            df["loss"].to_numpy(float))
    return law, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resamples", type=int, default=20)
    ap.add_argument("--forms", default="free,tied")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.resamples} resamples per data set")
    print("| data set | form | objective L-BFGS | objective VPNLS | max param diff | s L-BFGS | s VPNLS "
          "| sd alpha L-BFGS / VPNLS | sd beta L-BFGS / VPNLS | missed optimum L-BFGS / VPNLS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for name, load in DATASETS.items():
        df = load()
        draws = [rng.integers(0, len(df), len(df)) for _ in range(args.resamples)]
        for form in args.forms.split(","):
            (lb, t_lb), (vp, t_vp) = fit(df, form, "lbfgs"), fit(df, form, "vpnls")
            diff = max(abs(vp.params_[k] / lb.params_[k] - 1) for k in lb.params_)
            res = {"lbfgs": [], "vpnls": []}
            times = {"lbfgs": 0.0, "vpnls": 0.0}
            for idx in draws:
                sub = df.iloc[idx]
                for m in res:
                    law, t = fit(sub, form, m)
                    res[m].append((law.result_.fun, law.params_["alpha"], law.params_["beta"]))
                    times[m] += t
            f = {m: np.array(v) for m, v in res.items()}
            missed = {m: int(np.sum(f[m][:, 0] > f[o][:, 0] * (1 + 1e-6)))
                      for m, o in (("lbfgs", "vpnls"), ("vpnls", "lbfgs"))}
            print(f"| {name} | {form} | {lb.result_.fun:.10g} | {vp.result_.fun:.10g} | {diff:.1e} | {t_lb:.2f} "
                  f"| {t_vp:.2f} | {f['lbfgs'][:, 1].std():.4f} / {f['vpnls'][:, 1].std():.4f} "
                  f"| {f['lbfgs'][:, 2].std():.4f} / {f['vpnls'][:, 2].std():.4f} "
                  f"| {missed['lbfgs']} / {missed['vpnls']} of {len(draws)} |", flush=True)
            if lb.converged_ is False or vp.converged_ is False:
                print(f"  (converged: L-BFGS {lb.converged_}, VPNLS {vp.converged_})")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
