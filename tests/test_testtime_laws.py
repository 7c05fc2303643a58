"""Test-time laws: recovery of known coverage and accuracy curves, the beta-binomial likelihood,
prediction of a large budget from small ones, and the selection of one curve from a table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scalelab.errors import InputError
from scalelab.laws.coverage import CoverageLaw, _pass_mean, beta_coverage
from scalelab.laws.sampling import TesttimeLaw
from scalelab import passk as est
K = np.array([1, 2, 4, 8, 16, 32, 64], float)


def _counts(alpha, beta, problems, N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.binomial(N, rng.beta(alpha, beta, problems))


def test_beta_coverage_is_the_mean_of_per_problem_pass_at_k():
    rng = np.random.default_rng(0)
    p = rng.beta(0.4, 3.0, 200_000)
    for k in (1, 4, 64):
        assert beta_coverage(k, 0.4, 3.0) == pytest.approx(np.mean(1 - (1 - p) ** k), abs=2e-3)
    c = np.array([0, 3, 64, 10])
    for k in (1, 8, 64):
        assert _pass_mean(c, 64, k) == pytest.approx(np.mean([est.pass_at_k(64, int(x), k) for x in c]), abs=1e-12)


def test_coverage_law_recovers_a_beta_binomial_from_counts_and_from_the_curve():
    alpha, beta = 0.35, 2.5
    c = _counts(alpha, beta, 3000, 64)
    curve = np.array([_pass_mean(c, 64, int(k)) for k in K])
    mle = CoverageLaw(bootstrap=30, seed=1).fit(K, curve, counts=(c, 64))
    assert mle.converged_
    assert mle.params_["alpha"] == pytest.approx(alpha, rel=0.1) and mle.params_["beta"] == pytest.approx(beta, rel=0.15)
    lo, hi = mle.ci_["alpha"]
    assert lo < mle.params_["alpha"] < hi
    ls = CoverageLaw(bootstrap=0).fit(K, curve)
    assert np.abs(ls.predict(K) - curve).max() < 0.01
    # the exp(a k^b) form of Brown et al. describes the same curve in log space
    ex = CoverageLaw(form="exp", bootstrap=0).fit(K, curve)
    assert ex.params_["a"] < 0 and ex.params_["b"] < 0
    assert np.abs(np.log(ex.predict(K)) - np.log(curve)).max() < 0.1


def test_coverage_prediction_from_eight_samples_per_problem():
    """Fit on k <= 8 with counts from only 8 samples per problem; predict pass@64 of a fresh pool."""
    alpha, beta = 0.5, 4.0
    rng = np.random.default_rng(3)
    p = rng.beta(alpha, beta, 2000)
    small, big = rng.binomial(8, p), rng.binomial(64, p)
    ks = np.array([1, 2, 4, 8], float)
    law = CoverageLaw(bootstrap=0).fit(ks, [_pass_mean(small, 8, int(k)) for k in ks], counts=(small, 8))
    assert law.predict([64])[0] == pytest.approx(_pass_mean(big, 64, 64), abs=0.03)


def test_testtime_law_recovers_a_saturating_power_law_and_extrapolates():
    truth = dict(A=0.82, B=0.45, gamma=0.7)
    acc = truth["A"] - truth["B"] * K ** -truth["gamma"]
    noisy = acc + np.random.default_rng(0).normal(0, 0.002, K.size)
    law = TesttimeLaw(bootstrap=50, seed=0).fit(K, noisy)
    assert law.converged_
    for k, v in truth.items():
        assert law.params_[k] == pytest.approx(v, rel=0.1)
    small = TesttimeLaw(bootstrap=0).fit(K[:4], acc[:4])  # n <= 8 only
    assert small.predict([64])[0] == pytest.approx(acc[-1], abs=0.01)
    # FLOPs as x: the same curve in other units (prefill + n x decode) is fitted as well
    flops = 3e6 + K * 2e7
    fl = TesttimeLaw(x="flops", bootstrap=0).fit(flops, acc)
    assert np.abs(fl.predict(flops) - acc).max() < 0.01
    # a falling curve (more samples hurt) is a negative B, not a failure
    down = TesttimeLaw(bootstrap=0).fit(K, 0.3 + 0.2 * K ** -0.5)
    assert down.params_["B"] < 0 and down.converged_
    with pytest.raises(InputError, match=r"accuracy: values must be in \[0, 1\]"):
        TesttimeLaw().fit(K, acc + 1)
    with pytest.raises(InputError, match="at least 3 distinct"):
        TesttimeLaw().fit([1, 2], [0.1, 0.2])


def _frame(rows):
    return pd.DataFrame([{"phase": "testtime", "parent_id": "m", "technique": t, "metrics.steps": d,
                          "metrics.n": n, "metrics.accuracy": a, "metrics.flops_per_question": 1e6 * n,
                          "metrics.kind": "parallel"} for t, d, n, a in rows])


def test_one_curve_is_selected_from_a_table():
    rows = [(t, d, n, 0.5 - 0.3 / n) for t in ("majority", "coverage") for d in (3, 5) for n in (1, 2, 4, 8)]
    frame = _frame(rows)
    with pytest.raises(InputError, match="4 test-time curves .*m/coverage/d3"):
        TesttimeLaw().prepare_table(frame)
    prep = TesttimeLaw(strategy="majority", difficulty=5).prepare_table(frame)
    assert prep.X[:, 0].tolist() == [1, 2, 4, 8] and prep.notices == ["curve: m/majority/d5 (4 points)"]
    prep = TesttimeLaw(strategy="majority", difficulty=5, max_n=4, x="flops").prepare_table(frame)
    assert prep.X[:, 0].tolist() == [1e6, 2e6, 4e6]
    cov = CoverageLaw(difficulty=3).prepare_table(frame)
    assert cov.y.tolist() == pytest.approx([0.2, 0.35, 0.425, 0.4625])
    with pytest.raises(InputError, match="more than once"):
        TesttimeLaw().prepare_table(_frame([("majority", 3, n, 0.3) for n in (1, 2, 2, 4)]))
    # a plain CSV with n and accuracy columns works too
    plain = TesttimeLaw().prepare_table(pd.DataFrame({"n": [1, 2, 4], "accuracy": [0.1, 0.2, 0.25]}))
    assert plain.y.tolist() == [0.1, 0.2, 0.25]
