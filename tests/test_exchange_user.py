"""Exchange rates and plans for a user's own model family: plain model directories (no scalelab
record, so no pretraining FLOPs in their test-time records) whose compute comes from a
`--pretraining` CSV, on one task file; strict JSON; the planner without a Chinchilla fit; and bad
CSVs as one line, exit 2, nothing written. Synthetic records from the law of test_exchange.py."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from scalelab.records import RunRecord, write_record
from tests.test_cli_fit import assert_one_line_error, run
from tests.test_exchange import B, C, CHANCE, MODELS, PROBLEMS, synthetic_points, true_acc

N = {"small": 2e5, "mid": 4e5, "large": 8e5}   # parameters; D = C / 6N makes 6ND the ladder's C


def write_user_runs(root, task="gsm8k.jsonl", models=MODELS):
    """Test-time records as `scalelab testtime --model models/NAME --task tasks/gsm8k.jsonl` writes
    them for a bare model directory: no pretraining FLOPs, no parameter counts."""
    for r in synthetic_points():
        if r["model"] not in models:
            continue
        name = r["model"]
        for strat in (("cot", "majority") if r["n"] == 1 else ("majority",)):
            rid = f"{name}-{task}-{strat}-d{r['d']}-n{r['n']}"
            rec = RunRecord(run_id=rid, parent_id=name, phase="testtime", technique=strat, task=task,
                            config={"model": f"models/{name}", "task": f"tasks/{task}"},
                            flops={"inference": r["C_test"] * PROBLEMS, "verifier": 0.0})
            greedy = strat == "cot"
            acc = true_acc(MODELS[name], r["C_test"], r["d"]) if greedy else float(np.mean(r["per_problem"]))
            rec.complete(n=r["n"], steps=r["d"], difficulty=str(r["d"]), accuracy=acc, accuracy_se=0.03, chance=CHANCE,
                         kind="single" if greedy else "parallel", flops_per_question=r["C_test"], problems=PROBLEMS,
                         **({} if greedy else {"per_problem": r["per_problem"]}))
            write_record(root / name / task.split(".")[0] / strat / f"d{r['d']}" / rid, rec)


def write_child(root, task="gsm8k.jsonl"):
    """An SFT child of the bare model "mid" as accurate as "large": its record has no pretraining FLOPs."""
    acc = {str(d): true_acc(MODELS["large"], 1e7, d) for d in (1, 2, 3)}
    par = {str(d): true_acc(MODELS["mid"], 1e7, d) for d in (1, 2, 3)}
    rec = RunRecord(run_id="mid-sft", parent_id="mid", phase="posttrain", technique="sft", task=task,
                    flops={"posttrain": 3e10}, config={"parent": "models/mid", "task": f"tasks/{task}"})
    rec.complete(accuracy=float(np.mean(list(acc.values()))), parent_accuracy=float(np.mean(list(par.values()))),
                 accuracy_by_difficulty=acc, parent_accuracy_by_difficulty=par,
                 accuracy_se_by_difficulty={d: 0.02 for d in acc}, chance_by_difficulty={d: CHANCE for d in acc})
    write_record(root / "post" / rec.run_id, rec)


def write_csv(path, rows=None, header="model,N,D"):
    rows = rows if rows is not None else [f"models/{m},{N[m]:.0f},{MODELS[m] / (6 * N[m]):.6g}" for m in MODELS]
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def test_exchange_and_plan_for_a_user_model_family(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_user_runs(runs)
    write_child(runs)
    csv = write_csv(tmp_path / "pretraining.csv")
    out = tmp_path / "fits" / "exchange.json"
    code, stdout, err = run(["exchange", runs, "--pretraining", csv, "--bootstrap", "40", "--json", "--out", out],
                            capsys)
    assert code == 0, err

    def no_constants(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    doc = json.loads(stdout, parse_constant=no_constants)
    assert json.loads(out.read_text(), parse_constant=no_constants) == doc
    assert doc["task"] == "gsm8k.jsonl" and doc["pretraining"]["file"] == str(csv)
    assert [m["model"] for m in doc["ladder"]] == ["small", "mid", "large"]
    assert [m["C_train"] for m in doc["ladder"]] == pytest.approx(list(MODELS.values()), rel=1e-5)
    assert doc["planner"]["train_exact_per_6n"] == pytest.approx(1.0)
    pooled = doc["strategies"]["majority"]["pooled"]
    assert pooled["params"]["multiplier"] == pytest.approx(10 ** (B / C), rel=0.35)
    lo, hi = pooled["ci95"]["multiplier"]
    assert lo <= pooled["params"]["multiplier"] <= (math.inf if hi == "inf" else hi)
    assert doc["reach"]["models"] == 3 and any("3 models" in w for w in doc["reach"]["statements"])
    worth = [r for r in doc["posttrain"] if r["difficulty"] == "mean"]  # the parent's FLOPs from the ladder
    assert len(worth) == 1 and worth[0]["pretrain_flops"] == pytest.approx(MODELS["mid"], rel=1e-5)
    assert worth[0]["multiplier"] == pytest.approx(4.0, rel=1e-4) and worth[0]["posttrain_share"] == pytest.approx(0.075, rel=1e-4)
    code, text, err = run(["exchange", runs, "--pretraining", csv, "--bootstrap", "0"], capsys)
    assert code == 0 and "reach: 3 models over" in text and "6ND from --pretraining" in text
    # no chinchilla fit for this family: the planner picks among the ladder's own models
    code, text, err = run(["plan", "--fits", out.parent, "--budget", "1e14", "--queries", "1000",
                           "--target-accuracy", "0.5", "--json"], capsys)
    assert code in (0, 1), err
    plan = json.loads(text)
    assert any(n.startswith("no chinchilla fit in the folder: the plan chooses among the ladder's 3") for n in plan["notes"])
    assert plan["N"] in [pytest.approx(v) for v in N.values()] and plan["train_flops"] == pytest.approx(
        MODELS[[m for m in N if plan["N"] == pytest.approx(N[m])][0]], rel=1e-4)
    code, _, err = run(["plan", "--fits", out.parent, "--budget", "1e14", "--queries", "1000", "--target-loss", "2"],
                       capsys)
    assert_one_line_error(code, err, "no chinchilla fit")


def test_a_csv_row_by_folder_name_and_the_record_fallback(tmp_path, capsys):
    """A row names the directory another way (absolute path, other cwd): its folder name finds it."""
    runs = tmp_path / "runs"
    write_user_runs(runs)
    csv = write_csv(tmp_path / "p.csv", [f"/elsewhere/models/{m}/,{N[m]:.0f},,{MODELS[m]:.6g}" for m in MODELS],
                    header="model,N,D,C")
    code, out, err = run(["exchange", runs, "--pretraining", csv, "--bootstrap", "0", "--json"], capsys)
    assert code == 0, err
    assert [m["C_train"] for m in json.loads(out)["ladder"]] == pytest.approx(list(MODELS.values()))


def test_bad_pretraining_csv_and_mixed_tasks(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_user_runs(runs)
    out = tmp_path / "fits" / "exchange.json"
    cases = [
        (write_csv(tmp_path / "a.csv", [f"models/{m},{N[m]:.0f},1e6" for m in ("small", "mid")]),
         "no row for model 'models/large'"),
        (write_csv(tmp_path / "b.csv", [f"models/{m},1e6" for m in MODELS], header="model,D"), "no column 'N'"),
        (write_csv(tmp_path / "c.csv", [f"models/{m},1e5" for m in MODELS], header="model,N"), "no column 'D or C'"),
        (write_csv(tmp_path / "d.csv", ["models/small,abc,1e6"]), "line 2: N = 'abc' is not a positive number"),
        (tmp_path / "missing.csv", "no such file"),
    ]
    for csv, msg in cases:
        code, _, err = run(["exchange", runs, "--pretraining", csv, "--out", out, "--bootstrap", "0"], capsys)
        assert_one_line_error(code, err, msg)
        assert not out.exists()
    code, _, err = run(["exchange", runs, "--bootstrap", "0"], capsys)
    assert_one_line_error(code, err, "0 pretrained model(s)", "give --pretraining CSV")
    write_user_runs(runs, task="math.jsonl", models={"small": 1})
    code, _, err = run(["exchange", runs, "--pretraining", tmp_path / "a.csv", "--bootstrap", "0"], capsys)
    assert_one_line_error(code, err, "2 tasks (gsm8k.jsonl, math.jsonl)", "--task")
    code, out_, err = run(["exchange", runs, "--pretraining", write_csv(tmp_path / "ok.csv"), "--task",
                           "tasks/gsm8k.jsonl", "--bootstrap", "0", "--json"], capsys)
    assert code == 0 and json.loads(out_)["task"] == "gsm8k.jsonl"
