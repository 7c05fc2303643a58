"""A post-training law for one technique: accuracy against post-training compute, fitted on the
smaller budgets and checked on the largest (ScaleRL's protocol: fit early, extrapolate, compare;
Khatri et al. 2025).

    fit_posttrain_law("runs", "sft")                 # a runs folder: one child run per budget
    fit_posttrain_law("curves.csv", "rlvr", x="steps")   # any table with technique, x, accuracy

The points are the technique's children of one parent, one per budget (examples, steps, samples;
`x="flops"` puts them on this stage's own FLOPs), or, for an RL-family run with a curve, the
held-out greedy accuracy at each point of the curve. R0, the accuracy before post-training, is the
parent's accuracy on the same problems when the table has it (or the curve's first point), else it
is fitted. Both forms are fitted (`scalelab.laws.posttrain`): the ScaleRL sigmoid and the
saturating power law; `law` names the one used for the technique (RL family: scalerl; the others:
the power law, as fine-tuning curves are usually drawn), and both extrapolation errors are kept so
that the forms can be compared. The result is strict JSON (no NaN: null).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalelab.errors import InputError
from scalelab.laws.base import _jsonable
from scalelab.laws.posttrain import PosttrainPowerLaw, ScaleRLLaw

RL_FAMILY = ("rlvr", "rlhf", "rlaif", "rft", "dpo", "grpo", "rloo")
X_COLUMNS = {"flops": ("stage_flops", "posttrain_flops", "flops", "C"), "examples": ("train_examples", "examples"),
             "steps": ("train_steps", "steps"), "samples": ("samples", "train_samples")}
Y_COLUMNS = ("accuracy", "metrics.accuracy", "greedy_accuracy")
LAWS = {"scalerl": ScaleRLLaw, "posttrain-power": PosttrainPowerLaw}


def default_law(technique: str) -> str:
    return "scalerl" if technique.split("-")[0] in RL_FAMILY else "posttrain-power"


def posttrain_points(table: str | Path | pd.DataFrame, technique: str, *, x: str = "flops",
                     parent: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(points with columns x, accuracy, run_id; facts: variants, parent, x column, R0 and its source)."""
    frame, curves = _frame(table)
    rows = _technique_rows(frame, technique)
    facts: dict[str, Any] = {"technique": technique, "x": x}
    if "parent_id" in rows.columns and rows["parent_id"].nunique() > 1:
        if parent is None:
            raise InputError(f"technique {technique!r} has children of {rows['parent_id'].nunique()} parents "
                             f"({', '.join(sorted(map(str, rows['parent_id'].unique()))[:6])}); choose one with --parent")
        rows = rows[rows["parent_id"] == parent]
    xcol = next((c for c in X_COLUMNS.get(x, (x,)) if c in rows.columns and rows[c].notna().any()), None)
    ycol = next((c for c in Y_COLUMNS if c in rows.columns), None)
    enough = xcol is not None and ycol is not None and rows[xcol].nunique() >= 3
    if not enough and curves is not None and x == "flops":
        return _curve_points(curves, technique, parent, facts)
    if xcol is None or ycol is None:
        raise InputError(f"no {x} column ({' or '.join(X_COLUMNS.get(x, (x,)))}) and accuracy for technique "
                         f"{technique!r}; columns: {', '.join(map(str, frame.columns[:25]))}")
    pts = pd.DataFrame({"x": pd.to_numeric(rows[xcol], errors="coerce"),
                        "accuracy": pd.to_numeric(rows[ycol], errors="coerce"),
                        "run_id": rows["run_id"] if "run_id" in rows.columns else range(1, len(rows) + 1)})
    facts.update(x_column=xcol, variants=sorted(map(str, rows["technique"].unique())) if "technique" in rows else [],
                 parent_id=str(rows["parent_id"].iloc[0]) if "parent_id" in rows.columns and len(rows) else None)
    r0 = rows["parent_accuracy"].dropna() if "parent_accuracy" in rows.columns else pd.Series([], dtype=float)
    r0v = float(r0.iloc[0]) if r0.nunique() == 1 else float(r0.mean())  # one parent: one value, kept exact
    facts["R0"], facts["R0_from"] = (r0v, "the parent's accuracy") if len(r0) else (None, "fitted")
    return _clean(pts, facts)


def fit_posttrain_law(table: str | Path | pd.DataFrame, technique: str, *, x: str = "flops", law: str = "auto",
                      parent: str | None = None, bootstrap: int = 200, seed: int = 0) -> dict[str, Any]:
    """Fit both forms on all points and on all but the largest budget; the summary the report,
    the planner and `scalelab posttrain fit --json` read (module docstring)."""
    chosen = default_law(technique) if law == "auto" else law
    if chosen not in LAWS:
        raise InputError(f"--law {law!r}: choose one of auto, {', '.join(LAWS)}")
    pts, facts = posttrain_points(table, technique, x=x, parent=parent)
    X, y = pts["x"].to_numpy(float), pts["accuracy"].to_numpy(float)
    budgets = np.unique(X)
    if budgets.size < 3:
        raise InputError(f"technique {technique!r}: {budgets.size} distinct {x} budgets; a post-training law needs 3 or more")
    notices = facts.pop("notices", [])
    out: dict[str, Any] = {**facts, "law": chosen, "n_points": int(X.size), "points": pts.to_dict(orient="records"),
                           "laws": {}, "notices": notices}
    held = budgets[-1]
    train = X < held
    for name, cls in LAWS.items():
        est = _make(cls, facts["R0"], bootstrap, seed).fit(X, y)
        entry: dict[str, Any] = {"params": est.params_, "ci95": est.ci_, "converged": est.converged_,
                                 "message": str(est.result_.message),
                                 "rmse": float(np.sqrt(np.mean((est.predict(X) - y) ** 2)))}
        if np.unique(X[train]).size >= 3:
            early = _make(cls, facts["R0"], 0, seed).fit(X[train], y[train])
            pred, actual = float(early.predict([held])[0]), float(y[~train].mean())
            entry["extrapolation"] = {"fit_budgets": int(np.unique(X[train]).size), "held_out_x": float(held),
                                      "actual": actual, "predicted": pred, "error": pred - actual,
                                      "params": early.params_, "converged": early.converged_}
        else:
            entry["extrapolation"] = None
        out["laws"][name] = entry
    main = out["laws"][chosen]
    ext = main["extrapolation"]
    if ext is None:
        out["notices"].append(f"only {budgets.size} budgets: no budget left to check an extrapolation on (needs 4)")
    p = main["params"]
    out.update(asymptote=p["A"], efficiency=p.get("B", p.get("gamma")), C_mid=p.get("C_mid"),
               extrapolation_error=None if ext is None else abs(ext["error"]))
    return _jsonable(out)


def _make(cls: Any, R0: float | None, bootstrap: int, seed: int) -> Any:
    return cls(R0=R0, bootstrap=bootstrap, seed=seed) if cls is ScaleRLLaw else cls(bootstrap=bootstrap, seed=seed)


# ---- reading the points -------------------------------------------------------------------------------
def _frame(table: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, list[Any] | None]:
    """(the table; the records, when a runs folder, for RL curves)."""
    if isinstance(table, pd.DataFrame):
        return table, None
    from scalelab.tables import load_runs, load_table, posttrain_table

    p = Path(str(table))
    if p.is_dir() and any(p.rglob("record.json")):
        recs = [r for r in load_runs(p).records if r.phase == "posttrain"]
        try:
            return posttrain_table(p).query("difficulty == 'mean'"), recs
        except InputError:
            return pd.DataFrame({"technique": [r.technique for r in recs]}), recs
    return load_table(table).frame, None


def _technique_rows(frame: pd.DataFrame, technique: str) -> pd.DataFrame:
    if "technique" not in frame.columns:
        return frame  # a table of one technique's points
    t = frame["technique"].astype(str)
    rows = frame[t == technique]
    if rows.empty:
        rows = frame[t.str.startswith(technique + "-")]
    if rows.empty:
        raise InputError(f"no rows of technique {technique!r}; techniques here: {', '.join(sorted(t.unique()))}")
    return rows


def _curve_points(records: list[Any], technique: str, parent: str | None,
                  facts: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The curve of one RL-family run: held-out greedy accuracy against this stage's FLOPs."""
    runs = [r for r in records if (r.technique == technique or r.technique.startswith(technique + "-"))
            and r.metrics.get("curve") and (parent is None or r.parent_id == parent)]
    if len(runs) != 1:
        raise InputError(f"technique {technique!r}: fewer than 3 budgets, and {len(runs)} runs with a curve "
                         "(a law needs 3 budgets, or one run's curve)" + ("; choose one with --parent" if runs else ""))
    r = runs[0]
    c = pd.DataFrame(r.metrics["curve"])
    if "greedy_accuracy" not in c.columns:
        raise InputError(f"run {r.run_id}: its curve has no greedy_accuracy")
    pts = pd.DataFrame({"x": c["posttrain_flops"].astype(float), "accuracy": c["greedy_accuracy"].astype(float),
                        "run_id": r.run_id})
    start = pts[pts["x"] <= 0]["accuracy"].dropna()
    facts.update(x_column="metrics.curve.posttrain_flops", variants=[r.technique], parent_id=r.parent_id)
    facts["R0"], facts["R0_from"] = (float(start.iloc[0]), "the curve's first point") if len(start) else (None, "fitted")
    return _clean(pts, facts)


def _clean(pts: pd.DataFrame, facts: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Points with x > 0 and a finite accuracy, sorted; what was left out is said."""
    ok = np.isfinite(pts["x"]) & (pts["x"] > 0) & np.isfinite(pts["accuracy"])
    notices = []
    if (~ok).any():
        notices.append(f"left out {int((~ok).sum())} point(s) at zero budget or without accuracy "
                       "(the start of a curve is R0, not a point of the fit)")
    facts["notices"] = notices
    out = pts[ok].sort_values("x").reset_index(drop=True)
    if facts.get("R0") is not None and not math.isfinite(facts["R0"]):
        facts["R0"], facts["R0_from"] = None, "fitted"
    return out, facts
