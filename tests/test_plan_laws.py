"""The planner with post-training laws (`scalelab.pipeline.plan_posttrain`) on the hand-made fits of
`tests/test_plan.py`: greedy accuracy sigmoid(2 (log10 C_train - 12)), an SFT child of a parent
trained with 1e11 FLOPs worth 4x its pretraining at a cost of 10% of it, and a law of accuracy
against the stage's FLOPs x around its measured budget x_ref = 1e10. A law still rising at x_ref
makes the plan spend more post-training compute (at most 4x the law's largest budget); a law flat
beyond x_ref keeps the measured point; an expensive recipe with a flat law is skipped; a law the
planner cannot use changes nothing and says why."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from scalelab.laws.exchange import LadderCurve
from scalelab.laws.posttrain import ScaleRLLaw
from scalelab.pipeline.plan import explain
from tests.test_cli_fit import assert_one_line_error, run
from tests.test_plan import GRID, SLOPE_B, plan, write_fits

PF, X_REF = 1e11, 1e10          # the parent's pretraining FLOPs; the SFT stage's measured FLOPs
LADDER_C = [1e10, 1e11, 1e12, 1e13, 1e14]
RISING = {"A": 0.6, "B": 2.0, "C_mid": 2e10, "R0": 0.1}   # half its gain still to come at x_ref
FLAT = {"A": 0.3, "B": 8.0, "C_mid": 5e9, "R0": 0.1}      # 99.6% of its gain reached at x_ref
STEEP = {"A": 1.0, "B": 4.0, "C_mid": 2e10, "R0": 0.0}    # +0.44 at 2x, +0.88 at 4x: past the ladder's best


def ladder_acc(C):
    return expit(SLOPE_B * (np.log10(C) - 12))  # the greedy law of `write_fits` (exact FLOPs = 6ND)


def curve() -> LadderCurve:
    return LadderCurve(bootstrap=0).fit(LADDER_C, ladder_acc(LADDER_C))


def scalerl(params: dict, x) -> np.ndarray:
    law = ScaleRLLaw()
    law.params_ = params
    return law.predict(x)


def write_measured(d, *, share: float = 0.1):
    """`write_fits` with a measured SFT child, plus the ladder and the child's rows that a real
    exchange document holds (`measure_exchange`), from which the law's other budgets are priced."""
    write_fits(d, posttrain={"sft": [{"multiplier": 4.0, "posttrain_share": share, "run": "sft-child"}]})
    doc = json.loads((d / "exchange.json").read_text())
    anchor = float(curve().predict(PF))
    gain = float(curve().predict(4 * PF)) - anchor  # worth 4x: the ladder reaches the child's accuracy at 4e11
    doc["ladder"] = [{"model": f"m{i}", "C_train": c, "acc_d1": float(a)}
                     for i, (c, a) in enumerate(zip(LADDER_C, ladder_acc(LADDER_C)))]
    row = {"run": "sft-child", "technique": "sft", "parent": "parent", "parent_accuracy": 0.3, "accuracy": 0.3 + gain,
           "pretrain_flops": PF, "posttrain_flops": share * PF, "posttrain_share": share, "multiplier": 4.0,
           "where": "inside", "anchor_accuracy": anchor, "gain": gain}
    doc["posttrain"] = [{**row, "difficulty": "1"}, {**row, "difficulty": "mean"}]
    (d / "exchange.json").write_text(json.dumps(doc))
    return d


def write_law(d, params: dict, capsys, *, name: str = "posttrain-sft.json", x: str = "flops") -> dict:
    """The law as a user makes it: `scalelab posttrain fit CSV --technique sft --out FITS/...` on the
    child's curve (5 budgets, x_ref / 16 to x_ref), its parameters then set to `params` exactly so
    that the expectations below are closed forms."""
    xs = X_REF * 2.0 ** np.arange(-4, 1)
    pts = pd.DataFrame({"technique": "sft", "stage_flops": xs, "accuracy": scalerl(params, xs), "run_id": "sft-child",
                        "parent_id": "parent", "parent_accuracy": params["R0"]})
    pts.to_csv(d / "curve.csv", index=False)
    code, out, err = run(["posttrain", "fit", d / "curve.csv", "--technique", "sft", "--law", "scalerl",
                          "--bootstrap", "0", "--out", d / name], capsys)
    assert code == 0, err
    assert f"wrote {d / name}" in out
    doc = json.loads((d / name).read_text())
    assert doc["extrapolation_error"] >= 0 and doc["technique"] == "sft" and doc["law"] == "scalerl"
    doc["laws"]["scalerl"]["params"], doc["x"] = params, x
    (d / name).write_text(json.dumps(doc))
    (d / "curve.csv").unlink()
    return doc


def worth(delta: float) -> float:
    """The child's multiplier when its accuracy moves by delta: read off the ladder as the exchange does."""
    c = curve()
    return c.equivalent_compute(float(c.predict(4 * PF)) + delta)[0] / PF


def test_a_rising_law_buys_more_post_training_than_the_measured_point(tmp_path, capsys):
    fits = write_measured(tmp_path / "f")
    point = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    assert point.recipe == "sft" and point.recipe_multiplier == 4.0 and "posttrain_law" not in point.as_dict()

    write_law(fits, RISING, capsys)
    p = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    k = 4.0  # the law still rises at 4x: the budget stops at the bound, 4x its largest measured budget
    delta = float(scalerl(RISING, [k * X_REF])[0] - scalerl(RISING, [X_REF])[0])  # +0.3
    assert p.recipe == "sft" and p.posttrain_law["scale"] == k and p.posttrain_law["stage_flops"] == k * X_REF
    assert p.posttrain_law["gain"] == pytest.approx(delta) and p.recipe_multiplier == pytest.approx(worth(delta))
    share = 0.1 + (k - 1) * X_REF / PF
    assert p.posttrain_flops == pytest.approx(share * p.train_flops)
    assert 1e12 / worth(delta) <= p.train_flops <= 1e12 / worth(delta) * GRID and p.predicted >= 0.5
    assert p.compare["measured_posttrain_total_flops"] == pytest.approx(point.total_flops)
    assert p.total_flops < 0.5 * point.total_flops
    text = "\n".join(explain(p))
    for needle in ("4x its measured budget", "the scalerl law of posttrain-sft.json", "+0.3 accuracy",
                   "never beyond 4x the law's largest measured budget", "smaller ones, was",
                   "fitted on one parent (parent)",
                   "sft at its measured post-training budget would need"):
        assert needle in text, (needle, text)
    assert p.posttrain_law["extrapolation_error"] == json.loads((fits / "posttrain-sft.json").read_text())[
        "extrapolation_error"]

    code, out, _ = run(["plan", "--budget", "1e13", "--queries", "1", "--target-accuracy", "0.5", "--fits", fits,
                        "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["posttrain_law"]["scale"] == k and doc["recipe_multiplier"] == pytest.approx(worth(delta))


def test_budgets_whose_accuracy_leaves_the_ladder_are_not_priced(tmp_path, capsys):
    fits = write_measured(tmp_path / "f")
    write_law(fits, STEEP, capsys)
    p = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    # 2.83x and 4x would carry the child past the ladder's best model (0.98): the ladder gives only a bound there
    assert p.posttrain_law["scale"] == 2.0 and p.posttrain_law["beyond_ladder"] == [2.0 ** 1.5, 4.0]
    assert p.recipe_multiplier == pytest.approx(worth(float(np.diff(scalerl(STEEP, [X_REF, 2 * X_REF]))[0])))
    assert "2.828x, 4x left out (the ladder cannot price" in "\n".join(explain(p))


def test_a_law_flat_beyond_the_point_keeps_the_point(tmp_path, capsys):
    fits = write_measured(tmp_path / "f")
    before = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    write_law(fits, FLAT, capsys)
    p = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    assert p.recipe == "sft" and p.posttrain_law["scale"] == 1.0 and p.recipe_multiplier == 4.0
    assert p.total_flops == before.total_flops and p.posttrain_flops == before.posttrain_flops
    assert "kept at its measured budget" in "\n".join(explain(p))


@pytest.mark.parametrize("law, recipe", [(None, "none"), (FLAT, "none"), (RISING, "sft")])
def test_an_expensive_recipe_is_skipped_unless_its_law_makes_it_worth_more(tmp_path, capsys, law, recipe):
    fits = write_measured(tmp_path / "f", share=5.0)  # the measured SFT cost 5x its parent's pretraining
    if law is not None:
        write_law(fits, law, capsys)
    p = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    assert p.recipe == recipe
    if recipe == "none":
        assert 1e12 <= p.train_flops <= 1e12 * GRID and p.posttrain_flops == 0
        assert ("post-training laws considered (posttrain-sft.json)" in "\n".join(explain(p))) == (law is not None)
    else:  # 4x the budget: worth ~24x at a cost of 5.3x, cheaper than 1e12 of pretraining alone
        assert p.posttrain_law["scale"] == 4.0 and p.total_flops < 1e12


def test_a_law_the_planner_cannot_use_changes_nothing_and_says_why(tmp_path, capsys):
    fits = write_measured(tmp_path / "f")
    before = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    write_law(fits, RISING, capsys, x="examples")
    p = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    assert (p.recipe, p.recipe_multiplier, p.total_flops) == (before.recipe, before.recipe_multiplier, before.total_flops)
    assert any("not used: it is fitted against examples" in n for n in p.notes)
    doc = json.loads((fits / "posttrain-sft.json").read_text())
    doc.update(x="flops", points=[{**q, "run_id": "another-child"} for q in doc["points"]])
    (fits / "posttrain-sft.json").write_text(json.dumps(doc))
    p = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    assert p.total_flops == before.total_flops and any("none of its runs has a measured" in n for n in p.notes)


def test_a_law_that_contradicts_the_measured_gain_is_not_used(tmp_path, capsys):
    """The curve says the stage lowered accuracy, the evaluation that it raised it: a law that would
    cut the budget on that evidence is left out, and the plan is the measured point's."""
    fits = write_measured(tmp_path / "f")
    before = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    write_law(fits, {"A": 0.05, "B": 2.0, "C_mid": 2e10, "R0": 0.3}, capsys)
    p = plan(fits, budget=1e13, queries=0, target_accuracy=0.5)
    assert (p.recipe, p.recipe_multiplier, p.total_flops) == (before.recipe, before.recipe_multiplier, before.total_flops)
    assert any("not used: its curve has the stage lowering accuracy" in n for n in p.notes)


def test_two_laws_of_one_technique_is_bad_input(tmp_path, capsys):
    fits = write_measured(tmp_path / "f")
    write_law(fits, RISING, capsys)
    write_law(fits, FLAT, capsys, name="sft-again.json")
    code, _, err = run(["plan", "--budget", "1e13", "--queries", "1", "--target-accuracy", "0.5", "--fits", fits], capsys)
    assert_one_line_error(code, err, "two post-training laws of technique 'sft'", "keep one")
