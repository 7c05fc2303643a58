"""Post-training laws: known curves recovered, the largest budget predicted from the smaller ones,
tables of runs and records, strict JSON from the command line."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scalelab.errors import InputError
from scalelab.laws.posttrain import PosttrainPowerLaw, ScaleRLLaw
from scalelab.laws.posttrain_fit import fit_posttrain_law
from scalelab.records import RunRecord, write_record

from tests.conftest import run_cli

TRUE = {"A": 0.72, "B": 1.6, "C_mid": 8e14, "R0": 0.1}


def scalerl(C, p=TRUE):
    return p["R0"] + (p["A"] - p["R0"]) / (1 + (p["C_mid"] / np.asarray(C, float)) ** p["B"])


def curve(seed=0, sd=0.004, n=8):
    rng = np.random.default_rng(seed)
    C = np.logspace(13, 16, n)
    return C, np.clip(scalerl(C) + rng.normal(0, sd, n), 0, 1)


@pytest.mark.parametrize("R0", [None, TRUE["R0"]])
def test_scalerl_recovers_a_known_curve(R0):
    C, y = curve()
    law = ScaleRLLaw(R0=R0, bootstrap=50).fit(C, y)
    p = law.params_
    assert law.converged_
    assert abs(p["A"] - TRUE["A"]) < 0.02 and abs(p["B"] - TRUE["B"]) / TRUE["B"] < 0.15
    assert abs(np.log(p["C_mid"] / TRUE["C_mid"])) < 0.15 and abs(p["R0"] - TRUE["R0"]) < 0.02
    lo, hi = law.ci_["A"]
    assert lo <= TRUE["A"] <= hi
    assert np.max(np.abs(law.predict(C) - scalerl(C))) < 0.01


def test_scalerl_extrapolates_from_the_smaller_budgets():
    C, y = curve(seed=3)
    early = ScaleRLLaw(R0=TRUE["R0"], bootstrap=0).fit(C[:-2], y[:-2])  # up to 1/4 of the largest budget
    assert abs(early.predict(C[-1:])[0] - scalerl(C[-1])) < 0.03


def test_power_law_recovers_a_known_curve():
    rng = np.random.default_rng(1)
    C = np.logspace(13, 16, 9)
    y = 0.75 - 4 * C ** -0.08 + rng.normal(0, 0.002, C.size)
    law = PosttrainPowerLaw(bootstrap=0).fit(C, y)
    assert abs(law.params_["gamma"] - 0.08) < 0.02 and abs(law.params_["A"] - 0.75) < 0.05


def _table() -> pd.DataFrame:
    """Two techniques of one parent: RL on the ScaleRL curve, SFT on a saturating power law."""
    C, y = curve(seed=5, n=6)
    rl = pd.DataFrame({"technique": "rlvr", "stage_flops": C, "accuracy": y, "parent_accuracy": TRUE["R0"],
                       "parent_id": "d4", "run_id": [f"rl{i}" for i in range(6)]})
    E = np.array([250, 500, 1000, 2000, 4000, 8000.0])
    sft = pd.DataFrame({"technique": "sft-lora", "train_examples": E, "stage_flops": E * 3e10,
                        "accuracy": 0.6 - 0.9 * E ** -0.3, "parent_accuracy": TRUE["R0"], "parent_id": "d4",
                        "run_id": [f"sft{i}" for i in range(6)]})
    return pd.concat([rl, sft], ignore_index=True)


def test_fit_posttrain_law_on_a_table_holds_out_the_largest_budget(tmp_path):
    res = fit_posttrain_law(_table(), "rlvr", bootstrap=20)
    assert res["law"] == "scalerl" and res["R0"] == pytest.approx(TRUE["R0"]) and res["R0_from"] == "the parent's accuracy"
    ext = res["laws"]["scalerl"]["extrapolation"]
    assert ext["fit_budgets"] == 5 and ext["held_out_x"] == pytest.approx(1e16)
    assert res["extrapolation_error"] == pytest.approx(abs(ext["error"])) and res["extrapolation_error"] < 0.03
    assert res["asymptote"] == res["laws"]["scalerl"]["params"]["A"] and res["efficiency"] > 0
    json.dumps(res, allow_nan=False)  # strict JSON
    sft = fit_posttrain_law(_table(), "sft", x="examples", bootstrap=0)
    assert sft["law"] == "posttrain-power" and sft["variants"] == ["sft-lora"] and sft["x_column"] == "train_examples"
    assert sft["laws"]["posttrain-power"]["params"]["gamma"] == pytest.approx(0.3, abs=0.02)
    assert sft["extrapolation_error"] < 0.01 and sft["laws"]["scalerl"]["extrapolation"] is not None
    with pytest.raises(InputError, match="techniques here: rlvr, sft-lora"):
        fit_posttrain_law(_table(), "distill")
    with pytest.raises(InputError, match="2 distinct flops budgets"):
        fit_posttrain_law(_table().iloc[:2], "rlvr")


def _write(runs, run_id, technique, stage_flops, acc, curve=None):
    rec = RunRecord(run_id=run_id, parent_id="d4-base", phase="posttrain", technique=technique, task="testbed",
                    flops={"pretrain": 1e12, "posttrain": stage_flops})
    rec.posttrain_ledger = {"student_train": stage_flops}
    rec.complete(accuracy=acc, accuracy_by_difficulty={"1": acc}, parent_accuracy=TRUE["R0"],
                 parent_accuracy_by_difficulty={"1": TRUE["R0"]}, train_examples=int(stage_flops / 1e10),
                 **({"curve": curve} if curve else {}))
    write_record(runs / run_id, rec)


def test_runs_folder_children_and_an_rl_curve(tmp_path):
    C, y = curve(seed=7, n=5)
    for i, (c, a) in enumerate(zip(C, y)):
        _write(tmp_path, f"d4-base-sft-{i}", "sft", c, a)
    res = fit_posttrain_law(tmp_path, "sft", bootstrap=0)
    assert res["n_points"] == 5 and res["x_column"] == "stage_flops" and res["parent_id"] == "d4-base"
    assert res["R0"] == pytest.approx(TRUE["R0"])
    # one RL run whose curve holds the budgets: its first point (C = 0) is R0, not a point of the fit
    pts = [{"step": 0, "posttrain_flops": 0.0, "greedy_accuracy": 0.1}] + \
          [{"step": 10 * (i + 1), "posttrain_flops": c, "greedy_accuracy": a} for i, (c, a) in enumerate(zip(*curve(seed=8, n=6)))]
    _write(tmp_path, "d4-base-rlvr-0", "rlvr", 1e16, 0.7, curve=pts)
    rl = fit_posttrain_law(tmp_path, "rlvr", bootstrap=0)
    assert rl["n_points"] == 6 and rl["R0"] == 0.1 and rl["R0_from"] == "the curve's first point"
    assert rl["law"] == "scalerl" and rl["extrapolation_error"] < 0.05


def test_cli_prints_strict_json_and_one_line_errors(tmp_path):
    path = tmp_path / "curves.csv"
    t = _table()
    t.loc[0, "accuracy"] = np.nan  # an unmeasured point is left out and said
    t.to_csv(path, index=False)
    res = run_cli("posttrain", "fit", path, "--technique", "rlvr", "--bootstrap", "10", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert doc["n_points"] == 5 and doc["notices"] and doc["laws"]["scalerl"]["ci95"]["A"]
    text = run_cli("posttrain", "fit", path, "--technique", "rlvr", "--bootstrap", "0")
    assert text.returncode == 0 and "* scalerl" in text.stdout and "extrapolation" not in text.stderr
    bad = run_cli("posttrain", "fit", path, "--technique", "nope")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "techniques here" in bad.stderr


def test_a_fine_tuning_run_with_a_curve_gives_a_law_and_the_same_weights(tiny_parent, tmp_path):
    """`curve_points`: held-out greedy accuracy along one SFT run, fitted like an RL curve; measuring
    it leaves the trained weights as they are without it."""
    from safetensors.torch import load_file

    from scalelab.laws.posttrain_fit import fit_posttrain_law
    from scalelab.posttrain import run

    cfg = {"parent": str(tiny_parent), "examples": 64, "batch_size": 8, "eval_problems": 2, "eval_parent": False,
           "threads": 1}
    plain = run("sft", cfg, tmp_path / "a")
    curved = run("sft", {**cfg, "curve_points": 4, "curve_problems": 3}, tmp_path / "b")
    assert "curve" not in plain.metrics and [c["step"] for c in curved.metrics["curve"]] == [0, 2, 4, 6, 8]
    flops = [c["posttrain_flops"] for c in curved.metrics["curve"]]
    assert flops[0] == 0 and flops == sorted(flops) and flops[-1] == curved.posttrain_ledger["student_train"]
    wa = load_file(str(tmp_path / "a" / plain.run_id / "checkpoint" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / curved.run_id / "checkpoint" / "model.safetensors"))
    assert all((wa[k] == wb[k]).all() for k in wa)
    law = fit_posttrain_law(tmp_path / "b", "sft", bootstrap=0)
    assert law["law"] == "posttrain-power" and law["n_points"] == 4 and law["R0_from"] == "the curve's first point"
    assert law["R0"] == curved.metrics["curve"][0]["greedy_accuracy"]
    assert law["laws"]["posttrain-power"]["extrapolation"]["fit_budgets"] == 3
