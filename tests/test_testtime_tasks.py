"""Test-time evaluation on a user's task file with a user-shaped model (a plain HF directory)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def _cfg(model: Path, task: Path, **kw):
    from scalelab.testtime.evaluate import TesttimeConfig

    base = dict(model=str(model), task=str(task), strategies=["cot", "majority"], n=[1, 2], problems=3,
                max_new_tokens=12, threads=1)
    return TesttimeConfig.build({**base, **kw})


def test_testbed_run_ids_did_not_move():
    """Testbed points and reward models written before task files existed keep their ids (resume finds them)."""
    from scalelab.rewards.trainer import VerifierConfig, run_id_for
    from scalelab.testtime.evaluate import TesttimeConfig, run_dir_for

    cfg = TesttimeConfig.build(model="m", strategies=["cot", "majority"], n=[1, 4])
    assert run_dir_for(Path("r"), cfg, "pol", "majority", 3, 4) == Path("r/pol/majority/d3/majority-d3-n4-1a48a167")
    assert run_id_for(VerifierConfig.build(policy="p", kind="orm"), "pol") == "orm-pol-52d3dcee"


def test_evaluate_writes_one_curve_folder_per_task_and_difficulty(user_model, user_task, tmp_path):
    from scalelab.testtime.evaluate import evaluate

    recs = evaluate(_cfg(user_model, user_task), tmp_path)
    assert len(recs) == 2 * (1 + 2)  # difficulties 1 and 2 x (cot at n=1, majority at n=1 and 2)
    for r in recs:
        assert r.task == "gsm8k.jsonl" and r.status == "complete"
        assert r.metrics["difficulty"] in (1, 2) and r.metrics["steps"] == r.metrics["difficulty"]
        assert r.metrics["chance"] == 0.0 and r.flops["inference"] > 0
        assert r.metrics["problems"] == 3
    folders = {p.parent.relative_to(tmp_path) for p in tmp_path.rglob("record.json")}
    assert Path("llama/gsm8k/majority/d2") in {f.parent for f in folders}
    again = evaluate(_cfg(user_model, user_task), tmp_path)  # resumes: every point is already there
    assert [r.run_id for r in again] == [r.run_id for r in recs]
    assert len(list(tmp_path.rglob("record.json"))) == len(recs)


def test_outcomes_are_the_task_verifiers_verdicts(user_model, user_task):
    """cot's correctness is the file task's verdict on the text the model wrote, and the prompt is the
    task's (the plain template, with the file's question)."""
    from scalelab.testtime.evaluate import load_context
    from scalelab.testtime.strategies import run_strategy

    ctx, _, _, src = load_context(_cfg(user_model, user_task))
    assert src is None
    problems = ctx.task.problems("test", 4)
    assert ctx.task.prompt(problems[0]).startswith("Question: " + problems[0].question)
    outs = run_strategy("cot", problems, 1, ctx)
    assert [o.correct for o in outs] == [float(ctx.task.verify(p, o.text).correct) for p, o in zip(problems, outs)]
    right = problems[0].solution  # the reference solution is right by the same verifier
    assert ctx.task.verify(problems[0], right).correct


def test_choice_file_chance_and_difficulty_bins(user_model, tmp_path):
    from scalelab.tasks.wordproblems import generate, write_jsonl
    from scalelab.testtime.evaluate import evaluate

    rows = generate("choice", 40, seed=1, max_ops=2)
    task = write_jsonl(tmp_path / "mc.jsonl", rows)
    recs = evaluate(_cfg(user_model, task, strategies=["cot"], difficulties=[2]), tmp_path / "runs")
    assert len(recs) == 1 and recs[0].metrics["chance"] == pytest.approx(0.25)
    assert recs[0].metrics["difficulty"] == 2


def test_file_without_difficulties_is_one_group(user_model, tmp_path):
    from scalelab.testtime.evaluate import evaluate

    f = tmp_path / "exact.jsonl"
    f.write_text("".join(json.dumps({"question": f"Say {w}.", "answer": w}) + "\n" for w in ("yes", "no", "maybe")))
    recs = evaluate(_cfg(user_model, f, strategies=["cot"]), tmp_path / "runs")
    assert [r.metrics["difficulty"] for r in recs] == ["all"] and recs[0].metrics["steps"] == 0


def test_reward_models_and_search_on_a_task_file(user_model, user_task, tmp_path):
    """An ORM trained on the policy's samples of the file's train split, then best-of-n; a PRM, then
    beam search line by line."""
    from scalelab.rewards.trainer import VerifierConfig, train_verifier
    from scalelab.testtime.evaluate import evaluate

    rms = {}
    for kind in ("orm", "prm"):
        rec = train_verifier(VerifierConfig.build(policy=str(user_model), kind=kind, task=str(user_task), problems=6,
                                                  samples=2, rollouts=1, val_problems=4, max_new_tokens=10,
                                                  threads=1), tmp_path / "rm")
        assert rec.status == "complete" and rec.task == "gsm8k.jsonl"
        assert rec.metrics["label_agreement"] is None  # no step oracle outside the testbed
        rms[kind] = str(tmp_path / "rm" / rec.run_id)
    recs = evaluate(_cfg(user_model, user_task, strategies=["best_of_n", "beam_search"], n=[2], difficulties=[1],
                         orm=rms["orm"], prm=rms["prm"]), tmp_path / "runs")
    assert {r.technique for r in recs} == {"best_of_n", "beam_search"}
    for r in recs:
        assert r.flops["verifier"] > 0 and r.flops["inference"] > 0


def _main(capsys, *args):
    from scalelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(map(str, args)))
    return e.value.code, capsys.readouterr().err.strip()


def test_bad_task_input_is_one_line(capsys, user_model, user_task, tmp_path):
    long = "x " * 400
    out = tmp_path / "runs"
    base = ["testtime", "--model", user_model, "--runs-dir", out, "--threads", "1", "--problems", "2"]
    cases = [
        (base + ["--task", user_task, "--strategies", "direct"], "written for the testbed"),
        (base + ["--task", user_task, "--strategies", "revision"], "written for the testbed"),
        (base + ["--task", user_task, "--chat", "on"], "no chat template"),
        (base + ["--task", user_task, "--system", long], "context is 256"),
        (base + ["--task", user_task, "--split", "val"], "splits found: test, train"),
        (base + ["--task", user_task, "--difficulties", "7"], "its difficulties: 1, 2"),
        (base + ["--system", "Be brief."], "--system applies to a task file"),
        (base + ["--task", tmp_path / "nope.jsonl"], "no such file"),
    ]
    for args, needle in cases:
        code, err = _main(capsys, *args)
        assert code == 2, (args, err)
        assert needle in err and len(err.splitlines()) == 1, (args, err)
    assert not out.exists()  # nothing written by any of them


def test_votes_count_any_hashable_answer():
    """A model may write a number longer than int64, a fraction or a letter: voting compares them as codes."""
    from fractions import Fraction

    from scalelab import passk as est
    from scalelab.testtime.context import answer_codes

    codes = answer_codes([10**30, Fraction(1, 2), None, 10**30, "B", Fraction(2, 4), 10**30])
    assert codes.tolist() == [0, 1, est.NO_ANSWER, 0, 2, 1, 0]
    correct = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert est.vote_at_k(codes, correct, 7, draws=10) == 1.0  # three 10**30 outvote two halves


def test_kv_cache_estimate_refuses_before_sampling(user_model, monkeypatch):
    from scalelab.errors import ConfigError
    from scalelab.inference import engine as E

    eng = E.Engine.load(user_model)
    c = eng.model.config  # 1 layer, 2 KV heads of width 8, float32: 2 * 1 * 2 * 8 * 4 bytes per row and token
    assert eng.kv_bytes(3, 10) == 2 * c.num_hidden_layers * 3 * 10 * 2 * 8 * 4
    monkeypatch.setattr(E, "available_memory", lambda: 10_000)
    with pytest.raises(ConfigError, match=r"key/value cache.*lower --max-batch"):
        eng.generate(["Question: 1"], 16, E.SamplingParams(max_tokens=64))
    monkeypatch.setattr(E, "available_memory", lambda: 10**12)
    assert eng.generate(["Question: 1"], 2, E.SamplingParams(max_tokens=3)).generated_tokens > 0


def test_accuracy_interval_is_a_bootstrap_over_questions():
    from scalelab import passk as est

    assert est.interval95([1.0] * 5) == (1.0, 1.0)
    lo, hi = est.interval95([0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    assert 0.0 <= lo < 0.25 < hi <= 1.0  # mean 0.25 inside, never outside [0, 1]
    wide, narrow = est.interval95([0.0, 1.0] * 5), est.interval95([0.0, 1.0] * 200)
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])  # shrinks like 1/sqrt(questions)


def test_a_users_classifier_and_an_llm_judge_as_orms(user_model, user_task, tmp_path):
    """A *ForSequenceClassification directory as --orm and a causal LM as --judge: best-of-n runs on
    either, charged verifier FLOPs; a classifier is refused as a PRM."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from scalelab.errors import ConfigError
    from scalelab.testtime.evaluate import evaluate

    tok = AutoTokenizer.from_pretrained(user_model)
    torch.manual_seed(0)
    clf = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tok) + 7, hidden_size=16, intermediate_size=32,
                                                     num_hidden_layers=1, num_attention_heads=2, num_labels=1,
                                                     pad_token_id=tok.pad_token_id))
    clf.save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    for kw in ({"orm": str(tmp_path / "clf")}, {"judge": str(user_model)}):
        recs = evaluate(_cfg(user_model, user_task, strategies=["best_of_n", "weighted_best_of_n"], n=[2],
                             difficulties=[1], **kw), tmp_path / "runs")
        assert len(recs) == 2
        assert all(r.flops["verifier"] > 0 for r in recs), kw
        assert all(0 <= r.metrics["accuracy"] <= 1 for r in recs)
    with pytest.raises(ConfigError, match="give it as --orm"):
        evaluate(_cfg(user_model, user_task, strategies=["beam_search"], n=[2], prm=str(tmp_path / "clf")),
                 tmp_path / "runs")
