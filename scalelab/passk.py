"""Budget curves from one large sample pool: the expected accuracy of a selection rule applied to
k samples drawn without replacement from N >= k samples of the same question.

Drawing the N samples once and averaging over their k-subsets is unbiased for every k <= N and
far cheaper and less noisy than sampling afresh per k (Chen et al. 2021, "Evaluating Large
Language Models Trained on Code", sec. 2.1, for pass@k; search-and-learn scores maj@k, naive@k
and weighted@k from one pool the same way).

- pass@k: exact, 1 - C(N-c, k) / C(N, k) in the numerically stable product form (Chen et al.).
- best-of-k by a score: exact. The sample of rank i (0 = lowest score) is the best of a random
  k-subset with probability C(i, k-1) / C(N, k); tied scores share their probability equally.
- majority and weighted vote: Monte Carlo over `draws` random k-subsets (seeded). An average of
  unbiased draws is unbiased; its extra variance is reported by the caller as part of the
  standard error. Ties are broken uniformly at random.

A vote picks an answer; the strategy then returns one sample with that answer (majority: a
random one; weighted: the best-scored one), and correctness is that sample's correctness, so all
strategies are scored in the same unit (a whole worked solution right, see testbed.verify).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

NO_ANSWER = -1


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn from n, of which c are correct, is correct)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def best_of_k(scores: Sequence[float], correct: Sequence[float], k: int) -> float:
    """Expected correctness of the highest-scored sample among k drawn from the pool."""
    s = np.asarray(scores, float)
    c = np.asarray(correct, float)
    n = s.size
    if not 1 <= k <= n:
        raise ValueError(f"best_of_k: k={k} must be in 1..{n}")
    order = np.argsort(s, kind="stable")
    s, c = s[order], c[order]
    ranks = np.arange(n)
    # P(rank i is the max of a k-subset) = C(i, k-1) / C(n, k); computed in logs for large n
    logw = np.full(n, -np.inf)
    ok = ranks >= k - 1
    logw[ok] = (_lgamma(ranks[ok] + 1) - _lgamma(k) - _lgamma(ranks[ok] - k + 2)
                - (_lgamma(n + 1) - _lgamma(k + 1) - _lgamma(n - k + 1)))
    w = np.exp(logw)
    # equal scores are exchangeable: give each member of a tie group the group's mean weight
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    for f, m in zip(first, counts):
        if m > 1:
            w[f:f + m] = w[f:f + m].mean()
    return float(np.clip((w * c).sum(), 0.0, 1.0))


def _lgamma(x: np.ndarray | int) -> np.ndarray:
    return np.vectorize(math.lgamma)(np.asarray(x, float))


def vote_at_k(answers: Sequence[int], correct: Sequence[float], k: int, *, scores: Sequence[float] | None = None,
              draws: int = 1000, rng: np.random.Generator | None = None) -> float:
    """Expected correctness of majority vote (scores=None) or weighted vote (sum of scores per
    answer; the returned sample is the best-scored one with the winning answer) over k-subsets.
    `answers` are integer ids, NO_ANSWER for samples without a parsable answer (they never win)."""
    a = np.asarray(answers, np.int64)
    c = np.asarray(correct, float)
    n = a.size
    if not 1 <= k <= n:
        raise ValueError(f"vote_at_k: k={k} must be in 1..{n}")
    rng = rng or np.random.default_rng(0)
    if not (a != NO_ANSWER).any():
        return 0.0
    values, inv = np.unique(a, return_inverse=True)  # compact answer ids
    A = values.size
    voter = values[inv] != NO_ANSWER
    w = np.ones(n) if scores is None else np.asarray(scores, float)
    R = 1 if k == n and scores is not None else draws
    if k == n:
        idx = np.tile(np.arange(n), (R, 1))  # [R, k] the whole pool
    else:
        idx = np.argsort(rng.random((R, n)), axis=1)[:, :k]  # [R, k] uniform k-subsets
    votes = np.zeros((R, A))
    np.add.at(votes, (np.repeat(np.arange(R), k), inv[idx].ravel()), (w[idx] * voter[idx]).ravel())
    has_vote = np.zeros((R, A), bool)
    np.logical_or.at(has_vote, (np.repeat(np.arange(R), k), inv[idx].ravel()), voter[idx].ravel())
    votes[~has_vote] = -np.inf
    best = votes.max(1, keepdims=True)
    tied = (votes == best) & np.isfinite(best)
    win = np.argmax(tied * rng.random((R, A)), axis=1)  # uniform among tied answers  [R]
    member = (inv[idx] == win[:, None]) & voter[idx]  # [R, k] samples with the winning answer
    if scores is None:
        pick = np.argmax(member * rng.random((R, k)), axis=1)  # a random member
    else:
        pick = np.argmax(np.where(member, w[idx] + 1e-12 * rng.random((R, k)), -np.inf), axis=1)
    chosen = idx[np.arange(R), pick]
    result = np.where(member.any(1), c[chosen], 0.0)
    return float(result.mean())


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean over questions and its standard error (questions are the sampling unit)."""
    v = np.asarray(values, float)
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), se


def interval95(values: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean over questions (the sampling unit), in [0, 1] for
    per-question accuracies. The bootstrap rather than mean +- 1.96 se: with few questions, or accuracy
    near 0 or 1, the normal interval leaves [0, 1] (and is [p, p] when every question agrees)."""
    v = np.asarray(values, float)
    if v.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
