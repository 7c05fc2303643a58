"""Adaptive allocation without a model: marginal-gain stopping on toy pools (it accepts, gives up,
and beats uniform best-of-k at equal accuracy), the replay's running best, and the pool cache."""
from __future__ import annotations

import numpy as np
import pytest

from scalelab import passk as est
from scalelab.testtime import stopping
from scalelab.testtime.strategies import Pool


def _pool(correct: np.ndarray, scores: np.ndarray, cost: float = 1.0) -> Pool:
    n = correct.size
    return Pool(texts=[""] * n, correct=correct.astype(float), answer_correct=correct.astype(float),
                answers=np.arange(n), flops_prefill=0.0, flops_decode=np.full(n, cost), tokens=np.ones(n),
                orm=scores, orm_flops=np.zeros(n))


def _toy(questions: int = 200, n: int = 32, seed: int = 0) -> list[Pool]:
    """Half the questions no sample solves; the other half each sample solves with probability 0.3.
    The ORM scores right samples 0.9-1, wrong ones of solvable questions 0.1-0.4 (near misses), wrong
    ones of hopeless questions 0-0.1: a judge that tells hopeless questions apart."""
    rng = np.random.default_rng(seed)
    pools = []
    for q in range(questions):
        hopeless = q % 2 == 0
        right = np.zeros(n) if hopeless else (rng.random(n) < 0.3).astype(float)
        wrong = 0.1 * rng.random(n) if hopeless else 0.1 + 0.3 * rng.random(n)
        pools.append(_pool(right, np.where(right > 0, 0.9 + 0.1 * rng.random(n), wrong)))
    return pools


def test_replay_tracks_the_top_scored_sample():
    pools = [_pool(np.array([0, 1, 0, 0]), np.array([0.2, 0.9, 0.95, 0.1]))]
    rep = stopping.replay(pools, orders=30, rng=np.random.default_rng(0))
    m = 1 + np.arange(4)
    assert np.all(rep.spent[0] == m) and np.all(rep.policy[0] == m)
    assert np.all(np.diff(rep.best[0], axis=1) >= 0)  # a running maximum
    # with all four seen, the top score 0.95 is the wrong sample: right is 0 whatever the order
    assert np.all(rep.right[0, :, -1] == 0)
    # where the 0.9 sample is the best seen so far, the answer is right
    assert np.all(rep.right[0][rep.best[0] == 0.9] == 1)


def test_gain_stopping_accepts_gives_up_and_saves():
    pools = _toy()
    Q = len(pools)
    fold = np.arange(Q) // 2 % 2  # each half holds hopeless and solvable questions
    uni_k = [1, 2, 4, 8, 16, 32]
    uni_q = np.array([[est.best_of_k(pl.orm, pl.correct, k) for pl in pools] for k in uni_k])
    uni_flops_q = np.array([np.full(Q, float(k)) for k in uni_k])
    from scalelab.testtime.allocate import _uniform_flops_at

    seen = {}
    lines = stopping.report(pools, fold, uni_k, uni_q, uni_flops_q, orders=5, bins=8, rng=np.random.default_rng(1),
                            at=_uniform_flops_at, record=lambda k, lams, got, used, *rest: seen.update({k: (got, used)}))
    assert "marginal-gain stopping" in lines[0]
    got, used = seen[16]
    hopeless = np.arange(Q) % 2 == 0
    # accepting: a solvable question stops soon after its first right sample (about 1/0.3 samples)
    assert used[~hopeless].mean() < 8
    # giving up: a hopeless question stops after a few samples, once its best score stays low
    assert used[hopeless].mean() < 4
    # uniform best-of-16 spends 16 samples; the rule matches its accuracy (within noise) for far fewer
    assert got.mean() >= uni_q[uni_k.index(16)].mean() - 0.02
    assert used.mean() < 16 / 2
    row = next(ln for ln in lines if ln.split()[0] == "16")
    assert float(row.split()[-1].rstrip("x")) > 2


def test_cheapest_lambda_is_none_when_unreachable():
    pools = _toy(questions=20, n=8)
    rep = stopping.replay(pools, orders=2, rng=np.random.default_rng(0))
    rows = np.arange(20)
    table = stopping.fit_gain(rep, rows, bins=3)
    assert stopping.cheapest_lambda(rep, rows, table, target=1.01) is None
    lam = stopping.cheapest_lambda(rep, rows, table, target=0.0)
    got, used, pol, ver = stopping.outcome(rep, rows, table, lam)
    assert used.min() >= 1 and np.all(ver == 0) and np.all(pol == used)


def test_pools_are_drawn_once_and_cached(tmp_path):
    from scalelab.testtime.allocate import AllocateConfig, _cached_pools

    cfg = AllocateConfig.build(model="m", orm="o", n_max=8)
    drawn = []

    def draw():
        drawn.append(1)
        return _toy(questions=3, n=8)

    first = _cached_pools(cfg, tmp_path, draw)
    again = _cached_pools(cfg, tmp_path, draw)
    assert len(drawn) == 1 and len(list(tmp_path.glob("pool-*.npz"))) == 1
    for a, b in zip(first, again):
        assert np.array_equal(a.correct, b.correct) and np.array_equal(a.orm, b.orm) and b.N == 8
        assert a.flops_prefill == b.flops_prefill and np.array_equal(a.orm_flops, b.orm_flops)
    other = AllocateConfig.build(model="m", orm="o", n_max=8, seed=1)  # other questions: drawn afresh
    _cached_pools(other, tmp_path, draw)
    assert len(drawn) == 2
    # settings of the analysis are not part of the pool
    _cached_pools(AllocateConfig.build(model="m", orm="o", n_max=8, probe=2, bins=3), tmp_path, draw)
    assert len(drawn) == 2
    with pytest.raises(ValueError):
        stopping.replay([], orders=1, rng=np.random.default_rng(0))
