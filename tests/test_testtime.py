"""Test-time scaling: estimators against brute force, one conformance test over every registered
strategy, selection logic with oracle verifiers, reward-model runs, evaluation records, the
allocator, and the command line's bad-input paths."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import train_tiny

from scalelab.errors import ConfigError, InputError
from scalelab.tasks.testbed import verify
from scalelab.data.testbed import TestbedSource
from scalelab import passk as est
from scalelab.inference.engine import Completion, Generation
from scalelab.testtime.strategies import STRATEGIES, Context, Options, Outcome, run_strategy
from scalelab.rewards.models import aggregate
from scalelab.tasks.base import split_lines
from scalelab.tasks.testbed import TestbedTask

SMALL = {"max_steps": 2, "max_modulus": 7, "eval_docs": 20}


# ---- fixtures: a tiny trained policy and its reward models ---------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("tt_runs")


@pytest.fixture(scope="module")
def policy(runs):
    """A d2 Llama trained for a few seconds: it writes well-formed (mostly wrong) solutions."""
    return train_tiny(runs, "d2", 60_000, SMALL)


def _train_rm(policy, runs, kind, head="likelihood"):
    from scalelab.rewards.trainer import VerifierConfig, train_verifier

    cfg = VerifierConfig.build(policy=str(policy), kind=kind, head=head, problems=12, samples=3, rollouts=2,
                               epochs=2, batch_size=8, val_problems=4, max_steps=2, threads=1)
    return train_verifier(cfg, runs / "rm")


@pytest.fixture(scope="module")
def orm(policy, runs):
    return _train_rm(policy, runs, "orm")


@pytest.fixture(scope="module")
def prm(policy, runs):
    return _train_rm(policy, runs, "prm")


@pytest.fixture(scope="module")
def ctx(policy, orm, prm, runs):
    from scalelab.inference.engine import Engine
    from scalelab.rewards.models import RewardModel

    eng = Engine.load(policy)
    rms = {k: RewardModel.load(runs / "rm" / r.run_id, meter=eng.meter) for k, r in (("orm", orm), ("prm", prm))}
    return Context(engine=eng, orm=rms["orm"], prm=rms["prm"], options=Options(seed=3, draws=200))


def _problems(n=3, steps=2):
    return TestbedSource(**SMALL).problems("test", n, steps=steps, seed=1)


# ---- estimators -------------------------------------------------------------------------------------
def _subsets(n, k):
    return list(itertools.combinations(range(n), k))


def test_pass_at_k_and_best_of_k_equal_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 8))
        correct = rng.random(n) < 0.4
        scores = rng.integers(0, 3, n).astype(float)  # ties on purpose
        for k in range(1, n + 1):
            subs = _subsets(n, k)
            brute_pass = np.mean([correct[list(s)].any() for s in subs])
            assert est.pass_at_k(n, int(correct.sum()), k) == pytest.approx(brute_pass, abs=1e-12)
            brute_best = np.mean([correct[list(s)][scores[list(s)] == scores[list(s)].max()].mean() for s in subs])
            assert est.best_of_k(scores, correct, k) == pytest.approx(brute_best, abs=1e-12)


def test_vote_estimators_match_enumeration():
    rng = np.random.default_rng(1)
    answers = np.array([3, 3, 5, 5, 5, 7, est.NO_ANSWER, 3])
    correct = (answers == 3).astype(float) * np.array([1, 0, 1, 1, 1, 1, 1, 1])  # one right answer, wrong steps
    scores = rng.random(answers.size)
    for k in (1, 3, 5, 8):
        maj, wt = [], []
        for s in _subsets(answers.size, k):
            a, c, w = answers[list(s)], correct[list(s)], scores[list(s)]
            votes = {v: (a == v).sum() for v in set(a) if v != est.NO_ANSWER}
            sums = {v: w[a == v].sum() for v in votes}
            if not votes:
                maj.append(0.0)
                wt.append(0.0)
                continue
            top = [v for v in votes if votes[v] == max(votes.values())]
            maj.append(np.mean([c[a == v].mean() for v in top]))
            win = max(sums, key=sums.get)
            wt.append(c[a == win][np.argmax(w[a == win])])
        got_m = est.vote_at_k(answers, correct, k, draws=20000, rng=np.random.default_rng(k))
        got_w = est.vote_at_k(answers, correct, k, scores=scores, draws=20000, rng=np.random.default_rng(k))
        assert got_m == pytest.approx(np.mean(maj), abs=0.015)
        assert got_w == pytest.approx(np.mean(wt), abs=0.015)


# ---- the conformance test over every registered strategy ------------------------------------------
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_conformance(name, ctx):
    s = STRATEGIES[name]
    problems = _problems()
    ctx.pools.clear()  # draw afresh, so that the FLOPs spent are this strategy's
    before = ctx.engine.meter.snapshot()
    outs = {n: run_strategy(name, problems, n, ctx) for n in (1, 4)}
    spent = ctx.engine.meter.since(before)
    task = TestbedTask(direct=s.direct)
    for n, o in outs.items():
        assert len(o) == len(problems) and all(isinstance(x, Outcome) for x in o)
        for x, p in zip(o, problems):
            assert 0.0 <= x.correct <= x.answer_correct + 1e-12 <= 1.0 + 1e-12
            assert x.flops_inference > 0 and x.tokens > 0
            assert (x.flops_verifier > 0) == bool(s.needs), (name, x.flops_verifier)
            if x.text is not None:  # strategies that return one solution: it is the one scored
                assert float(task.verify(p, x.text).correct) == x.correct
    assert spent["inference"] > 0 and (spent["verifier"] > 0) == bool(s.needs)
    if s.kind == "single":
        assert [x.correct for x in outs[1]] == [x.correct for x in outs[4]]
    else:  # a bigger budget costs more
        assert sum(x.flops_inference + x.flops_verifier for x in outs[4]) > sum(
            x.flops_inference + x.flops_verifier for x in outs[1]) or name == "revision"
    again = run_strategy(name, problems, 4, ctx)  # seeded: the same answers again
    assert [x.correct for x in again] == [x.correct for x in outs[4]]
    with pytest.raises(ConfigError, match="positive integer"):
        run_strategy(name, problems, 0, ctx)


def test_unknown_strategy_and_missing_reward_model(ctx):
    with pytest.raises(InputError, match="known strategies: direct, cot, coverage, majority"):
        run_strategy("best_of_nn", _problems(), 4, ctx)
    bare = Context(engine=ctx.engine)
    with pytest.raises(InputError, match="needs an ORM"):
        run_strategy("best_of_n", _problems(), 4, bare)
    with pytest.raises(InputError, match="needs a PRM"):
        run_strategy("beam_search", _problems(), 4, bare)


# ---- selection logic with scripted samples and oracle verifiers --------------------------------------
class ScriptedEngine:
    """Stands in for Engine.generate: a sample is the right solution with probability q, else the
    same solution with a wrong last step and answer drawn uniformly from the wrong values."""

    def __init__(self, problems, q, seed=0):
        self.prob = {TestbedTask().prompt(p): p for p in problems}
        self.q, self.rng = q, np.random.default_rng(seed)

    def generate(self, prompts, n, params, progress=None):
        comps, dec = [], []
        for pr in prompts:
            p = self.prob[pr]
            row = []
            for _ in range(n):
                if self.rng.random() < self.q:
                    text = p.solution()
                else:
                    wrong = (p.answer + 1 + int(self.rng.integers(0, p.modulus - 1))) % p.modulus
                    lines = split_lines(p.solution())
                    text = "".join(lines[:-2]) + p.step_line(p.steps - 1, wrong) + f"A:{wrong}\n"
                row.append(Completion(text, [0] * len(text), "eos"))
            comps.append(row)
            dec.append([10.0 * len(c.text) for c in row])
        return Generation(comps, [5] * len(prompts), [100.0] * len(prompts), dec)


class OracleORM:
    def __init__(self, problems):
        self.prob = {TestbedTask().prompt(p): p for p in problems}

    def score(self, prompts, texts):
        return [[float(verify(self.prob[p], t).correct)] for p, t in zip(prompts, texts)], [7.0] * len(texts)


def test_best_of_n_with_an_oracle_equals_coverage_and_voting_improves_with_n():
    problems = TestbedSource().problems("test", 40, steps=3, modulus=range(11, 30), seed=2)
    ctx = Context(engine=ScriptedEngine(problems, q=0.45), orm=OracleORM(problems), options=Options(draws=3000),
                  pool_size=16)
    acc = {name: {n: np.mean([o.correct for o in run_strategy(name, problems, n, ctx)]) for n in (1, 2, 4, 16)}
           for name in ("coverage", "best_of_n", "weighted_best_of_n", "majority")}
    for n in (1, 2, 4, 16):
        assert acc["best_of_n"][n] == pytest.approx(acc["coverage"][n], abs=1e-12)
        assert acc["weighted_best_of_n"][n] == pytest.approx(acc["coverage"][n], abs=0.02)
    # wrong answers scatter over many values, so the right one wins the vote more often with more samples
    assert acc["majority"][1] == pytest.approx(acc["coverage"][1], abs=0.02)
    assert acc["majority"][16] > acc["majority"][1] + 0.2
    # FLOPs of n samples: one prefill plus n times the mean decode, and n verifier passes
    o = run_strategy("best_of_n", problems[:1], 4, ctx)[0]
    pool = ctx.pools[tuple(problems[:1])]  # the pool was drawn once, at 16, for every budget
    assert pool[0].N == 16 and o.flops_verifier == 4 * 7.0
    assert o.flops_inference == pytest.approx(100.0 + 4 * pool[0].flops_decode.mean())


def test_tree_search_selection_rules():
    from scalelab.testtime.search import _doubt, _final, _select

    rows = [{"p": 0, "g": g, "text": f"t{i}", "scores": [s], "finished": f}
            for i, (g, s, f) in enumerate([(0, 0.9, False), (0, 0.2, False), (1, 0.5, False), (1, 0.7, True)])]
    done: dict = {}
    from collections import defaultdict

    done = defaultdict(list)
    assert _select(rows, done, "dvts", 2, 2, "last") == [0, 0]  # subtree 1's best has finished
    assert [r["text"] for r in done[0]] == ["t3"]
    done = defaultdict(list)
    assert _select(rows, done, "beam", 2, 2, "last") == [0, 0]  # one finished + the best unfinished
    assert aggregate([0.9, 0.2, 0.5], "min") == 0.2 and aggregate([0.5, 0.5], "prod") == 0.25
    p = _problems(1)[0]
    bad = (p.answer + 1) % p.modulus
    right = p.solution()
    wrong = "".join(split_lines(right)[:-2]) + p.step_line(p.steps - 1, bad) + f"A:{bad}\n"
    fixed = p.solution({0: (p.values[1] + 1) % p.modulus})  # a wrong step, corrected: right
    cands = [{"scores": [0.9], "text": wrong}, {"scores": [0.6], "text": fixed}, {"scores": [0.5], "text": right}]
    assert _final(cands, "best", "last", TestbedTask(), p) == wrong  # the single highest score
    assert _final(cands, "weighted", "last", TestbedTask(), p) == fixed  # answer sums 1.1 > 0.9; its best
    # budget forcing reopens the step whose result the model found least likely; never a correction
    tok = TestbedSource().tokenizer
    text = "a:1+2=3\n!a:1+2=4\nb:4*2=1\nA:1\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    lps = [0.0] * len(ids)
    for ch, p_ in (("3", 0.2), ("4", 0.01), ("1", 0.7)):  # the result digit of each of the three lines
        lps[text.index("=" + ch) + 1] = math.log(p_)
    texts = [tok.decode([i]) for i in range(len(tok))]
    bang = tok.convert_tokens_to_ids("!")
    after_b = text.index("A:1")
    assert _doubt(ids, lps, texts, bang, 0.1) == after_b  # line 1 is corrected already, line 2 is a correction
    assert _doubt(ids, lps, texts, bang, 0.5) is None  # doubt about line 3 is only 0.3


# ---- reward-model runs ----------------------------------------------------------------------------
def test_reward_model_runs_carry_lineage_and_ledger(policy, orm, prm, runs):
    from scalelab.records import read_record
    from scalelab.rewards.models import RewardModel

    parent = read_record(policy)
    for rec, kind in ((orm, "orm"), (prm, "prm")):
        assert rec.status == "complete" and rec.parent_id == parent.run_id and rec.phase == "posttrain"
        assert rec.technique == f"reward-model-{kind}"
        assert rec.flops["pretrain"] == parent.flops["pretrain"]
        assert rec.flops["inference"] > 0 and rec.flops["posttrain"] > 0
        ck = runs / "rm" / rec.run_id / "checkpoint"
        assert (ck / "model.safetensors").is_file() and json.loads((ck / "reward.json").read_text())["kind"] == kind
        assert 0 <= rec.metrics["val_accuracy_best_of_samples"] <= 1 and math.isfinite(rec.metrics["train_loss"])
    # MC rollouts cost inference FLOPs: the PRM's labelling spent more than the ORM's sampling
    assert prm.flops["inference"] > orm.flops["inference"]
    assert 0 <= prm.metrics["label_agreement"] <= 1 and orm.metrics["label_agreement"] is None
    rm = RewardModel.load(runs / "rm" / prm.run_id)
    p = _problems(1)[0]
    text = p.solution()
    scores, flops = rm.score([TestbedTask().prompt(p)], [text])
    assert len(scores[0]) == len(split_lines(text)) and all(0 < s < 1 for s in scores[0]) and flops[0] > 0
    # the PRM is causal: scoring a prefix gives the same step scores as inside the whole solution
    pre, _ = rm.score([TestbedTask().prompt(p)], ["".join(split_lines(text)[:2])])
    assert pre[0] == pytest.approx(scores[0][:2], abs=1e-5)
    # the same run again is found, not retrained
    assert _train_rm(policy, runs, "orm").created_at == orm.created_at


def test_reward_model_with_another_tokenizer_is_refused(policy, orm, runs, ctx, tmp_path):
    import shutil

    from scalelab.data.tokenizer import char_tokenizer
    from scalelab.rewards.models import RewardModel

    other = tmp_path / "other"
    shutil.copytree(runs / "rm" / orm.run_id / "checkpoint", other)
    tok = char_tokenizer("0123456789QDA!:= \n+-*abcdefghijklxyz")  # three more characters
    tok.save_pretrained(other)
    with pytest.raises(InputError, match="built for another tokenizer"):
        RewardModel.load(other).check_tokenizer(ctx.engine.tokenizer)
    with pytest.raises(InputError, match="not a reward model"):
        RewardModel.load(policy)


@pytest.mark.parametrize("head", ["likelihood", "label"])
def test_line_by_line_scores_equal_whole_solution_scores(policy, runs, head):
    """The search path (a reward session fed one line at a time) and the batch path agree."""
    from scalelab.rewards.models import RewardModel

    rec = _train_rm(policy, runs, "prm", head)
    assert rec.metrics["head"] == head
    rm = RewardModel.load(runs / "rm" / rec.run_id)
    task = TestbedTask()
    problems = _problems(2)
    texts = [problems[0].solution(), "a:1+1=2\nb:44==\nA:9\n"]
    whole, _ = rm.score([task.prompt(p) for p in problems], texts)
    sess = rm.session([task.prompt(p) for p in problems])
    lines = [split_lines(t) for t in texts]
    steps = [sess.add_lines([ls[i] if i < len(ls) else "" for ls in lines]) for i in range(max(map(len, lines)))]
    for r in range(2):
        assert [steps[i][r] for i in range(len(lines[r]))] == pytest.approx(whole[r], abs=1e-5)
    assert math.isnan(steps[-1][0]) or len(lines[0]) == len(steps)


def test_likelihood_features():
    from scalelab.rewards.models import likelihood_features

    lp = [-0.1, -2.0, -0.5, -0.3, -1.0]
    f = likelihood_features("prm", lp, [1, 4])  # lines: tokens 0-1 and 2-4
    assert np.allclose(f, [[-2.0, -2.1, -2.0, -2.1], [-1.0, -1.8, -2.0, -3.9]])
    assert np.allclose(likelihood_features("orm", lp, [4]), [[-2.0, -3.9, -0.78]])


# ---- evaluation records, laws and the command line ------------------------------------------------
def test_evaluation_writes_one_record_per_point_and_resumes(policy, orm, runs):
    from scalelab.laws import fit_table
    from scalelab.records import read_record
    from scalelab.tables import load_runs
    from scalelab.testtime.evaluate import TesttimeConfig, evaluate

    cfg = TesttimeConfig.build(model=str(policy), strategies=["cot", "coverage", "majority", "best_of_n"],
                               n=[1, 2, 4], difficulties=[1, 2], problems=4, orm=str(runs / "rm" / orm.run_id),
                               threads=1, draws=100)
    out = runs / "eval"
    recs = evaluate(cfg, out)
    parent = read_record(policy)
    assert len(recs) == 2 * (1 + 3 * 3)
    for r in recs:
        m = r.metrics
        assert r.phase == "testtime" and r.parent_id == parent.run_id and r.flops["pretrain"] == parent.flops["pretrain"]
        assert r.technique in cfg.strategies and m["n"] in (1, 2, 4) and 0 <= m["accuracy"] <= 1
        assert 0 < m["chance"] < 1 and r.flops["inference"] > 0
        assert (r.flops["verifier"] > 0) == (r.technique == "best_of_n")
        assert m["flops_per_question"] == pytest.approx((r.flops["inference"] + r.flops["verifier"]) / 4)
    cov = sorted((r for r in recs if r.technique == "coverage" and r.metrics["steps"] == 1), key=lambda r: r.metrics["n"])
    assert [r.metrics["accuracy"] for r in cov] == sorted(r.metrics["accuracy"] for r in cov)  # pass@k never falls
    assert cov[0].metrics["pool_n"] == 4 and len(cov[0].metrics["pool_correct"]) == 4
    again = evaluate(cfg, out)  # every point is on disk: nothing is recomputed
    assert [r.created_at for r in again] == [r.created_at for r in recs]
    assert len(load_runs(out).records) == len(recs)
    pid = parent.run_id
    law, prep = fit_table(out / pid / "coverage" / "d1", "coverage", bootstrap=0)
    assert law.n_points_ == 3 and set(law.params_) == {"alpha", "beta", "a", "b"}
    with pytest.raises(InputError, match="test-time curves"):
        fit_table(out, "testtime", bootstrap=0)


def test_allocation_report_and_records(policy, orm, runs):
    from scalelab.tables import load_runs
    from scalelab.testtime.allocate import AllocateConfig, _uniform_flops_at, run_allocation

    cfg = AllocateConfig.build(model=str(policy), orm=str(runs / "rm" / orm.run_id), difficulties=[1, 2], problems=4,
                               n_max=8, probe=2, orders=3, draws=50, threads=1)
    lines = run_allocation(cfg, runs / "alloc")
    text = "\n".join(lines)
    assert "predicted difficulty" in text and "compute-optimal strategy" in text and "adaptive allocation" in text
    assert "cap per predicted-difficulty bin" in text
    recs = load_runs(runs / "alloc").records
    caps = {min(c, cfg.n_max) for c in cfg.caps}
    binned = [r for r in recs if r.metrics["stop"].startswith("verifier-bins")]
    assert len(recs) - len(binned) == (len(cfg.taus) + len(cfg.confidences)) * len(caps)
    assert all(len(r.metrics["bin_caps"]) == 2 and r.metrics["n"] >= cfg.probe for r in binned)
    assert all(r.technique == "adaptive_weighted_best_of_n" for r in recs)
    assert all(1 <= r.metrics["n"] <= r.metrics["cap"] and r.flops["verifier"] > 0 for r in recs)
    # a cap of one sample per question is uniform allocation at n = 1, whatever the rule
    from scalelab.testtime.allocate import _adaptive

    pools = [_toy_pool()]
    got, used = _adaptive(pools, "verifier", 0.99, 1, cfg, np.random.default_rng(0))
    assert used[0] == 1 and got[0] == pytest.approx(pools[0].correct.mean(), abs=0.25)
    # stopping as soon as the verifier accepts: the accepted sample is the (only) right one
    got, used = _adaptive(pools, "verifier", 0.5, 8, cfg, np.random.default_rng(0))
    assert got[0] == 1.0 and 1 <= used[0] <= 8
    assert _uniform_flops_at(np.array([0.1, 0.3, 0.5]), np.array([1.0, 10.0, 100.0]), 0.4) == pytest.approx(10 ** 1.5)
    assert _uniform_flops_at(np.array([0.1, 0.3]), np.array([1.0, 10.0]), 0.4) is None
    # the pool is drawn once and cached: binning by the probe's best ORM score and marginal-gain
    # stopping read it again without sampling
    assert len(list((runs / "alloc").glob("*/allocation/pool-*.npz"))) == 1
    best = AllocateConfig.build(**{**cfg.model_dump(), "select": "best", "predictor": "orm", "gain_bins": 4})
    again = "\n".join(run_allocation(best, runs / "alloc"))
    assert "bins of best ORM score" in again and "marginal-gain stopping" in again
    assert len(list((runs / "alloc").glob("*/allocation/pool-*.npz"))) == 1
    gain = [r for r in load_runs(runs / "alloc").records if r.metrics["stop"].startswith("gain-k")]
    assert gain, again
    assert all(r.technique == "adaptive_best_of_n" and 1 <= r.metrics["n"] <= cfg.n_max for r in gain)
    assert all(r.metrics["flops_per_question"] == pytest.approx((r.flops["inference"] + r.flops["verifier"]) / 8)
               for r in gain)
    with pytest.raises(ConfigError, match="predictor=orm needs --orm"):
        run_allocation(AllocateConfig.build(**{**cfg.model_dump(), "orm": None, "predictor": "orm"}), runs / "alloc")
    # allocation records mix difficulties: the accuracy-vs-FLOPs figure leaves them out
    from scalelab.testtime.plots import plot_accuracy_vs_flops

    with pytest.raises(InputError, match="no test-time records"):
        plot_accuracy_vs_flops(runs / "alloc", runs / "fig.png")


def _toy_pool():
    from scalelab.testtime.strategies import Pool

    correct = np.array([0, 0, 1, 0, 0, 0, 0, 0], float)
    return Pool(texts=[""] * 8, correct=correct, answer_correct=correct, answers=np.array([3, 4, 5, 6, 7, 3, 4, 6]),
                flops_prefill=1.0, flops_decode=np.ones(8), tokens=np.ones(8), orm=correct * 0.9 + 0.05,
                orm_flops=np.ones(8))


def _cli(capsys, *args):
    from scalelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(map(str, args)))
    err = capsys.readouterr().err.strip()
    return e.value.code, err


def test_cli_bad_input_is_one_line_exit_2(capsys, policy, orm, runs, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from scalelab.data.tokenizer import char_tokenizer

    other = tmp_path / "not_testbed"  # a causal LM whose tokenizer knows three letters only
    tok = char_tokenizer("abc")
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(other)
    tok.save_pretrained(other)
    capsys.readouterr()  # the progress bar of save_pretrained is not the command's output
    cases = [
        (["testtime", "--model", other], "cannot encode the testbed's characters"),
        (["testtime", "train-verifier", "--policy", other, "--kind", "orm"], "cannot encode the testbed's characters"),
        (["testtime", "--model", tmp_path / "missing"], "no such run or checkpoint"),
        (["testtime", "--model", policy, "--strategies", "cot,majorty"], "known strategies: direct, cot"),
        (["testtime", "--model", policy, "--n", "0,4"], "positive integer"),
        (["testtime", "--model", policy, "--strategies", "best_of_n"], "need --orm"),
        (["testtime", "--model", policy, "--strategies", "majority", "--prm", runs / "rm" / orm.run_id],
         "is an ORM, not a PRM"),
        (["testtime", "train-verifier", "--policy", policy, "--kind", "crm"], "choose orm or prm"),
        (["testtime", "train-verifier", "--policy", policy, "--kind", "orm", "--head", "scalar"], "choose likelihood or label"),
        (["testtime"], "--model RUN is required"),
    ]
    for args, message in cases:
        code, err = _cli(capsys, *args)
        assert code == 2, (args, err)
        assert err.startswith("error:") and message in err and "\n" not in err, err
