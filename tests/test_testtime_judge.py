"""The pieces of issue 4's acceptance protocol: reward models built from a judge (`train-verifier
--judge RUN`: samples from the policy, scores from another model with the same tokenizer, its
weights, log-probabilities and FLOPs), independent sample pools on the same problems
(`sample_seed`), and strategies against a baseline within a FLOPs budget (`compare`)."""
from __future__ import annotations

import json

import pytest

from scalelab.errors import ConfigError
from scalelab.data.testbed import TestbedSource
from scalelab.tasks.testbed import TestbedTask

SMALL = {"max_steps": 2, "max_modulus": 7, "eval_docs": 20}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("judge_runs")


def _train(runs, model, tokens):
    from scalelab.pretrain.train import TrainConfig, train

    cfg = TrainConfig.build(model=model, source="testbed", seq_len=64, batch_size=16, tokens=tokens, lr=0.01,
                            threads=1, eval_every=10**6, source_options=SMALL)
    rec = train(cfg, runs)
    assert rec.status == "complete"
    return runs / rec.run_id


@pytest.fixture(scope="module")
def policy(runs):
    return _train(runs, "d1", 20_000)


@pytest.fixture(scope="module")
def judge(runs):
    return _train(runs, "d2", 40_000)  # another size, so its FLOPs per token differ from the policy's


def _rm(policy, runs, kind="orm", judge=None, head="likelihood"):
    from scalelab.rewards.trainer import VerifierConfig, train_verifier

    cfg = VerifierConfig.build(policy=str(policy), judge=str(judge) if judge else None, kind=kind, head=head,
                               problems=12, samples=3, rollouts=2, epochs=1, batch_size=8, val_problems=4,
                               max_steps=2, threads=1)
    return train_verifier(cfg, runs / "rm")


def test_judge_reward_model_reads_the_judge(policy, judge, runs):
    from safetensors.torch import load_file

    from scalelab.records import read_record
    from scalelab.inference.engine import Engine
    from scalelab.rewards.models import RewardModel, likelihood_features, token_logprobs

    rec = _rm(policy, runs, judge=judge)
    own = _rm(policy, runs)
    prec, jrec = read_record(policy), read_record(judge)
    assert rec.parent_id == prec.run_id and rec.metrics["judge"] == jrec.run_id and own.metrics["judge"] is None
    assert rec.run_id != own.run_id and rec.flops["pretrain"] == prec.flops["pretrain"]
    assert rec.metrics["judge_flops"] == jrec.flops  # the judge's own ledger, kept apart from the policy's
    ck = runs / "rm" / rec.run_id / "checkpoint"
    assert json.loads((ck / "reward.json").read_text())["judge"] == jrec.run_id
    mine, theirs = load_file(ck / "model.safetensors"), load_file(judge / "checkpoint" / "model.safetensors")
    assert mine.keys() == theirs.keys() and all((mine[k] == theirs[k]).all() for k in mine)
    # scores are the logistic head on the judge's log-probabilities, and cost the judge's FLOPs
    rm = RewardModel.load(ck)
    j = Engine.load(judge)
    p = TestbedSource(**SMALL).problems("test", 1, steps=2, seed=1)[0]
    prompt, text = TestbedTask().prompt(p), p.solution()
    scores, flops = rm.score([prompt], [text])
    lps, jflops = token_logprobs(j, [prompt], [text])
    f = likelihood_features("orm", lps[0], rm.query_positions(j.encode(text)))
    assert scores[0] == pytest.approx(rm._squash(f).tolist(), abs=1e-6)
    assert flops == pytest.approx(jflops) and rm.engine.flop_model.body == j.flop_model.body
    assert rm.engine.flop_model.body != Engine.load(policy).flop_model.body
    assert _rm(policy, runs, judge=judge).created_at == rec.created_at  # found again, not retrained


def test_judge_label_head_starts_from_the_judge(policy, judge, runs):
    from scalelab.records import read_record
    from scalelab.rewards.models import RewardModel

    rec = _rm(policy, runs, kind="prm", judge=judge, head="label")
    rm = RewardModel.load(runs / "rm" / rec.run_id)
    assert rec.metrics["judge"] == read_record(judge).run_id and rm.head == "label" and rm.kind == "prm"
    assert rm.engine.model.config.num_hidden_layers == 2  # d2: the judge's shape, not the policy's (d1)
    assert rec.flops["posttrain"] > 0


def test_judge_with_another_tokenizer_is_refused(policy, judge, runs, tmp_path, capsys):
    import shutil

    from scalelab.cli import main
    from scalelab.data.tokenizer import char_tokenizer

    other = tmp_path / "other"
    shutil.copytree(judge / "checkpoint", other)
    char_tokenizer("0123456789QDA!:= \n+-*abcdefghijklxyz").save_pretrained(other)  # three more characters
    with pytest.raises(ConfigError, match="another tokenizer than the policy"):
        _rm(policy, runs, judge=other)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["testtime", "train-verifier", "--policy", str(policy), "--kind", "orm", "--judge", str(other),
              "--problems", "4", "--samples", "2", "--runs-dir", str(tmp_path / "rm")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error:") and "another tokenizer" in err and "\n" not in err


def test_prm_labels_of_an_empty_sample(policy):
    """A sample that ends at once (<eos>) has no line: no label, no truth (the two stay aligned)."""
    from scalelab.inference.engine import Engine
    from scalelab.rewards.trainer import VerifierConfig, _label_prm

    p = TestbedSource(**SMALL).problems("train", 1, steps=2, seed=1)[0]
    cfg = VerifierConfig.build(policy=str(policy), kind="prm", rollouts=2)
    labels, truth = _label_prm(Engine.load(policy), TestbedTask(), [p], [["", p.solution()]], cfg, None)
    assert labels[0][0] == [] and truth[0][0] == []
    assert len(labels[0][1]) == len(truth[0][1]) == 3 and labels[0][1][-1] == 1.0 and all(truth[0][1])


def test_sample_seed_draws_another_pool_on_the_same_problems(policy, tmp_path):
    from scalelab.tables import load_runs
    from scalelab.testtime.evaluate import TesttimeConfig, _options, evaluate

    recs = {}
    for seed in (None, 9):
        cfg = TesttimeConfig.build(model=str(policy), strategies=["coverage"], n=[4], difficulties=[2], problems=3,
                                   sample_seed=seed, threads=1, draws=10)
        assert _options(cfg).seed == (0 if seed is None else 9)
        recs[seed] = evaluate(cfg, tmp_path)[0]
    assert recs[None].run_id != recs[9].run_id and len(load_runs(tmp_path).records) == 2
    assert recs[9].config["sample_seed"] == 9 and recs[9].config["seed"] == recs[None].config["seed"] == 0


def _point(root, technique, n, flops, per_problem, seed=0, kind="parallel", steps=3):
    from scalelab.records import RunRecord, write_record

    rec = RunRecord(run_id=f"{technique}-d{steps}-n{n}-s{seed}", parent_id="pol", phase="testtime", technique=technique,
                    task="testbed",
                    config={"seed": seed, "problems": len(per_problem), "split": "test", "modulus": None})
    rec.complete(n=n, steps=steps, kind=kind, flops_per_question=flops, accuracy=sum(per_problem) / len(per_problem),
                 per_problem=per_problem)
    write_record(root / rec.run_id, rec)


def test_compare_at_budget_pairs_problems(tmp_path, capsys):
    from scalelab.cli import main
    from scalelab.errors import InputError
    from scalelab.testtime.compare_strategies import compare_at_budget

    _point(tmp_path, "cot", 1, 10.0, [1, 0, 0, 1], kind="single")
    _point(tmp_path, "majority", 16, 100.0, [1, 0, 0, 0])
    _point(tmp_path, "best_of_n", 2, 60.0, [1, 1, 0, 1])   # within the budget of majority at n = 16
    _point(tmp_path, "best_of_n", 4, 120.0, [1, 1, 1, 1])  # over it
    rows = compare_at_budget(tmp_path, baseline="cot", budget=("majority", 16), strategies=["best_of_n"])
    assert len(rows) == 1
    r = rows[0]
    assert r["n"] == 2 and r["budget_flops"] == 100.0 and r["gap"] == pytest.approx(0.25)
    assert r["gap_se"] == pytest.approx(0.25)  # differences [0, 1, 0, 0]: sd 0.5 over sqrt(4)
    assert r["accuracy_se"] == pytest.approx(0.25) and r["baseline"] == 0.5
    code = None
    try:
        main(["testtime", "compare", str(tmp_path), "--strategies", "best_of_n"])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr().out
    assert code in (None, 0) and "best_of_n" in out and "+25.0pt" in out
    _point(tmp_path, "weighted_best_of_n", 2, 50.0, [1, 1, 0, 0], seed=4)  # other problems: refused
    with pytest.raises(InputError, match="different problems"):
        compare_at_budget(tmp_path)


def test_beam_search_prunes_a_badly_scored_finished_row():
    """A row that writes its answer line early but scores low does not end the beam (it did, and beam
    search then fell far below DVTS); with one beam the rule is DVTS's."""
    from collections import defaultdict

    from scalelab.testtime.search import _select

    rows = [{"p": 0, "g": 0, "text": t, "scores": [s], "finished": f}
            for t, s, f in (("good", 0.9, False), ("early", 0.2, True), ("meh", 0.5, False))]
    for mode in ("beam", "dvts"):
        done = defaultdict(list)
        assert _select(rows, done, mode, 1, 3, "last") == [0, 0, 0] and not done[0]
    rows[1]["scores"] = [0.95]  # now the finished row is the best: it is the candidate, the search ends
    done = defaultdict(list)
    assert _select(rows, done, "beam", 1, 3, "last") == [] and [r["text"] for r in done[0]] == ["early"]


def test_a_band_of_moduli(policy, tmp_path):
    from scalelab.testtime.allocate import AllocateConfig
    from scalelab.testtime.evaluate import TesttimeConfig, evaluate

    cfg = TesttimeConfig.build(model=str(policy), strategies=["cot"], difficulties=[2], problems=4, modulus=[5, 7],
                               threads=1)
    rec = evaluate(cfg, tmp_path)[0]
    assert rec.config["modulus"] == [5, 7] and rec.metrics["problems"] == 4
    chance = {5: 5.0 ** -2, 7: 7.0 ** -2}  # the mean chance shows which moduli were drawn
    assert min(chance.values()) <= rec.metrics["chance"] <= max(chance.values())
    for bad in ([1, 5], []):
        with pytest.raises(ConfigError, match="moduli are integers"):
            TesttimeConfig.build(model="x", modulus=bad)
    assert AllocateConfig.build(model="x", modulus=[5, 7]).modulus == [5, 7]


def test_allocation_best_of_n_picks_the_top_score():
    """select=best: the answer is the top-scored sample, not the answer with the largest score sum."""
    import numpy as np

    from scalelab.testtime.allocate import AllocateConfig, _adaptive, _choose
    from scalelab.testtime.strategies import Pool

    answers = np.array([3, 3, 3, 5])
    correct = np.array([0, 0, 0, 1], float)
    scores = np.array([0.4, 0.4, 0.4, 0.9])  # three wrong samples outvote the right one by their sum
    assert _choose(answers, correct, scores) == 0.0 and _choose(answers, correct, scores, "best") == 1.0
    pool = Pool(texts=[""] * 4, correct=correct, answer_correct=correct, answers=answers, flops_prefill=1.0,
                flops_decode=np.ones(4), tokens=np.ones(4), orm=scores, orm_flops=np.ones(4))
    cfg = AllocateConfig.build(model="x", select="best", orders=50)
    got, used = _adaptive([pool], "verifier", 0.95, 4, cfg, np.random.default_rng(0))  # never accepts: all 4
    assert used[0] == 4 and got[0] == 1.0


def test_bin_caps_spend_nothing_past_the_probe_on_hopeless_questions(tmp_path):
    """Bin 0 is never solved, bin 1 is solved by about half its samples: the cheapest caps that match
    uniform best-of-8 stop bin 0 at the probe, and cost less than uniform best-of-8."""
    import numpy as np

    from scalelab.testtime.allocate import AllocateConfig, _bin_caps
    from scalelab.testtime.strategies import Pool

    rng = np.random.default_rng(0)
    pools, bins = [], []
    for q in range(40):
        hard = q % 2 == 0
        correct = np.zeros(16) if hard else (rng.random(16) < 0.5).astype(float)
        scores = np.where(correct > 0, 0.95, 0.1)
        pools.append(Pool(texts=[""] * 16, correct=correct, answer_correct=correct, answers=np.arange(16),
                          flops_prefill=0.0, flops_decode=np.ones(16), tokens=np.ones(16), orm=scores,
                          orm_flops=np.zeros(16)))
        bins.append(0 if hard else 1)
    cfg = AllocateConfig.build(model="x", n_max=16, probe=2, caps=[2, 4, 8, 16], confidences=[0.9], orders=5,
                               select="best")
    uni_k = [1, 2, 4, 8, 16]
    uni_q = np.array([[est_best(pl, k) for pl in pools] for k in uni_k])
    uni_flops = np.array([float(k) for k in uni_k])
    lines = _bin_caps(cfg, tmp_path, None, "toy", "best_of_n", pools, np.array(bins), (np.arange(40) // 2) % 2,
                      np.random.default_rng(1), np.zeros(40), np.ones(40), np.zeros(40), uni_k, uni_q,
                      uni_q.mean(1), uni_flops)
    row = next(ln for ln in lines if ln.split()[:2] == ["0.9", "8"]).split()
    assert row[2].startswith("2,") and row[4].startswith("2,"), row  # bin 0 stops at the probe, in both halves
    assert float(row[5]) < 8 and float(row[-1][:-1]) > 1.5  # fewer samples than uniform best-of-8, and cheaper


def est_best(pool, k):
    from scalelab import passk as est
    return est.best_of_k(pool.orm, pool.correct, k)


def test_predict_pooled_fits_the_mean_curve(tmp_path):
    from scalelab.testtime.extrapolate import predict_curves

    law = {3: lambda n: 0.6 - 0.4 * n ** -0.5, 4: lambda n: 0.4 - 0.3 * n ** -0.5}  # exact test-time laws
    for d, f in law.items():
        for n in (1, 2, 4, 8):
            _point(tmp_path / "small", "majority", n, 10.0 * n, [f(n)], steps=d)
        _point(tmp_path / "big", "majority", 64, 640.0, [f(64)], steps=d)
    _point(tmp_path / "small", "majority", 1, 10.0, [0.0], steps=5)  # one point: left out of the pool below
    rows = predict_curves(tmp_path / "small", against=tmp_path / "big", pooled=True, difficulties=[3, 4])
    assert len(rows) == 1 and rows[0]["steps"] == "pooled" and rows[0]["points"] == 4
    assert rows[0]["observed"] == pytest.approx((law[3](64) + law[4](64)) / 2)
    assert abs(rows[0]["error"]) < 1e-3  # the mean of two laws with one exponent is that law
    assert {r["steps"] for r in predict_curves(tmp_path / "small", against=tmp_path / "big", difficulties=[4])} == {4}
