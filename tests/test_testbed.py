import collections
import math
import random

import numpy as np
import pytest

from scalelab.errors import ConfigError
from scalelab.tasks.testbed import ALPHABET, Problem, TestbedConfig, Generator, chance, split_of, verify
from scalelab.data.testbed import TestbedSource

P = Problem(23, 9, (("*", 6), ("*", 19), ("*", 4)))


def test_problem_values_and_rendering():
    assert P.values == (9, 8, 14, 10) and P.answer == 10
    assert P.question() == "Q23*:9 a6 b19 c4\n"
    assert P.question(direct=True) == "D23*:9 a6 b19 c4\n"
    assert P.solution() == "a:9*6=8\nb:8*19=14\nc:14*4=10\nA:10\n"
    assert P.solution({1: 3}) == "a:9*6=8\nb:8*19=3\n!b:8*19=14\nc:14*4=10\nA:10\n"
    with pytest.raises(ValueError, match="one operation"):
        Problem(5, 1, (("+", 1), ("*", 2))).question()


def test_verifier_accepts_right_solutions_and_corrections():
    assert verify(P, P.solution()).correct
    assert verify(P, P.solution({0: 1, 2: 7})).correct
    assert verify(P, "A:10\n", direct=True).correct
    v = verify(P, P.solution() + "junk after the answer is ignored")
    assert v.correct and v.answer == 10


@pytest.mark.parametrize("text", [
    "a:9*6=8\nb:8*19=13\nc:13*4=6\nA:6\n",         # a wrong step, consistent afterwards
    "a:9*6=8\nb:8*19=14\nc:14*4=10\nA:11\n",       # wrong answer
    "a:9*6=8\nc:14*4=10\nA:10\n",                   # a skipped step
    "a:9*6=8\nb:8*19=14\nb:8*19=14\nc:14*4=10\nA:10\n",  # a repeated step
    "a:9*6=8\nb:8+19=14\nc:14*4=10\nA:10\n",       # wrong operation copied
    "a:9*6=8\nb:8*19=014\nc:14*4=10\nA:10\n",      # leading zero is not a number here
    "A:10\n",                                       # answer with no work
    "",
])
def test_verifier_rejects_anything_short_of_a_whole_right_solution(text):
    assert not verify(P, text).correct


def test_verifier_never_evaluates_text():
    for text in ["A:__import__('os').system('false')", "A:2+3", "A:5.0", "A: 5", "A:-1", "A:" + "9" * 5000]:
        v = verify(P, text)
        assert v.answer is None and not v.correct


def test_verifier_reports_steps_and_answer_separately():
    v = verify(P, "a:9*6=8\nb:8*19=13\nc:13*4=6\nA:10\n")
    assert v.steps_correct == (True, False, False) and v.answer_correct and not v.correct


def test_chance_baselines():
    assert chance(P) == 23.0 ** -3 and chance(P, direct=True) == 1 / 23


def test_splits_never_overlap_and_generator_respects_them():
    cfg = TestbedConfig.build(max_modulus=7)
    gen = Generator(cfg)
    for m in gen.moduli:
        sets = {s: set(gen.pairs(m, s).tolist()) for s in ("train", "val", "test")}
        assert sets["val"] and sets["test"] and sets["train"]
        assert not (sets["val"] & sets["test"]) and not (sets["train"] & (sets["val"] | sets["test"]))
        assert len(sets["train"]) + len(sets["val"]) + len(sets["test"]) == m * m
    rng = random.Random(0)
    for split in ("train", "val", "test"):
        for _ in range(300):
            p, _ = gen.problem(rng, split)
            assert p.split(cfg.heldout_fraction) == split


def test_heldout_problem_sets_are_distinct_and_disjoint():
    src = TestbedSource(max_modulus=30)
    val = src.problems("val", 200, steps=3, seed=1)
    test = src.problems("test", 200, steps=3, seed=1)
    assert len(set(val)) == 200 and not set(val) & set(test)
    assert all(p.steps == 3 and p.split(src.config.heldout_fraction) == "val" for p in val)
    assert all(p.modulus == 11 for p in src.problems("test", 20, steps=2, modulus=11))


def test_logp_is_exact_on_a_small_generator():
    """Empirical document frequencies match exp(logp), and each text has one logp (injective)."""
    cfg = TestbedConfig.build(min_modulus=2, max_modulus=3, max_steps=2, ops="+*", p_direct=0.3, p_error=0.2)
    gen = Generator(cfg)
    rng = random.Random(0)
    n = 60_000
    counts, logp = collections.Counter(), {}
    for _ in range(n):
        doc, lp = gen.document(rng)
        counts[doc] += 1
        assert logp.setdefault(doc, lp) == pytest.approx(lp)
    support = sum(math.exp(lp) for lp in logp.values())
    assert support == pytest.approx(1.0, abs=0.02)  # nearly every document of the support was seen
    for doc, c in counts.most_common(20):
        p = math.exp(logp[doc])
        assert abs(c / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-4


def test_logp_is_exact_with_fact_documents():
    """Fact documents: frequencies match exp(logp), the support sums to one with the arithmetic,
    a key always carries the same value, and facts off (the default) draw exactly as before."""
    cfg = TestbedConfig.build(min_modulus=2, max_modulus=2, max_steps=1, ops="+", p_direct=0.5, p_error=0.0,
                              p_facts=0.4, facts=7, facts_zipf=1.3, fact_values=12)
    gen, rng, n = Generator(cfg), random.Random(1), 40_000
    counts, logp, value = collections.Counter(), {}, {}
    for _ in range(n):
        doc, lp = gen.document(rng)
        counts[doc] += 1
        assert logp.setdefault(doc, lp) == pytest.approx(lp)
        if doc.startswith("="):
            key, val = doc[1:-1].split(":")
            assert value.setdefault(key, val) == val and len(val) == 2 and int(val) < 12
    assert len(value) == 7 and math.fsum(math.exp(logp[d]) for d in counts if d.startswith("=")) == pytest.approx(0.4)
    assert math.fsum(math.exp(lp) for lp in logp.values()) == pytest.approx(1.0, abs=1e-9)
    for doc, c in counts.items():
        p = math.exp(logp[doc])
        assert abs(c / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-4
    plain, off = Generator(TestbedConfig()), Generator(TestbedConfig.build(p_facts=0.0, facts=9))
    r1, r2 = random.Random(5), random.Random(5)
    assert [plain.document(r1) for _ in range(50)] == [off.document(r2) for _ in range(50)]


def test_fact_documents_keep_the_floor_exact_and_encodable():
    src = TestbedSource(eval_docs=400, p_facts=0.5, facts=100)
    docs, nll = src.eval_documents()
    assert src.entropy_floor == pytest.approx(nll / sum(len(d) + 1 for d in docs))
    assert src.encode("".join(d for d in docs if d.startswith("="))).size > 0  # every character is in the alphabet


def test_entropy_floor_equals_average_generator_nll():
    src = TestbedSource(eval_docs=300)
    docs, nll = src.eval_documents()
    assert src.entropy_floor == pytest.approx(nll / sum(len(d) + 1 for d in docs))
    assert 0.2 < src.entropy_floor < 1.0


def test_train_batches_are_pure_functions_of_their_arguments():
    src = TestbedSource()
    a = src.train_batch(5, 4, 64, seed=1)
    assert a.shape == (4, 65) and a.dtype == np.int64
    assert np.array_equal(a, TestbedSource().train_batch(5, 4, 64, seed=1))
    assert not np.array_equal(a, src.train_batch(6, 4, 64, seed=1))
    assert not np.array_equal(a, src.train_batch(5, 4, 64, seed=2))
    assert a.min() >= 0 and a.max() < src.vocab_size


def test_eval_batches_hold_whole_documents_and_mask_padding():
    src = TestbedSource(eval_docs=50)
    batches = src.eval_batches(8, 256)
    tok = src.tokenizer
    text = "".join(tok.decode(x[x != tok.pad_token_id]) for x, _ in batches)
    docs, _ = src.eval_documents()
    assert text.replace(tok.bos_token, "").split(tok.eos_token)[:-1] == docs
    assert sum(m.sum() for _, m in batches) == sum(len(d) + 1 for d in docs)
    with pytest.raises(ConfigError, match="seq_len"):
        src.eval_batches(8, 16)


def test_tokenizer_round_trips_documents():
    src = TestbedSource()
    doc = P.question() + P.solution({1: 3})
    ids = src.tokenizer(doc, add_special_tokens=False)["input_ids"]
    assert ids == src.encode(doc).tolist() and src.tokenizer.decode(ids) == doc
    assert set(ALPHABET) >= set(doc)


def test_bad_config_values_are_one_line_errors():
    with pytest.raises(ConfigError, match="max_steps"):
        TestbedConfig.build(max_steps=40)
    with pytest.raises(ConfigError, match="min_modulus"):
        TestbedConfig.build(min_modulus=9, max_modulus=5)
    with pytest.raises(ConfigError, match="ops"):
        TestbedConfig.build(ops="+/")
    with pytest.raises(ConfigError):
        TestbedSource().problems("dev", 3, steps=2)
    assert split_of(23, 9, 6) in ("train", "val", "test")


def test_eval_set_cut_keeps_floor_and_bytes_exact_for_the_scored_tokens():
    full = TestbedSource(eval_docs=400)
    cut = TestbedSource(eval_docs=400, max_eval_tokens=5000)
    docs, nll = cut.eval_documents()
    counted = sum(len(d) + 1 for d in docs)
    assert counted <= 5000 and docs == full.eval_documents()[0][:len(docs)]
    assert sum(m.sum() for _, m in cut.eval_batches(8, 256)) == counted
    assert cut.entropy_floor == pytest.approx(nll / counted)
    assert cut.eval_bytes_per_token == pytest.approx(sum(len(d) for d in docs) / counted)
