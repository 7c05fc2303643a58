"""Prediction intervals beside the bootstrap CI of the mean, batch prediction from a table, and the
far-extrapolation warning; bad input for each new option is one line with exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scalelab.laws import ChinchillaLaw
from scalelab.laws.intervals import far_outside, predict_intervals
from tests.test_cli_fit import TRUE, assert_one_line_error, chinchilla_csv, run

COLS = ["--col", "N=params", "--col", "loss=val_loss"]


def law_loss(N, D):
    return TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("iv")
    return tmp, chinchilla_csv(tmp / "runs.csv")


def _fit(tmp, csv, capsys, boot="100"):
    code, out, err = run(["fit", csv, "--law", "chinchilla", *COLS, "--method", "vpnls", "--bootstrap", boot,
                          "--out", tmp / "FIT.json"], capsys)
    assert code == 0, err
    return tmp / "FIT.json"


def test_intervals_in_fit_json_and_predict(fitted, capsys):
    tmp, csv = fitted
    fit = _fit(tmp, csv, capsys)
    doc = json.loads(fit.read_text())
    assert {"range", "noise", "draws"} <= set(doc) and len(doc["draws"]["values"]) == 100
    assert 0.0005 < doc["noise"]["sigma_log"] < 0.005      # the synthetic runs carry 0.2% noise
    code, out, err = run(["predict", fit, "--params", "1e9", "--tokens", "2e10", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    (clo, chi), (plo, phi) = r["ci95_mean"], r["pi95_new_run"]
    assert plo < clo <= r["loss"] <= chi < phi and r["warnings"] == []
    code, out, _ = run(["predict", fit, "--params", "1e9", "--tokens", "2e10"], capsys)
    assert "95% interval of the mean" in out and "95% prediction interval for one new run" in out


def test_prediction_interval_covers_new_runs():
    rng = np.random.default_rng(5)
    N, D = (a.ravel() for a in np.meshgrid(np.logspace(7, 9, 6), np.logspace(9, 11, 6)))
    y = law_loss(N, D) * np.exp(rng.normal(0, 0.01, N.size))
    law = ChinchillaLaw(method="vpnls", bootstrap=200).fit(np.column_stack([N, D]), y)
    Nn, Dn = N.copy(), D.copy()
    new = law_loss(Nn, Dn) * np.exp(rng.normal(0, 0.01, N.size))
    iv = predict_intervals(law, np.column_stack([Nn, Dn]))
    inside = np.mean((iv["pi"][:, 0] <= new) & (new <= iv["pi"][:, 1]))
    in_ci = np.mean((iv["ci"][:, 0] <= new) & (new <= iv["ci"][:, 1]))
    assert inside >= 0.85 and in_ci < inside


def test_predict_table_with_and_without_losses(fitted, capsys):
    tmp, csv = fitted
    fit = _fit(tmp, csv, capsys, boot="30")
    df = pd.read_csv(csv).head(5)
    df.to_csv(tmp / "t.csv", index=False)
    code, out, err = run(["predict", fit, "--table", tmp / "t.csv", *COLS, "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert len(r["rows"]) == 5 and r["summary"]["n"] == 5 and r["summary"]["mean_abs_err"] < 0.01
    assert 0 <= r["summary"]["inside_pi95"] <= 1
    df.drop(columns="val_loss").to_csv(tmp / "u.csv", index=False)
    code, out, err = run(["predict", fit, "--table", tmp / "u.csv", "--col", "N=params"], capsys)
    assert code == 0 and "predicted" in out and "observed" not in out


def test_far_extrapolation_warns(fitted, capsys):
    tmp, csv = fitted
    fit = _fit(tmp, csv, capsys, boot="0")
    code, out, err = run(["optimal", fit, "--compute", "1e300"], capsys)
    assert code == 0 and "warning: C = 1e+300 is 10^" in err and "largest C fitted" in err
    code, out, err = run(["predict", fit, "--params", "1e9", "--tokens", "2e10"], capsys)
    assert code == 0 and "warning" not in err
    code, out, err = run(["predict", fit, "--params", "1e15", "--tokens", "2e10"], capsys)
    assert "warning: N = 1e+15" in err
    law = ChinchillaLaw.from_dict(json.loads(fit.read_text()))
    assert far_outside(law, {"N": 1.0}) and "below the smallest N" in far_outside(law, {"N": 1.0})[0]


@pytest.mark.parametrize("argv, needle", [
    (["predict", "{fit}", "--params", "1e9", "--tokens", "1e10", "--unique-tokens", "1e9"],
     "--unique-tokens applies to a datacon fit only"),
    (["predict", "{fit}", "--table", "{csv}", "--params", "1e9"], "leave out --params"),
    (["predict", "{fit}", "--params", "1e9", "--tokens", "1e10", "--col", "N=params"], "--col applies to --table"),
    (["predict", "{fit}", "--table", "{csv}"], "column 'N' not found"),
    (["predict", "{fit}", "--table", "{fit}"], "is a FIT.json (a fitted law), not a table of runs"),
    (["predict", "{fit}", "--table", "{csv}", "--col", "N=param"], "did you mean 'params'"),
])
def test_bad_input_is_one_line(fitted, capsys, argv, needle):
    tmp, csv = fitted
    fit = _fit(tmp, csv, capsys, boot="0")
    code, _, err = run([a.format(fit=fit, csv=csv) for a in argv], capsys)
    assert_one_line_error(code, err, needle)


@pytest.mark.parametrize("form, hyper", [("free", {}), ("tied", {}), ("fixed-e", {"E_fixed": 1.6})])
def test_forms_keep_the_estimator_contract(form, hyper):
    rng = np.random.default_rng(2)
    N, D = (a.ravel() for a in np.meshgrid(np.logspace(7, 9, 5), np.logspace(9, 11, 5)))
    X = np.column_stack([N, D])
    y = law_loss(N, D) * np.exp(rng.normal(0, 0.003, N.size))
    law = ChinchillaLaw(form=form, method="vpnls", bootstrap=40, seed=3, **hyper)
    assert law.fit(X, y) is law and law.converged_
    assert law.get_params()["form"] == form
    twin = ChinchillaLaw(form=form, method="vpnls", bootstrap=40, seed=3, **hyper).fit(X, y)
    assert twin.params_ == law.params_ and twin.ci_ == law.ci_
    again = ChinchillaLaw.from_dict(json.loads(json.dumps(law.to_dict())))
    a, b = predict_intervals(law, X[:3]), predict_intervals(again, X[:3])
    assert np.allclose(a["loss"], b["loss"]) and np.allclose(a["ci"], b["ci"]) and np.allclose(a["pi"], b["pi"])
    assert again.range_ == law.range_ and again.noise_ == law.noise_


def test_identification_says_whether_the_intervals_pin_the_law():
    """A wide grid of quiet runs pins every parameter within the bars; a decade-wide design at 5%
    scatter fits a curve but not its exponents, and says so, in FIT.json and in the printed facts."""
    from scalelab.laws import ChinchillaLaw
    from scalelab.laws.chinchilla import IDENTIFIED_BARS
    from scalelab.laws.render import fit_facts

    rng = np.random.default_rng(0)
    truth = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}

    def runs(n_lo, n_hi, d_lo, d_hi, sd):
        N, D = (a.ravel() for a in np.meshgrid(np.logspace(n_lo, n_hi, 5), np.logspace(d_lo, d_hi, 5)))
        y = truth["E"] + truth["A"] * N ** -truth["alpha"] + truth["B"] * D ** -truth["beta"]
        return np.column_stack([N, D]), y * np.exp(rng.normal(0, sd, N.size))

    wide = ChinchillaLaw(bootstrap=60, method="vpnls", E_fixed=1.69).fit(*runs(7, 10, 9, 12, 0.001))
    ident = wide.identification()
    assert ident["identified"] and set(ident["hi_lo"]) == set(IDENTIFIED_BARS)
    assert all(1.0 <= ident["hi_lo"][k] <= IDENTIFIED_BARS[k] for k in IDENTIFIED_BARS)
    narrow = ChinchillaLaw(bootstrap=60, method="vpnls", E_fixed=1.69).fit(*runs(7, 8, 9, 10, 0.05))
    ident = narrow.identification()
    assert not ident["identified"] and max(ident["hi_lo"][k] / IDENTIFIED_BARS[k] for k in IDENTIFIED_BARS) > 1
    doc = narrow.to_dict()["identification"]
    assert doc["identified"] is False and all(isinstance(v, (float, str)) for v in doc["hi_lo"].values())
    facts = dict(fit_facts(narrow))
    assert facts["identified"].startswith("no: alpha ") and "bars 2.5x, 2.5x, 100x, 100x" in facts["identified"]
    assert ChinchillaLaw(bootstrap=0, method="vpnls").fit(*runs(7, 10, 9, 12, 0.001)).identification() is None
