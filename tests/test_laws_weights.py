"""Frontier weights: runs weighted by (C/C_max)^P in the Huber fit, the backtest refits and
`fit --law auto` (loghuber.frontier_weights)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scalelab.errors import InputError
from scalelab.laws import ChinchillaLaw
from scalelab.laws.backtest import backtest, runs_frame
from scalelab.laws.loghuber import frontier_weights
from scalelab.laws.power import PowerLaw
from tests.test_cli_fit import assert_one_line_error, run
from tests.test_laws_backtest import TIED, ladder


def test_frontier_weights_are_a_power_of_the_distance_to_the_largest_run():
    C = np.array([1e18, 1e19, 1e20, 1e21])
    assert frontier_weights(C, 0.0) is None
    w = frontier_weights(C, 1.0)
    assert np.isclose(w.mean(), 1.0) and np.allclose(w[:-1] / w[1:], 0.1)   # a decade below: a tenth
    assert np.allclose(frontier_weights(C, 0.5)[:-1] / frontier_weights(C, 0.5)[1:], 10 ** -0.5)


def test_weights_leave_a_true_form_where_it_is(tmp_path):
    """Noise-free runs of the law itself: any weighting finds the same parameters."""
    df = pd.read_csv(ladder(tmp_path / "l.csv", sd=0.0))
    X, y = df[["N", "D"]].to_numpy(), df["loss"].to_numpy()
    for form in ("free", "tied"):
        law = ChinchillaLaw(form=form, method="vpnls", bootstrap=0, frontier_weight=1.0).fit(X, y)
        assert law.converged_
        for k, v in TIED.items():
            assert abs(law.params_[k] / v - 1) < 0.02, (form, k, law.params_[k])


def test_the_objective_is_the_weighted_sum():
    rng = np.random.default_rng(1)
    N = np.repeat(np.logspace(7, 9, 5), 4)
    D = N * np.tile([10, 20, 40, 80], 5)
    y = (1.8 + 500 * N ** -0.33 + 1500 * D ** -0.3) * np.exp(rng.normal(0, 0.004, N.size))
    law = ChinchillaLaw(method="vpnls", bootstrap=0, frontier_weight=1.0).fit(np.column_stack([N, D]), y)
    r = np.log(law.predict(np.column_stack([N, D]))) - np.log(y)
    h = np.where(np.abs(r) <= 1e-3, 0.5 * r ** 2, 1e-3 * (np.abs(r) - 0.5e-3))
    assert np.isclose(law.result_.fun, np.sum(frontier_weights(N * D, 1.0) * h), rtol=1e-6)
    unweighted = ChinchillaLaw(method="vpnls", bootstrap=0).fit(np.column_stack([N, D]), y)
    assert law.params_ != unweighted.params_
    assert ChinchillaLaw.from_dict(law.to_dict()).frontier_weight == 1.0


def test_weights_follow_the_curve_near_the_frontier():
    """A curve that is not the fitted form (its local exponent drifts with scale): the weighted
    fit of E + A·C^-alpha extrapolates one decade beyond the data with a smaller error."""
    C = np.logspace(17, 21, 25)
    true = lambda c: 1.7 + 30 * c ** -0.08 + 4e3 * c ** -0.25  # noqa: E731  two terms, one form fitted
    y, beyond = true(C), true(np.array([1e22]))[0]
    err = {p: abs(PowerLaw(x="C", bootstrap=0, frontier_weight=p).fit(C[:, None], y).predict([1e22])[0] / beyond - 1)
           for p in (0.0, 1.0)}
    assert err[1.0] < 0.5 * err[0.0]


def test_bootstrap_keeps_the_weights():
    rng = np.random.default_rng(2)
    N = np.repeat(np.logspace(7, 9, 5), 4)
    D = N * np.tile([10, 20, 40, 80], 5)
    y = (1.8 + 500 * N ** -0.33 + 1500 * D ** -0.33) * np.exp(rng.normal(0, 0.003, N.size))
    law = ChinchillaLaw(form="tied", method="vpnls", bootstrap=50, frontier_weight=1.0).fit(np.column_stack([N, D]), y)
    lo, hi = law.ci_["alpha"]
    assert law.bootstrap_failed_ < 5 and lo <= law.params_["alpha"] <= hi


def test_backtest_and_auto_record_the_weight(tmp_path, capsys):
    csv = ladder(tmp_path / "l.csv")
    bt = backtest(runs_frame(csv), ["free", "tied", "kaplan"], holdout="largest-params", frontier_weight=1.0)
    assert bt["frontier_weight"] == 1.0 and all(r.get("mean_abs_err") is not None for r in bt["candidates"])
    code, out, err = run(["fit", csv, "--law", "auto", "--bootstrap", "0", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["settings"]["frontier_weight"] == 1.0 and doc["backtest"]["frontier_weight"] == 1.0
    code, out, err = run(["fit", csv, "--law", "auto", "--bootstrap", "0", "--frontier-weight", "0", "--json"], capsys)
    assert code == 0 and json.loads(out)["settings"]["frontier_weight"] == 0.0
    code, out, err = run(["fit", csv, "--law", "chinchilla", "--method", "vpnls", "--bootstrap", "0", "--json"], capsys)
    assert code == 0 and json.loads(out)["settings"]["frontier_weight"] == 0.0    # named laws: unweighted by default
    code, out, err = run(["backtest", csv, "--frontier-weight", "0.5", "--json"], capsys)
    assert code == 0 and json.loads(out)["frontier_weight"] == 0.5


@pytest.mark.parametrize("argv, needle", [
    (["--law", "chinchilla", "--frontier-weight", "-1"], "frontier_weight must be a number >= 0"),
    (["--law", "isoflop", "--frontier-weight", "1"], "--frontier-weight applies to --law"),
    (["--law", "auto", "--frontier-weight", "nan"], "--frontier-weight must be a number >= 0"),
])
def test_bad_frontier_weight_is_one_line(tmp_path, capsys, argv, needle):
    code, out, err = run(["fit", ladder(tmp_path / "l.csv"), "--bootstrap", "0", *argv], capsys)
    assert_one_line_error(code, err, needle)


def test_negative_weight_refused_by_the_estimators():
    with pytest.raises(InputError, match=">= 0"):
        PowerLaw(x="C", bootstrap=0, frontier_weight=-0.5).fit(np.logspace(17, 20, 6)[:, None], np.linspace(3, 2, 6))


def test_optimal_on_a_weighted_fit_says_how_to_read_it(tmp_path, capsys):
    csv = ladder(tmp_path / "l.csv")
    fit = tmp_path / "FIT.json"
    code, out, err = run(["fit", csv, "--law", "auto", "--bootstrap", "0", "--out", fit], capsys)
    assert code == 0, err
    code, out, err = run(["optimal", fit, "--compute", "1e20"], capsys)
    assert code == 0 and "refit with --frontier-weight 0" in err
    code, out, err = run(["fit", csv, "--law", "auto", "--bootstrap", "0", "--frontier-weight", "0", "--out", fit], capsys)
    code, out, err = run(["optimal", fit, "--compute", "1e20"], capsys)
    assert code == 0 and "frontier-weight" not in err


def test_processes_do_not_change_the_answer(tmp_path, monkeypatch):
    """Bootstrap chunks and backtest refits give the same numbers in one process or two."""
    import scalelab.laws.backtest as bt_mod
    from scalelab.laws.loghuber import LogHuberObjective, bootstrap_refits, hoffmann_grid

    df = pd.read_csv(ladder(tmp_path / "l.csv"))
    X, y = df[["N", "D"]].to_numpy(), df["loss"].to_numpy()
    law = ChinchillaLaw(method="vpnls", bootstrap=0, frontier_weight=1.0).fit(X, y)
    obj = LogHuberObjective(np.log(X), np.log(y), weights=frontier_weights(X[:, 0] * X[:, 1], 1.0))
    one, ok1 = bootstrap_refits(obj, law.theta_, hoffmann_grid(), n_boot=24, seed=3, top=1, chunk=8, n_jobs=1)
    two, ok2 = bootstrap_refits(obj, law.theta_, hoffmann_grid(), n_boot=24, seed=3, top=1, chunk=8, n_jobs=2)
    assert np.array_equal(ok1, ok2) and np.allclose(one, two, rtol=0, atol=0, equal_nan=True)
    runs = runs_frame(tmp_path / "l.csv")
    serial = backtest(runs, ["free", "tied", "kaplan"], holdout="both", frontier_weight=1.0, n_jobs=1)
    monkeypatch.setattr(bt_mod, "PARALLEL_MIN_ROWS", 0)
    forked = backtest(runs, ["free", "tied", "kaplan"], holdout="both", frontier_weight=1.0, n_jobs=2)
    assert json.dumps(serial, sort_keys=True) == json.dumps(forked, sort_keys=True)
