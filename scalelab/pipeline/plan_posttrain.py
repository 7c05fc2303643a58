"""The planner's post-training options: each recipe as measured on the ladder and, where the fits
folder holds a post-training law for the technique, the same recipe at other post-training budgets.

    laws, skipped = read_laws(found)          # {technique: law document}, from the fits folder
    options, notes = recipes(exchange, laws)  # [Recipe(name, multiplier, share, law)], what was not used

A measured recipe is one point: its children's median pretraining multiplier (the FLOPs of
pretraining its accuracy gain is worth on the ladder, `scalelab.laws.exchange_tables`) and
median cost as a share of the parent's pretraining FLOPs. A post-training law
(`scalelab.laws.posttrain_fit`, written by `scalelab posttrain fit RUNS --technique T --out
FITS/posttrain-T.json`) says how accuracy moves with the stage's own FLOPs x along one child's
curve (or across children of one parent). With one, the technique's options become its anchor
child (the law's largest-budget child with a measured multiplier) at k times its stage FLOPs x_ref,
k on a half-octave grid through 1, from the law's smallest measured budget up to
`MAX_OVER_LARGEST` (4) times its largest: never further out than that. At k the child is predicted
to gain delta(k) = law(k x_ref) - law(x_ref) over its measured accuracy, and the multiplier is read
off the ladder exactly as the measured one was (`LadderCurve.equivalent_compute`, anchored at the
parent: k = 1 gives back the measured multiplier, which is checked); the cost share grows by
(k - 1) x_ref / parent pretraining FLOPs. A budget whose predicted accuracy leaves the ladder's
range is dropped (the ladder cannot price it; the exchange drops such children too).

Assumptions, said in the plan: the law was fitted on one parent on the testbed, its accuracy (the
curve's held-out problems) moves as the evaluation's does, and the multiplier carries over to the
plan's model size as the measured one is assumed to. A law is used only if it was fitted against
FLOPs, converged, was checked on a held-out budget (its extrapolation error is shown) and agrees
with the evaluation on whether the stage helped (its curve rising from R0 where the measured gain
is positive, falling where it is negative).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import InputError

MAX_OVER_LARGEST = 4.0          # budgets tried stop at 4x the law's largest measured budget
MAKE_LAW = "scalelab posttrain fit RUNS --technique {t} --out {dir}/posttrain-{t}.json"


@dataclass(frozen=True)
class Recipe:
    name: str                       # technique, or "none"
    multiplier: float               # pretraining FLOPs multiplier its accuracy is worth
    share: float                    # its cost, as a share of the pretraining FLOPs
    law: dict[str, Any] | None = None  # with a post-training law: the budget and what the law predicts


def is_law_doc(doc: dict[str, Any]) -> bool:
    """A document of `fit_posttrain_law` (`scalelab posttrain fit --out`)."""
    from scalelab.laws.posttrain_fit import LAWS

    return doc.get("law") in LAWS and isinstance(doc.get("technique"), str) and isinstance(doc.get("laws"), dict)


def read_laws(found: list[tuple[Path, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """{technique: law document, with its file name under "file"}; two laws of one technique is an error."""
    out: dict[str, dict[str, Any]] = {}
    for path, doc in found:
        t = doc["technique"]
        if t in out:
            raise InputError(f"{path.parent}: two post-training laws of technique {t!r} ({out[t]['file']}, "
                             f"{path.name}); keep one")
        out[t] = {**doc, "file": path.name}
    return out


def recipes(ex: dict[str, Any], laws: dict[str, dict[str, Any]]) -> tuple[list[Recipe], list[str]]:
    """The post-training options of a plan ("none" first) and a note per law that could not be used."""
    options, notes, used = [Recipe("none", 1.0, 0.0)], [], set()
    by_tech: dict[str, list[Recipe]] = {}
    for tech, doc in sorted(laws.items()):
        got = _law_options(ex, doc)
        if isinstance(got, str):
            notes.append(f"the post-training law in {doc['file']} ({tech}) was not used: {got}")
        else:
            by_tech.setdefault(got[0].name, []).extend(got)
            used.add(got[0].name)
    for tech, rows in ex["planner"].get("posttrain", {}).items():
        if tech in used:
            options += by_tech[tech]
            continue
        options.append(Recipe(tech, float(np.median([float(r["multiplier"]) for r in rows])),
                              float(np.median([float(r["posttrain_share"]) for r in rows]))))
    return options, notes


def _law_options(ex: dict[str, Any], doc: dict[str, Any]) -> list[Recipe] | str:
    """The anchor child at each budget the law may price, or why there is none."""
    from scalelab.laws.posttrain_fit import LAWS

    name = doc["law"]
    fit = doc["laws"].get(name) or {}
    if doc.get("x") != "flops":
        return f"it is fitted against {doc.get('x')}, not the stage's FLOPs"
    if not fit.get("converged"):
        return "its fit did not converge"
    if doc.get("extrapolation_error") is None:
        return "it was never checked on a held-out budget (a law needs 4 or more budgets for that)"
    try:
        law = LAWS[name].from_dict({"params": fit["params"], "converged": True})
        pts = [(float(p["x"]), str(p["run_id"])) for p in doc["points"]]
    except (KeyError, TypeError, ValueError, InputError) as e:
        return f"cannot read it ({e})"
    inside = {r["run"] for rows in ex["planner"].get("posttrain", {}).values() for r in rows}
    measured = {r["run"]: r for r in ex.get("posttrain", []) if r.get("difficulty") == "mean" and r["run"] in inside}
    anchors = sorted((x, run) for x, run in pts if run in measured)
    if not anchors:
        return ("none of its runs has a measured pretraining multiplier in the exchange fit (made from other runs, "
                "or beyond the ladder's best model)")
    x_ref, run = anchors[-1]
    row = measured[run]
    lacks = [k for k in ("pretrain_flops", "posttrain_flops", "anchor_accuracy", "gain", "accuracy") if row.get(k) is None]
    if lacks:
        return f"the exchange fit's row of child {run} lacks {', '.join(lacks)} (re-make it with `scalelab exchange`)"
    pf, M = float(row["pretrain_flops"]), float(row["multiplier"])
    if not x_ref <= float(row["posttrain_flops"]) * 1.01:
        return f"its budget ({x_ref:.3g}) is more than the child's post-training FLOPs ({row['posttrain_flops']:.3g})"
    curve = _ladder_curve(ex, run)
    if curve is None or not math.isclose(curve.equivalent_compute(row["anchor_accuracy"] + row["gain"])[0] / pf, M,
                                         rel_tol=1e-3):
        return "the exchange fit's ladder does not give back the measured multiplier of its child"
    xs = [x for x, _ in pts]
    lo, hi = min(xs) / x_ref, MAX_OVER_LARGEST * max(xs) / x_ref
    steps = range(math.ceil(2 * math.log2(lo) - 1e-9), math.floor(2 * math.log2(hi) + 1e-9) + 1)
    base = float(law.predict([x_ref])[0])
    r0, gain = doc.get("R0"), float(row["gain"])
    if r0 is not None and (base - float(r0)) * gain < 0:  # e.g. a noisy curve of 32 problems per difficulty
        return (f"its curve has the stage {'lowering' if base < float(r0) else 'raising'} accuracy ({float(r0):.3g} -> "
                f"{base:.3g} on the curve's problems) where the evaluation measured {gain:+.3g}: they disagree, so the "
                "measured point is kept")
    kept, dropped = [], []
    for k in (2.0 ** (i / 2) for i in steps):  # half-octave steps; k = 1 and powers of 2 exactly
        delta = float(law.predict([k * x_ref])[0]) - base if k != 1.0 else 0.0
        eq, where = curve.equivalent_compute(row["anchor_accuracy"] + row["gain"] + delta)
        if k != 1.0 and (where != "inside" or not math.isfinite(delta)):
            dropped.append(k)
        else:
            kept.append((k, delta, M if k == 1.0 else eq / pf))
    info = {"technique": doc["technique"], "law": name, "file": doc["file"], "parent": doc.get("parent_id"),
            "run": run, "measured_stage_flops": x_ref, "scales": [2.0 ** (steps[0] / 2), 2.0 ** (steps[-1] / 2)],
            "beyond_ladder": dropped, "largest_measured": max(xs),
            "extrapolation_error": float(doc["extrapolation_error"])}
    share = float(row["posttrain_share"])
    return [Recipe(row["technique"], mult, share + (k - 1) * x_ref / pf,
                   {**info, "scale": k, "stage_flops": k * x_ref, "gain": delta,
                    "accuracy": float(row["accuracy"]) + delta})
            for k, delta, mult in kept]


def _ladder_curve(ex: dict[str, Any], run: str) -> Any:
    """The ladder's greedy accuracy (mean over the child's difficulties) against pretraining FLOPs, as
    `exchange_tables.posttrain_worth` drew it for this child; None when the document lacks it."""
    from scalelab.laws.exchange import LadderCurve

    cols = [f"acc_d{r['difficulty']}" for r in ex.get("posttrain", []) if r["run"] == run and r["difficulty"] != "mean"]
    C, acc = [], []
    for m in ex.get("ladder", []):
        vals = [float(m[c]) for c in cols if m.get(c) is not None]
        if vals and m.get("C_train"):
            C.append(float(m["C_train"]))
            acc.append(float(np.mean(vals)))
    try:
        return LadderCurve(bootstrap=0).fit(C, acc)
    except InputError:
        return None


def law_lines(law: dict[str, Any], fmt: Any) -> list[str]:
    """What `explain` says of a recipe whose budget a post-training law chose."""
    k, err, src = law["scale"], law["extrapolation_error"], f"the {law['law']} law of {law['file']}"
    if k == 1.0:
        head = (f"kept at its measured budget, {fmt(law['measured_stage_flops'])} FLOPs of the stage: {src} "
                "priced no other budget into a cheaper plan")
    else:
        head = (f"{fmt(k)}x its measured budget: {fmt(law['stage_flops'])} FLOPs of the stage instead of "
                f"{fmt(law['measured_stage_flops'])}, chosen with {src}, which predicts {law['gain']:+.3g} accuracy "
                f"over the measured child ({fmt(law['accuracy'] - law['gain'])} -> {fmt(law['accuracy'])}), "
                "priced on the ladder as the measured point was")
    tried = (f"budgets tried {fmt(law['scales'][0])}x-{fmt(law['scales'][1])}x the measured one (never beyond "
             f"{fmt(MAX_OVER_LARGEST)}x the law's largest measured budget, {fmt(law['largest_measured'])} FLOPs)")
    if law["beyond_ladder"]:
        tried += (f", {', '.join(fmt(b) + 'x' for b in law['beyond_ladder'])} left out (the ladder cannot price the "
                  "accuracy predicted there: it passes the ladder's best model, or its worst)")
    out = [f"  law        {head}",
           f"  law        {tried}; checked: the law's largest budget, predicted from the smaller ones, was {fmt(err)} off"]
    if k != 1.0 and abs(law["gain"]) <= err:
        out.append(f"  note       the predicted gain ({law['gain']:+.3g}) is within the law's checked extrapolation "
                   f"error ({fmt(err)}): the choice rests on the law's shape, not on a measured difference")
    out.append(f"  note       the post-training law was fitted on one parent ({law['parent']}) on the testbed: its "
               "gain is assumed to add to the measured child's on the evaluation problems, and to carry over to "
               "the plan's model as a pretraining multiplier, as the measured point is")
    return out
