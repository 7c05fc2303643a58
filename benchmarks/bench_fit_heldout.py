"""Held-out extrapolation as the acceptance measures it, simulated on the published data sets.

    OMP_NUM_THREADS=1 python benchmarks/bench_fit_heldout.py [--frontier-weight P]

Each case fits a table cut below a frontier and predicts the runs beyond it, which the fit never
sees: Epoch's points fitted up to 3e19, 9e19, 3e20 and 1e21 FLOPs and predicted at the next
2-3.5x of compute (the IsoFLOP case); the OLMo ladder fitted up to 760M or 1B parameters and
predicted at the larger rungs, and up to 1B predicting the 7B and 13B runs (the over-training
ladder case); Muennighoff et al.'s single-epoch runs cut at 1e20, 3e20 and 1e21; the testbed
sweep cut at 2e12; the testbed's fact band fitted up to 2e12 and predicted at 2e13. For each: what
`--law auto` (backtests on the cut table, `--holdout both`, with the fixed-E form among the
candidates where the table records one entropy floor, as the command line offers it) chose, and
the mean / max |relative error| on the held-out runs of auto and of every form.
Every fit weights its runs as `--law auto` does (`select.AUTO_FRONTIER_WEIGHT`) unless
`--frontier-weight` says otherwise (0: unweighted, the method before frontier weights).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit_vpnls import OLMO_SIZES, datablations, epoch240, olmo, olmo_targets, testbed, testbed_facts  # noqa: E402

from scalelab.laws.backtest import Runs, backtest, candidate  # noqa: E402
from scalelab.laws.select import AUTO_FRONTIER_WEIGHT  # noqa: E402
from scalelab.tables import entropy_floor  # noqa: E402

FORMS = ["free", "tied", "fixed-e", "kaplan"]


def predictions(form, train, test, fw):
    cand = candidate(form)
    kw = {"method": "vpnls"} if cand.law == "chinchilla" else {}
    if form == "fixed-e":
        kw["E_fixed"] = entropy_floor(train)
    law = cand.make(bootstrap=0, frontier_weight=fw, **kw)
    law.fit(train[list(cand.columns)].to_numpy(float), train["loss"].to_numpy(float))
    with np.errstate(all="ignore"):
        return law.predict(test[list(cand.columns)].to_numpy(float))


def errors(pred, test):
    e = pred / test["loss"].to_numpy(float) - 1
    return 100 * np.mean(np.abs(e)), 100 * np.max(np.abs(e))


def case_result(train, test, fw):
    """What `--law auto` chose on the cut table, and every form's predictions of the held-out runs
    (fixed-E only where the table records its floor)."""
    floor = entropy_floor(train)
    forms = [f for f in FORMS if f != "fixed-e" or floor is not None]
    bt = backtest(Runs(train[["N", "D", "C", "loss"]]), forms, holdout="both", frontier_weight=fw, floor=floor)
    return bt["best"], {f: predictions(f, train, test, fw) for f in forms}


def cases():
    e = epoch240()
    for cut, hi in ((3e19, 1e20), (9e19, 3e20), (3e20, 1e21), (1e21, 3.5e21)):
        yield f"Epoch, C ≤ {cut:.0e} → ({cut:.0e}, {hi:.0e}]", e[e.C <= cut], e[(e.C > cut) & (e.C <= hi)]
    o = olmo()
    for top in ("760M", "1B"):
        keep = [OLMO_SIZES[s] for s in ("190M", "370M", "760M", "1B")[: 3 if top == "760M" else 4]]
        yield f"OLMo ladder ≤ {top} → larger rungs", o[o.N.isin(keep)], o[~o.N.isin(keep)]
    small = o[o.N <= OLMO_SIZES["1B"]]
    yield "OLMo ladder ≤ 1B → 7B, 13B", small, olmo_targets()
    yield "OLMo ladder ≤ 3B → 7B, 13B", o, olmo_targets()
    d = datablations(True)
    for cut in (1e20, 3e20, 1e21):
        yield f"datablations 1 epoch, C ≤ {cut:.0e} → next 3.5x", d[d.C <= cut], d[(d.C > cut) & (d.C <= 3.5 * cut)]
    t = testbed()
    yield "testbed sweep, C ≤ 2e12 → 6e12", t[t.C <= 2.1e12], t[t.C > 2.1e12]
    f = testbed_facts()
    yield "testbed fact band, C ≤ 2e12 → 2e13", f[f.C <= 2.1e12], f[f.C > 2.1e12]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frontier-weight", type=float, default=AUTO_FRONTIER_WEIGHT)
    fw = ap.parse_args().frontier_weight
    warnings.simplefilter("ignore")
    print(f"frontier weight {fw:g}: runs weighted by (C/C_max)^{fw:g}\n")
    print("| case | held-out runs | auto chose | auto mean / max % | " + " | ".join(f"{f} mean / max %" for f in FORMS) + " |")
    print("|---|---:|---|---:|" + "---:|" * len(FORMS))
    autos = []
    for name, train, test in cases():
        train, test = train.reset_index(drop=True), test.reset_index(drop=True)
        best, preds = case_result(train, test, fw)
        errs = {f: errors(p, test) for f, p in preds.items()}
        autos.append(errs[best])
        cell = lambda v: f"{v[0]:.2f} / {v[1]:.2f}" if v else "-"  # noqa: E731
        print(f"| {name} | {len(test)} | {best} | {cell(errs[best])} | "
              + " | ".join(cell(errs.get(f)) for f in FORMS) + " |", flush=True)
    a = np.array(autos)
    print(f"\n--law auto over {len(a)} cases: mean of the mean |errors| {a[:, 0].mean():.2f}%, "
          f"cases with a mean |error| above 2%: {int((a[:, 0] > 2).sum())}, "
          f"with a max |error| above 2%: {int((a[:, 1] > 2).sum())}")


if __name__ == "__main__":
    main()
