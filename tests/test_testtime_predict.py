"""Small-budget -> large-budget predictions from records: the shared-alpha beta-binomial, the
selection law (best-of-n = rho x coverage), majority vote on odd budgets, bootstrap errors, and
the refusals."""
from __future__ import annotations

import numpy as np
import pytest

from scalelab.errors import InputError
from scalelab.laws.coverage import CoverageLaw, SharedTailCoverage, _pass_mean
from scalelab import passk as est
from scalelab.testtime.extrapolate import predict_curves, summary


def _record(root, technique, n, per_problem, *, steps=3, pool_correct=None, pool_n=None):
    from scalelab.records import RunRecord, write_record

    rec = RunRecord(run_id=f"{technique}-d{steps}-n{n}", parent_id="pol", phase="testtime", technique=technique,
                    task="testbed", config={"seed": 0, "problems": len(per_problem), "split": "test"})
    extra = {} if pool_correct is None else {"pool_correct": [int(c) for c in pool_correct], "pool_n": pool_n}
    rec.complete(n=n, steps=steps, kind="parallel", flops_per_question=10.0 * n,
                 accuracy=float(np.mean(per_problem)), per_problem=[float(v) for v in per_problem], **extra)
    write_record(root / rec.run_id, rec)


def _coverage_records(root, p, *, steps, small_n=8, big_n=64, seed=0):
    """Coverage records of one difficulty: a small pool of 8 (k = 1..8) and a large pool of 64."""
    rng = np.random.default_rng(seed)
    small, big = rng.binomial(small_n, p), rng.binomial(big_n, p)
    for k in range(1, small_n + 1):
        _record(root / "small", "coverage", k, [est.pass_at_k(small_n, int(c), k) for c in small], steps=steps,
                pool_correct=small, pool_n=small_n)
    _record(root / "big", "coverage", 64, [est.pass_at_k(big_n, int(c), 64) for c in big], steps=steps,
            pool_correct=big, pool_n=big_n)
    return small, big


def test_shared_tail_coverage_recovers_one_alpha_and_each_beta():
    rng = np.random.default_rng(0)
    alpha, betas = 0.3, [0.8, 2.5]
    counts = [rng.binomial(8, rng.beta(alpha, b, 3000)) for b in betas]
    fit = SharedTailCoverage().fit(counts, 8)
    assert fit.converged_
    assert fit.alpha_ == pytest.approx(alpha, rel=0.15)
    assert fit.betas_[0] == pytest.approx(betas[0], rel=0.2) and fit.betas_[1] == pytest.approx(betas[1], rel=0.2)
    one = CoverageLaw(bootstrap=0).fit([1, 2, 4, 8], [_pass_mean(counts[1], 8, k) for k in (1, 2, 4, 8)],
                                       counts=(counts[1], 8))
    assert fit.predict([64], group=1)[0] == pytest.approx(one.predict([64])[0], abs=0.02)
    with pytest.raises(InputError, match="counts"):
        SharedTailCoverage().fit([np.array([9, 1])], 8)


def test_selection_law_scales_the_coverage_prediction(tmp_path):
    rng = np.random.default_rng(1)
    p = rng.beta(0.4, 1.5, 300)
    small, big = _coverage_records(tmp_path, p, steps=3)
    # a verifier that picks a right sample 90% of the time when there is one
    for k in range(1, 9):
        _record(tmp_path / "small", "best_of_n", k, [0.9 * est.pass_at_k(8, int(c), k) for c in small])
    _record(tmp_path / "big", "best_of_n", 64, [0.9 * est.pass_at_k(64, int(c), 64) for c in big])
    cov = predict_curves(tmp_path / "small", against=tmp_path / "big", law="coverage")[0]
    sel = predict_curves(tmp_path / "small", against=tmp_path / "big", law="selection", bootstrap=30)
    assert [r["strategy"] for r in sel] == ["best_of_n"]
    assert sel[0]["predicted"] == pytest.approx(0.9 * cov["predicted"], rel=1e-6)
    assert "rho=0.900" in sel[0]["fit"]
    assert abs(sel[0]["error"]) < 0.04 and 0 < sel[0]["error_se"] < 0.05
    assert summary(sel).startswith("1 curves: ") and "within 3 points, mean error" in summary(sel)
    _record(tmp_path / "small2", "best_of_n", 1, [0.5, 0.5])
    for k in (2, 4):
        _record(tmp_path / "small2", "best_of_n", k, [0.6, 0.6])
    with pytest.raises(InputError, match="needs the coverage curve"):
        predict_curves(tmp_path / "small2", law="selection")


def test_shared_alpha_over_difficulties_and_its_refusals(tmp_path):
    rng = np.random.default_rng(2)
    for steps, b in ((3, 1.0), (4, 3.0)):
        _coverage_records(tmp_path, rng.beta(0.3, b, 400), steps=steps, seed=steps)
    rows = predict_curves(tmp_path / "small", against=tmp_path / "big", law="coverage", shared_alpha=True,
                          bootstrap=20)
    assert [r["steps"] for r in rows] == [3, 4]
    alphas = {r["fit"].split()[0] for r in rows}
    assert len(alphas) == 1 and "(shared)" in rows[0]["fit"]  # one alpha for both difficulties
    assert all(abs(r["error"]) < 0.06 and r["error_se"] is not None for r in rows)
    with pytest.raises(InputError, match="shared-alpha"):
        predict_curves(tmp_path / "small", law="coverage", shared_alpha=True, pooled=True)
    with pytest.raises(InputError, match="shared-alpha"):
        predict_curves(tmp_path / "small", law="testtime", shared_alpha=True)


def test_majority_is_fitted_on_odd_budgets(tmp_path):
    """Even budgets of a plain vote add ties (a vote of 2 is a single sample): with odd budgets
    recorded, only they are fitted."""
    law = lambda n: 0.5 - 0.3 * n ** -0.6  # noqa: E731
    for n in range(1, 9):
        m = n if n % 2 else n - 1  # a vote of 2m scores as one of 2m - 1 (ties broken at random)
        _record(tmp_path / "small", "majority", n, [law(m)] * 4)
    _record(tmp_path / "big", "majority", 64, [law(63)] * 4)
    row = predict_curves(tmp_path / "small", against=tmp_path / "big", strategies=["majority"])[0]
    assert row["points"] == 4 and "odd n" in row["fit"]
    assert row["predicted"] == pytest.approx(law(64), abs=2e-3)
    # with budgets 1, 2, 4, 8 only, every budget is fitted as before
    for n in (1, 2, 4, 8):
        _record(tmp_path / "pow2", "majority", n, [law(n if n % 2 else n - 1)] * 4)
    assert predict_curves(tmp_path / "pow2", strategies=["majority"], at=8)[0]["points"] == 4
