"""Two sections of the report that check the laws rather than show them: the pretraining fit's
backtest (refit without the largest budget, predict its runs) and the post-training laws
(accuracy against post-training FLOPs, fitted without the last point and checked there).

With them, the post-training section itself (`posttrain_section`). All are HTML fragments built from the run records alone, with the command that gives the same
numbers on the command line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from scalelab import tables
from scalelab.errors import ScalelabError
from scalelab.laws.select import AUTO_FRONTIER_WEIGHT
from scalelab.pipeline.htmlparts import fmt, note as _note, table as _table


# The pipeline's pretraining fits weight each run by (C/C_max)^P with `fit --law auto`'s P: they are
# read at 10x the largest budget, where the weights extrapolate better (docs/fitting.md, "Held-out
# extrapolation"), and a sweep's replicated small budgets do not outweigh its largest ones.
FRONTIER_WEIGHT = AUTO_FRONTIER_WEIGHT


def entropy_floor(recs: list[Any]) -> float | None:
    """The irreducible loss the runs state (the testbed's entropy floor), when they all state one."""
    return tables.entropy_floor(tables.records_to_frame(recs))


def own_backtest(recs: list[Any]) -> dict[str, Any]:
    """The Chinchilla fit, E held at the entropy floor where the runs know it (else fitted), runs
    weighted by FRONTIER_WEIGHT, refit on every budget but the largest and scored on the largest
    budget's runs: the law, the held-out
    budget, mean / max |relative error| and bias (fractions), or `error`."""
    from scalelab.laws.backtest import backtest
    from scalelab.tables import records_to_frame

    floor = entropy_floor(recs)
    law = "fixed-e" if floor is not None else "free"
    try:
        bt = backtest(records_to_frame(recs), [law], holdout="largest-compute", floor=floor,
                      frontier_weight=FRONTIER_WEIGHT)
    except ScalelabError as e:  # e.g. two budgets: nothing left to fit below the held-out one
        return {"law": law, "error": str(e)}
    row = bt["candidates"][0]
    return {"law": law, "holdout": "largest-compute", "floor": floor, "frontier_weight": FRONTIER_WEIGHT,
            **{k: row.get(k) for k in (
        "held_out", "mean_abs_err", "max_abs_err", "bias", "n_train", "n_test", "error")}}


def backtest_section(recs: list[Any]) -> str:
    """`own_backtest` as a table, with the command that gives the same numbers."""
    r = own_backtest(recs)
    law = r["law"]
    title = "<h3>Backtest: the fit predicting its own largest budget</h3>"
    if r.get("error"):
        return title + _note(f"not made: {r['error']}", "warn")
    rows = [[law, r.get("held_out", "-"), r.get("n_train", "-"), r.get("n_test", "-"),
             f"{100 * r['mean_abs_err']:.2f}%", f"{100 * r['max_abs_err']:.2f}%", f"{100 * r['bias']:+.2f}%"]]
    cmd = (f"scalelab backtest RUNS --law {law}" + (" --floor auto" if r["floor"] is not None else "")
           + f" --frontier-weight {FRONTIER_WEIGHT:g}")
    return "\n".join([title, _note("Every budget but the largest is fitted; the largest budget's runs are then "
                                   f"predicted and compared with their measured loss ({cmd})."),
                      _table(["law", "held out", "runs fitted", "runs predicted", "mean |error|", "max |error|",
                              "bias"], rows)])


def posttrain_section(root: Path, recs: list[Any], figs: Any) -> str:
    """The children: accuracy against post-training FLOPs (figure) and one row per child run."""
    from scalelab.posttrain.plots import plot_posttrain

    out = [figs.img_or_note(lambda p: plot_posttrain(root, p), "post-training accuracy against FLOPs")]
    rows = [[r.run_id, r.technique, r.parent_id or "-", fmt(r.metrics["accuracy"]),
             fmt(r.metrics.get("parent_accuracy")), fmt(float(r.flops.get("posttrain", 0.0))),
             fmt(r.flops.get("pretrain"))]
            for r in sorted(recs, key=lambda r: (r.technique, r.flops.get("posttrain", 0.0), r.run_id))]
    out.append(_table(["child run", "technique", "parent", "accuracy", "parent accuracy", "post-training FLOPs",
                       "pretraining FLOPs"], rows))
    return "\n".join(out)


def posttrain_laws_section(root: Path, recs: list[Any], *, bootstrap: int = 100) -> str:
    """One law per technique that has a curve (or three or more budgets) among the child runs."""
    from scalelab.laws.posttrain_fit import fit_posttrain_law

    rows, skipped = [], []
    for tech in sorted({r.technique for r in recs}):
        try:
            f = fit_posttrain_law(root, tech, bootstrap=bootstrap)
        except ScalelabError as e:
            skipped.append(f"{tech}: {e}")
            continue
        ext = f["laws"][f["law"]]["extrapolation"]
        other = {k: v["extrapolation"] for k, v in f["laws"].items() if k != f["law"]}
        oth = "; ".join(f"{k} {fmt(abs(v['error']))}" for k, v in other.items() if v) or "-"
        rows.append([tech, f["law"], f["n_points"], fmt(f.get("R0")), fmt(f["asymptote"]), fmt(f["efficiency"]),
                     fmt(f.get("C_mid")),
                     f"{fmt(ext['predicted'])} vs {fmt(ext['actual'])}" if ext else "- (too few points)",
                     fmt(f["extrapolation_error"]), oth])
    out = ["<h3>Post-training laws: accuracy against post-training FLOPs</h3>"]
    if rows:
        out += [_note("Each technique's held-out greedy accuracy along its run (or across its runs) against the "
                      "stage's FLOPs, fitted with the ScaleRL form R(C) = R0 + (A - R0) / (1 + (C_mid / C)^B) for RL "
                      "and with the saturating power law acc(C) = A - K C^-gamma for the others; A is the "
                      "asymptote, the efficiency B or gamma. The last point is left out, predicted, and compared "
                      "(scalelab posttrain fit RUNS --technique T)."),
                _table(["technique", "law", "points", "R0", "asymptote A", "efficiency", "C_mid",
                        "last point: predicted vs measured", "|error|", "other form's |error|"], rows)]
    out += [_note(f"no law: {s}") for s in skipped]
    return "\n".join(out)
