"""Every `--json` a verb prints, and every JSON file scalelab writes, is strict JSON (RFC 8259): no
bare NaN or Infinity, which strict readers (JavaScript's JSON.parse, jq, Go) reject. No value is
null; infinity is the string "inf". Results go to stdout, notes to stderr."""
from __future__ import annotations

import json
import math
import os
import stat

import pytest

from scalelab.cli import main
from scalelab.records import atomic_write_json, dumps_json
from tests.conftest import SMALL_TESTBED


def strict(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def call(argv, capsys) -> tuple[int, str, str]:
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_dumps_json_writes_no_bare_constants():
    import numpy as np

    doc = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "np": np.float32("nan"), "arr": np.array([1.0, np.inf]),
           "ok": [1.5, 2, "x", None, True]}
    back = strict(dumps_json(doc))
    assert back == {"nan": None, "inf": "inf", "-inf": "-inf", "np": None, "arr": [1.0, "inf"],
                    "ok": [1.5, 2, "x", None, True]}
    assert float(back["inf"]) == math.inf  # the string form reads back as infinity


def test_files_are_written_with_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": math.nan})
        os.umask(0o077)
        atomic_write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600
    assert strict((tmp_path / "a.json").read_text()) == {"x": None}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Tiny inputs for every verb with --json: a table and its fit, a synthetic ladder's test-time
    records (and the exchange fit of them), two tiny trained runs, a task file and completions."""
    from tests.test_exchange import write_runs
    from tests.test_plan import write_fits

    root = tmp_path_factory.mktemp("json")
    import numpy as np
    import pandas as pd

    N, D = (a.ravel() for a in np.meshgrid(np.logspace(7, 9, 4), np.logspace(9, 11, 4)))
    loss = (1.7 + 400 * N ** -0.34 + 410 * D ** -0.28) * np.exp(np.random.default_rng(0).normal(0, 0.003, N.size))
    pd.DataFrame({"N": N, "D": D, "loss": loss, "task_loss": loss, "accuracy": 1 / (1 + np.exp(4 * (loss - 2.2)))}
                 ).to_csv(root / "table.csv", index=False)
    write_runs(root / "tt")
    from scalelab.records import RunRecord, write_record

    for strat, n, right in (("cot", 1, [1, 0, 0, 1]), ("majority", 1, [1, 0, 1, 1]), ("majority", 4, [1, 1, 1, 0])):
        rec = RunRecord(run_id=f"{strat}-n{n}", parent_id="m", phase="testtime", technique=strat, task="testbed")
        write_record(root / "one" / rec.run_id, rec.complete(n=n, steps=1, accuracy=sum(right) / 4, accuracy_se=0.2,
                                                              chance=0.1, flops_per_question=1e6 * n, per_problem=right))
    from tests.test_posttrain_laws import _table as posttrain_curves

    posttrain_curves().to_csv(root / "curves.csv", index=False)
    (root / "task.jsonl").write_text("".join(json.dumps({"question": f"{i}+1?", "answer": f"#### {i + 1}"}) + "\n"
                                             for i in range(3)))
    (root / "comp.jsonl").write_text("".join(json.dumps({"completion": f"#### {i + 1}"}) + "\n" for i in range(3)))
    return {"root": root, "table": root / "table.csv", "fit": root / "fit.json", "tt": root / "tt",
            "fits": write_fits(root / "fits"), "runs": root / "runs"}


TRAIN = ["--preset", "d2", "--set", "seq_len=64", "--set", "batch_size=16", "--set", "threads=1",
         "--set", "eval_every=1000000", "--set", f"source_options={json.dumps(SMALL_TESTBED)}"]


def json_verbs():
    """Every command that has a --json option, as 'verb' or 'group sub'."""
    import typer

    from scalelab.cli.app import app

    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if any("--json" in getattr(p, "opts", []) for p in cmd.params):
            out.append(" ".join(path))
        for name, sub in (subs or {}).items():
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return sorted(out)


def _feedback(path):
    """Preference pairs and thumbs on testbed questions (a tiny policy is rarely right by itself)."""
    from scalelab.data.testbed import TestbedSource

    lines = []
    for p in TestbedSource(**SMALL_TESTBED).problems("train", 4, steps=1):
        q, good, bad = "<bos>" + p.question(), p.solution(), p.solution().replace("A:", "A:1")
        lines += [{"prompt": q, "chosen": good, "rejected": bad}, {"prompt": q, "completion": good, "label": "up"},
                  {"prompt": q, "completion": bad, "label": False}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _on_trained(runs, tmp_path, parent, feedback):
    """Verbs that read trained runs: every post-training technique (as small as each allows), test-time
    evaluation and verifier training, curves and the report. None = filled in once its input exists."""
    post = ["--runs-dir", tmp_path / "post", "--threads", "1", "--set", "eval_problems=1", "--set", "eval_parent=false",
            "--eval-difficulties", "1"]
    rl = ["--steps", "1", "--prompts-per-step", "2", "--group-size", "2", "--set", "eval_every=0",
          "--set", "curve_problems=1"]
    return {
        "posttrain sft": ["posttrain", "sft", "--from", parent, "--examples", "4", *post],
        "posttrain distill": ["posttrain", "distill", "--from", parent, "--teacher", parent, "--examples", "4", *post],
        "posttrain synth": ["posttrain", "synth", "--from", parent, "--examples", "4", "--set", "synth_problems=2",
                            "--set", "samples=1", *post],
        "posttrain prune": ["posttrain", "prune", "--from", parent, "--method", "magnitude", "--sparsity", "0.2", *post],
        "posttrain quantize": ["posttrain", "quantize", "--from", parent, "--method", "int8-weight", *post],
        "posttrain reward-model": ["posttrain", "reward-model", "--from", parent, "--data", feedback, "--runs-dir",
                                   tmp_path / "post", "--threads", "1"],
        "posttrain rlvr": ["posttrain", "rlvr", "--from", parent, *rl, *post],
        "posttrain rlhf": None,  # needs the reward model's run
        "posttrain rlaif": ["posttrain", "rlaif", "--from", parent, "--judge", parent, *rl, *post],
        "posttrain dpo": ["posttrain", "dpo", "--from", parent, "--data", feedback, "--epochs", "1", "--set",
                          "curve_problems=1", *post],
        "posttrain rft": ["posttrain", "rft", "--from", parent, "--rounds", "1", "--questions", "2", "--samples", "2",
                          "--set", "curve_problems=1", *post],
        "testtime": ["testtime", "--model", parent, "--strategies", "cot", "--n", "1", "--difficulties", "1",
                     "--problems", "2", "--threads", "1", "--runs-dir", tmp_path / "tt"],
        "testtime train-verifier": ["testtime", "train-verifier", "--policy", parent, "--kind", "orm", "--problems", "4",
                                    "--samples", "2", "--threads", "1", "--set", "max_steps=1", "--runs-dir",
                                    tmp_path / "rm"],
        "testtime allocate": ["testtime", "allocate", "--model", parent, "--difficulties", "1", "--problems", "4",
                              "--n-max", "4", "--probe", "2", "--threads", "1", "--set", "orders=2", "--set", "draws=10",
                              "--set", "caps=[4]", "--runs-dir", tmp_path / "alloc"],
        "curves": ["curves", runs, "--out", tmp_path / "curves.png"],
        "report": ["report", runs, "--bootstrap", "0", "--out", tmp_path / "report.html"],
    }


def test_every_json_verb_prints_strict_json(inputs, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    i = inputs
    runs = i["runs"]
    a = ["train", *TRAIN, "--set", "tokens=2000", "--runs-dir", runs]
    b = ["train", *TRAIN, "--set", "tokens=3000", "--runs-dir", runs]
    c = ["train", *TRAIN, "--set", "tokens=4000", "--runs-dir", runs]
    cases = {
        "fit": ["fit", i["table"], "--law", "chinchilla", "--method", "vpnls", "--bootstrap", "0", "--out", i["fit"]],
        "predict": ["predict", i["fit"], "--params", "1e8", "--tokens", "1e10"],
        "optimal": ["optimal", i["fit"], "--compute", "1e20"],
        "backtest": ["backtest", i["table"], "--law", "free"],
        "next": ["next", i["table"], "--budget", "1e18"],
        "downstream": ["downstream", i["table"]],
        "plan": ["plan", "--budget", "1e13", "--queries", "10", "--target-accuracy", "0.5", "--fits", i["fits"]],
        "exchange": ["exchange", i["tt"], "--bootstrap", "10"],
        "demo": ["demo", "--bundled", "--bootstrap", "0", "--out", tmp_path / "demo"],
        "tasks show": ["tasks", "show", i["root"] / "task.jsonl"],
        "tasks score": ["tasks", "score", i["root"] / "task.jsonl", "--completions", i["root"] / "comp.jsonl"],
        "train": a,
        "sweep": ["sweep", "--plan", "grid", "--sizes", "d1", "--tokens", "2000", *TRAIN[2:], "--runs-dir",
                  i["root"] / "sweep"],
        "testtime predict": ["testtime", "predict", i["tt"], "--fit-max-n", "4", "--at", "16"],
        "testtime compare": ["testtime", "compare", i["root"] / "one", "--budget", "majority:4"],
        "posttrain compare": None,  # filled once the two runs exist
        "posttrain fit": ["posttrain", "fit", i["root"] / "curves.csv", "--technique", "rlvr", "--bootstrap", "5"],
    }
    later = _on_trained(runs, tmp_path, "PARENT", "FEEDBACK")
    assert sorted({**cases, **later}) == json_verbs(), "a verb with --json is missing from this test"
    docs = {}
    for verb in [v for v in cases if v != "posttrain compare"] + ["posttrain compare"]:
        argv = cases[verb]
        if verb == "posttrain compare":
            docs["b"] = strict(call([*b, "--json"], capsys)[1])
            strict(call([*c, "--json"], capsys)[1])
            argv = ["posttrain", "compare", runs / docs["train"]["run_id"], runs / docs["b"]["run_id"],
                    "--problems", "3", "--difficulties", "1", "--threads", "1"]
        code, out, err = call([*argv, "--json"], capsys)
        assert code == 0, (verb, err[-1500:])
        docs[verb] = strict(out)  # the whole of stdout is one strict JSON document
    later = _on_trained(runs, tmp_path, runs / docs["b"]["run_id"], _feedback(tmp_path / "feedback.jsonl"))
    for verb, argv in later.items():
        if verb == "posttrain rlhf":
            argv = ["posttrain", "rlhf", "--from", runs / docs["b"]["run_id"], "--reward-model",
                    tmp_path / "post" / docs["posttrain reward-model"]["run_id"], *later["posttrain rlvr"][4:]]
        code, out, err = call([*argv, "--json"], capsys)
        assert code == 0, (verb, err[-1500:])
        docs[verb] = strict(out)
    assert docs["train"]["status"] == "complete" and docs["fit"]["law"] == "chinchilla"
    assert strict(i["fit"].read_text())["params"] == docs["fit"]["params"]
    assert docs["predict"]["loss"] > 0 and isinstance(docs["testtime compare"], list)
    assert [o["status"] for o in docs["sweep"]] == ["complete"] and docs["sweep"][0]["loss"] > 0
    for verb in [v for v in later if v.startswith("posttrain ")] + ["testtime train-verifier"]:
        assert docs[verb]["status"] == "complete" and docs[verb]["run_id"], verb  # the record itself
    assert [p["strategy"] for p in docs["testtime"]] == ["cot"] and 0 <= docs["testtime"][0]["accuracy"] <= 1
    assert len(docs["curves"]["budgets"]) >= 3 and docs["report"]["bytes"] > 0
    assert docs["testtime allocate"]["report"] and docs["testtime allocate"]["allocators"]


def test_testtime_results_go_to_stdout(tiny_parent, tmp_path, capsys):
    """The table's rows are results: redirected stdout holds them, not only the header."""
    code, out, err = call(["testtime", "--model", tiny_parent, "--strategies", "cot", "--n", "1", "--difficulties", "1",
                           "--problems", "2", "--threads", "1", "--runs-dir", tmp_path], capsys)
    assert code == 0, err
    rows = out.strip().splitlines()
    assert rows[0].split()[0] == "strategy" and len(rows) == 2 and rows[1].split()[:3] == ["cot", "1", "1"]
    assert "records under" in err and "records under" not in out
