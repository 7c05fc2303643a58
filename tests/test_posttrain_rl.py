"""Feedback and RL post-training on a tiny parent: reward models from pairs and thumbs, GRPO/RLOO
with the verifier, a reward model and a judge, DPO, rejection-sampling fine-tuning; the loss's
direction, advantages, faulty rewards, ledgers and lineage, and bad input as one-line errors that
leave the parent's bytes unchanged."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from scalelab.errors import ConfigError, InputError
from scalelab.posttrain import run
from scalelab.posttrain.stage import dir_digest

SMALL = {"max_steps": 3, "max_modulus": 7, "eval_docs": 20}
EVAL = {"eval_problems": 4, "threads": 1}
RL = {"steps": 3, "prompts_per_step": 4, "group_size": 4, "eval_every": 2, "curve_problems": 2, **EVAL}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("rl_runs")


@pytest.fixture(scope="module")
def parent(tiny_parent):
    return tiny_parent  # conftest.py: a d3 trained once per session


@pytest.fixture(scope="module")
def digest(parent):
    return dir_digest(parent)


@pytest.fixture(scope="module")
def feedback_file(runs):
    """Pairs (right > corrupted) and thumbs for 10 questions: the tiny parent is rarely right, so
    its own samples would give no pairs."""
    from scalelab.data.testbed import TestbedSource

    lines = []
    for p in TestbedSource(**SMALL).problems("train", 10, steps=2):
        q, good, bad = "<bos>" + p.question(), p.solution(), p.solution().replace("A:", "A:1")
        lines += [{"prompt": q, "chosen": good, "rejected": bad}, {"prompt": q, "completion": good, "label": "up"},
                  {"prompt": q, "completion": bad, "label": False}]
    f = runs / "feedback.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return f


@pytest.fixture(scope="module")
def rm(parent, runs, feedback_file):
    rec = run("reward-model", {"parent": str(parent), "data": str(feedback_file), "epochs": 3, "batch_size": 8,
                               "threads": 1}, runs / "post")
    return rec, runs / "post" / rec.run_id


def _lineage(rec, parent, technique, parts):
    from scalelab.records import read_record

    p = read_record(parent)
    assert rec.status == "complete" and rec.technique == technique and rec.parent_id == p.run_id
    assert rec.flops["pretrain"] == p.flops["pretrain"]
    assert rec.flops["posttrain"] == pytest.approx(sum(rec.posttrain_ledger.values()))
    assert set(rec.posttrain_ledger) == set(parts), rec.posttrain_ledger
    assert all(v > 0 for v in rec.posttrain_ledger.values())


# ---- the loss and the advantages ------------------------------------------------------------------
def test_grpo_and_rloo_advantages():
    from scalelab.posttrain.rl import advantages

    r, ok = np.array([1.0, 0.0, 0.0, 1.0]), np.ones(4, bool)
    a = advantages(r, ok, "grpo", True)
    assert a.mean() == pytest.approx(0) and a.std() == pytest.approx(1, rel=1e-3)
    assert advantages(r, ok, "grpo", False).tolist() == [0.5, -0.5, -0.5, 0.5]
    # RLOO: each against the mean of the other three
    assert advantages(r, ok, "rloo", False) == pytest.approx([1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3])
    # a failed sample gets no advantage and does not enter the others' baseline
    a = advantages(np.array([1.0, np.nan, 0.0, 0.0]), np.array([True, False, True, True]), "grpo", False)
    assert a[1] == 0 and a[0] == pytest.approx(2 / 3)
    assert not advantages(np.ones(4), ok, "grpo", True).any()  # equal rewards: no signal


def test_policy_loss_raises_good_samples_and_lowers_bad_ones():
    import torch

    from scalelab.posttrain.rl import RLVRConfig, policy_loss

    torch.manual_seed(0)
    logits = torch.randn(4, 5, 7, requires_grad=True)
    tokens = torch.randint(0, 7, (4, 5))
    mask = torch.ones(4, 5)
    A = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    use = torch.ones(4, 1)
    cfg = RLVRConfig(parent="x", kl_coef=0.0)

    def seq_lp():
        return torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)

    before = seq_lp().sum(1).detach()
    lp = seq_lp()
    loss, kl = policy_loss(lp, lp.detach(), None, A, mask, use, cfg)
    assert kl is None
    loss.backward()
    with torch.no_grad():
        logits -= 0.5 * logits.grad
    change = seq_lp().sum(1).detach() - before
    assert (change[A[:, 0] > 0] > 0).all() and (change[A[:, 0] < 0] < 0).all()
    # the KL term alone pulls the policy back towards the reference and is zero at the reference
    loss0, kl0 = policy_loss(lp.detach(), lp.detach(), lp.detach(), torch.zeros(4, 1), mask, use,
                             RLVRConfig(parent="x", kl_coef=1.0))
    assert float(loss0) == pytest.approx(0.0, abs=1e-7) and kl0 == pytest.approx(0.0, abs=1e-6)


# ---- rewards ----------------------------------------------------------------------------------------
def test_reward_sources_isolate_failures():
    from scalelab.rewards.feedback import FunctionReward, VerifierReward
    from scalelab.data.testbed import TestbedSource

    p = TestbedSource(**SMALL).problems("train", 1, steps=2)[0]

    def flaky(prob, text):
        if text == "boom":
            raise RuntimeError("judge crashed")
        return math.nan if text == "nan" else 0.5

    rb = FunctionReward(flaky)([p] * 4, ["q"] * 4, ["ok", "boom", "nan", "ok"])
    assert rb.values[[0, 3]].tolist() == [0.5, 0.5] and rb.failed == 2
    assert any("judge crashed" in e for e in rb.errors) and any("not finite" in e for e in rb.errors)
    v = VerifierReward()([p, p], ["q", "q"], [p.solution(), "A:0"])
    assert v.values.tolist() == [1.0, 0.0] and v.flops == 0


# ---- reward models ----------------------------------------------------------------------------------
def test_testbed_pairs_rank_right_over_wrong_and_short_over_long():
    from scalelab.posttrain.prefs import split_by_prompt, testbed_pairs
    from scalelab.data.testbed import TestbedSource

    probs = TestbedSource(**SMALL).problems("train", 3, steps=2)
    right = [p.solution() for p in probs]
    longer = [r.replace("\nA:", "\n!b:0=0\nA:") for r in right]  # a spurious extra line
    texts = [[r, r.replace("A:", "A:1"), r] for r in right]
    pairs = testbed_pairs(probs, texts, max_pairs=10)
    assert len(pairs) == 3 and all(p.why == "correct" and p.chosen == r for p, r in zip(pairs, right))
    tr, ho = split_by_prompt(pairs, 0.34, seed=0)
    assert len(ho) == 1 and not {p.prompt for p in tr} & {p.prompt for p in ho}
    from scalelab.tasks.testbed import TestbedTask

    if TestbedTask().verify(probs[0], longer[0]).correct:  # a longer, still-correct solution
        short = testbed_pairs(probs[:1], [[right[0], longer[0]]], max_pairs=10)
        assert [(p.why, p.chosen) for p in short] == [("shorter", right[0])]


def test_reward_model_from_a_feedback_file_scores_like_an_orm(parent, digest, rm):
    from scalelab.data.testbed import TestbedSource
    from scalelab.rewards.models import RewardModel

    rec, path = rm
    m = rec.metrics
    assert rec.technique == "reward-model" and "accuracy" not in m  # not a policy: no greedy evaluation
    assert set(rec.posttrain_ledger) == {"reward_model_forward"}
    assert m["train_pairs"] + m["heldout_pairs"] == 10 and m["train_labels"] + m["heldout_labels"] == 20
    assert 0 <= m["heldout_pairwise_accuracy"] <= 1 and 0 <= m["heldout_label_auc"] <= 1
    # the child is an outcome reward model the test-time code loads
    model = RewardModel.load(path)
    assert model.kind == "orm" and model.head == "likelihood"
    p = TestbedSource(**SMALL).problems("train", 1, steps=2)[0]
    scores, flops = model.score(["<bos>" + p.question()] * 2, [p.solution(), "A:0"])
    assert all(0 < s[0] < 1 for s in scores) and all(f > 0 for f in flops)
    assert dir_digest(parent) == digest


def test_label_head_reward_model_is_centred_and_learns_the_pairs(parent, runs, feedback_file, tmp_path):
    from scalelab.data.testbed import TestbedSource
    from scalelab.rewards.models import RewardModel

    pairs = tmp_path / "pairs.jsonl"  # pairs only: Bradley-Terry, centred by the stored offset
    pairs.write_text("".join(l for l in feedback_file.read_text().splitlines(True) if '"chosen"' in l))
    rec = run("reward-model", {"parent": str(parent), "data": str(pairs), "head": "label", "epochs": 20,
                               "lr": 1e-3, "batch_size": 4, "heldout": 0.0, "threads": 1}, runs / "post")
    assert set(rec.posttrain_ledger) == {"reward_model_train"} and rec.metrics["train_pairwise_accuracy"] >= 0.8
    rm = RewardModel.load(runs / "post" / rec.run_id)
    assert rm.head == "label" and rm.meta["offset"] != 0
    probs = TestbedSource(**SMALL).problems("train", 10, steps=2)
    scores, _ = rm.score(["<bos>" + p.question() for p in probs for _ in (0, 1)],
                         [t for p in probs for t in (p.solution(), p.solution().replace("A:", "A:1"))])
    assert np.mean([s[0] for s in scores]) == pytest.approx(0.5, abs=0.15)  # sigmoid of centred rewards


def test_reward_model_from_testbed_thumbs(parent, runs):
    rec = run("reward-model", {"parent": str(parent), "feedback": "thumbs", "problems": 12, "samples": 2,
                               "threads": 1}, runs / "post")
    assert set(rec.posttrain_ledger) == {"policy_generate", "reward_model_forward"}
    assert rec.metrics["train_labels"] > 0 and rec.metrics["feedback"].startswith("testbed thumbs")


@pytest.mark.parametrize("line, msg", [
    ({"prompt": "q", "chosen": "a"}, 'line 2: missing field "rejected"'),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, 'line 2: field "chosen" must be a non-empty string'),
    ({"prompt": "q", "completion": "a"}, 'line 2: missing field "label"'),
    ({"prompt": "q", "completion": "a", "label": "maybe"}, "line 2: label 'maybe' is not a thumbs-up"),
    ({"prompt": "q", "completion": "a", "label": [1]}, "line 2: label [1] is not a thumbs-up"),
    ({"prompt": "q", "completion": "a", "label": 0.5}, "line 2: label 0.5 is not a thumbs-up"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "line 2: \"chosen\" and \"rejected\" are the same text"),
])
def test_bad_feedback_lines_name_their_line(tmp_path, line, msg):
    from scalelab.posttrain.prefs import read_feedback

    f = tmp_path / "fb.jsonl"
    f.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(InputError, match=re.escape(msg)):
        read_feedback(f)


# ---- online RL --------------------------------------------------------------------------------------
def test_rlvr_ledger_curve_and_kl_switch(parent, digest, runs):
    rec = run("rlvr", {"parent": str(parent), **RL}, runs / "post")
    _lineage(rec, parent, "rlvr", {"policy_generate", "policy_train", "reference_forward"})
    m = rec.metrics
    assert [c["step"] for c in m["curve"]] == [0, 2, 3] and m["samples"] == 3 * 4 * 4
    assert all(0 <= c["greedy_accuracy"] <= 1 for c in m["curve"]) and m["reward_source"] == "verifier"
    assert set(m["accuracy_by_difficulty"]) == {"1", "2", "3"} and "parent_accuracy" in m
    assert rec.reference_id == rec.parent_id
    # without the KL term the reference is run only for the curve's KL estimate, outside the ledger
    free = run("rlvr", {"parent": str(parent), **RL, "kl_coef": 0.0, "algorithm": "rloo"}, runs / "post")
    _lineage(free, parent, "rlvr", {"policy_generate", "policy_train"})
    assert free.metrics["curve"][-1]["kl"] is not None
    assert dir_digest(parent) == digest


def test_rlhf_and_rlaif_count_their_reward_passes(parent, runs, rm):
    _, rm_path = rm
    hf = run("rlhf", {"parent": str(parent), "reward_model": str(rm_path), **RL}, runs / "post")
    _lineage(hf, parent, "rlhf", {"policy_generate", "policy_train", "reference_forward", "reward_model"})
    assert hf.metrics["reward_source"] == "reward-model" and hf.reward == str(rm_path)
    assert all(0 < c["greedy_reward"] < 1 for c in hf.metrics["curve"])
    ai = run("rlaif", {"parent": str(parent), "judge": str(parent), **RL}, runs / "post")
    _lineage(ai, parent, "rlaif", {"policy_generate", "policy_train", "reference_forward", "judge_forward"})
    assert ai.metrics["reward_source"] == "judge-min"


def test_rl_figures_read_every_curve(parent, runs, rm, tmp_path, cli):
    from scalelab.posttrain.rlcurves import rl_table

    _, rm_path = rm
    for kl in (0.0, 0.5):
        run("rlhf", {"parent": str(parent), "reward_model": str(rm_path), **RL, "kl_coef": kl}, runs / "post")
    df = rl_table(runs / "post")
    assert {"rlhf"} <= set(df.technique) and (df.groupby("run_id").x.min() == 0).all()
    r = cli("posttrain", "plot-rl", runs / "post", "--out", tmp_path / "rl.png", "--overopt", tmp_path / "oo.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rl.png").stat().st_size > 10_000 and (tmp_path / "oo.png").stat().st_size > 10_000
    assert "rlhf, KL 0.5" in r.stdout
    r = cli("posttrain", "plot-rl", tmp_path, "--out", tmp_path / "x.png")
    assert r.returncode == 2 and "no rlvr / rlhf / rlaif / rft / dpo records" in r.stderr


def test_a_failing_reward_is_counted_and_the_run_goes_on(parent, runs, monkeypatch):
    from scalelab.posttrain import rl
    from scalelab.rewards import feedback as rewards

    calls = {"n": 0}

    def flaky(p, text):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise ValueError("grader timeout")
        return float(len(text) % 2)

    monkeypatch.setattr(rl, "reward_source", lambda cfg, task=None: rewards.FunctionReward(flaky))
    rec = run("rlvr", {"parent": str(parent), **RL, "seed": 5}, runs / "post")
    assert rec.status == "complete" and rec.metrics["reward_failures"] > 0
    assert "grader timeout" in rec.metrics["reward_errors"][0]


# ---- DPO and RFT ----------------------------------------------------------------------------------
def test_dpo_on_feedback_pairs(parent, digest, runs, feedback_file):
    rec = run("dpo", {"parent": str(parent), "data": str(feedback_file), "batch_size": 4, "curve_problems": 2, **EVAL},
              runs / "post")
    _lineage(rec, parent, "dpo", {"policy_train", "reference_forward"})
    assert [c["round"] for c in rec.metrics["curve"]] == [0, 1, 2]  # before training and after each epoch
    # TRL's DPOTrainer on the same pairs: the same ledger parts, the same passes counted
    trl = run("dpo", {"parent": str(parent), "data": str(feedback_file), "batch_size": 4, "curve_problems": 2,
                      "trainer": "trl", **EVAL}, runs / "post")
    _lineage(trl, parent, "dpo", {"policy_train", "reference_forward"})
    assert trl.posttrain_ledger == pytest.approx(rec.posttrain_ledger) and trl.metrics["trainer"] == "trl"
    assert trl.metrics["train_steps"] == rec.metrics["train_steps"] and math.isfinite(trl.metrics["train_loss"])
    assert 0 <= rec.metrics["heldout_pairwise_accuracy"] <= 1 and rec.metrics["pairs"] > 0
    assert dir_digest(parent) == digest


def test_rft_rounds_verified_and_reward_best(parent, runs, rm):
    _, rm_path = rm
    common = {"parent": str(parent), "rounds": 2, "questions": 8, "samples": 4, "batch_size": 8, "curve_problems": 2,
              **EVAL}
    rec = run("rft", {**common, "keep": "all"}, runs / "post")
    _lineage(rec, parent, "rft-all", {"sampler_generate", "student_train"})
    curve = rec.metrics["curve"]
    assert [c["round"] for c in curve] == [0, 1, 2] and all(0 < c["kept"] <= c["sampled"] == 32 for c in curve[1:])
    # verified: the tiny parent is (almost) never right; a round that keeps nothing trains nothing
    ver = run("rft", {**common, "rounds": 1}, runs / "post")
    assert ver.technique == "rft" and ver.metrics["kept_total"] == sum(c["kept"] for c in ver.metrics["curve"][1:])
    assert ("student_train" in ver.posttrain_ledger) == (ver.metrics["kept_total"] > 0)
    assert ver.metrics["rounds_without_data"] == (1 if ver.metrics["kept_total"] == 0 else 0)
    best = run("rft", {**common, "rounds": 1, "keep": "reward-best", "orm": str(rm_path)}, runs / "post")
    _lineage(best, parent, "rft-reward-best", {"sampler_generate", "sampler_verifier", "student_train"})
    assert best.metrics["curve"][1]["kept"] == 8  # one per question, right or wrong
    search = run("rft", {**common, "rounds": 1, "sampler": "revision", "keep": "all", "samples": 2}, runs / "post")
    _lineage(search, parent, "rft-all", {"sampler_inference", "student_train"})
    assert search.metrics["sampler"] == "revision"


# ---- bad input ------------------------------------------------------------------------------------
def test_bad_input_is_one_line_and_the_parent_is_untouched(parent, digest, runs, tmp_path, cli):
    from scalelab.data.tokenizer import char_tokenizer

    other = tmp_path / "other"
    import shutil

    shutil.copytree(parent / "checkpoint", other / "checkpoint")
    char_tokenizer("0123456789QDA!:= \n+-*abcdefghijklxyz").save_pretrained(other / "checkpoint")
    thumbs = tmp_path / "thumbs.jsonl"
    thumbs.write_text(json.dumps({"prompt": "q", "completion": "a", "label": 1}) + "\n")
    cases = [
        (["rlvr", "--from", parent, "--reference", other], "uses another tokenizer"),
        (["dpo", "--from", parent, "--data", thumbs], "DPO needs preference pairs"),
        (["rft", "--from", parent, "--sampler", "majority"], "returns no solution text"),
        (["rft", "--from", parent, "--keep", "reward-best"], "give --orm RUN"),
        (["rlhf", "--from", parent, "--reward-model", parent], "not a reward model"),
        (["rlvr", "--from", parent, "--set", "group_size=1"], "group_size"),
        (["reward-model", "--from", parent, "--data", tmp_path / "nope.jsonl"], "nope.jsonl: no such file"),
        (["reward-model", "--from", parent, "--problems", "4", "--samples", "2"], "gave no preference pairs"),
    ]
    for args, msg in cases:
        r = cli("posttrain", *args, "--runs-dir", runs / "bad", "--threads", "1")
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert dir_digest(parent) == digest
    with pytest.raises(ConfigError):
        run("rlvr", {"parent": str(parent), "data_steps": [9], **RL}, runs / "post")


def test_compare_pairs_models_on_the_same_problems(parent, runs, cli):
    from scalelab.posttrain.compare_runs import compare

    child = run("rlvr", {"parent": str(parent), **RL}, runs / "post")
    cmp = compare([str(parent), str(runs / "post" / child.run_id)], split="val", problems=6, difficulties=[1, 2])
    d, se, n = cmp.delta(child.run_id, [1, 2])
    base, new = (np.concatenate([cmp.correct[(m, k)] for k in (1, 2)]) for m in cmp.models)
    assert n == base.size == new.size and d == pytest.approx(new.mean() - base.mean())
    r = cli("posttrain", "compare", parent, runs / "post" / child.run_id, "--split", "val", "--problems", "6",
            "--difficulties", "1-2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["base"] == cmp.models[0] and doc["models"][child.run_id]["delta_pooled"][0] == pytest.approx(d)
    r = cli("posttrain", "compare", parent, parent)
    assert r.returncode == 2 and "the same run is given twice" in r.stderr
