"""Two-step downstream law: a known sigmoid of a known Chinchilla law is recovered, the CLI
predicts with it, and bad input is one line with exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scalelab.laws.downstream import AccuracySigmoid, TwoStepLaw, sigmoid
from tests.test_cli_fit import assert_one_line_error, run


def data(tmp_path):
    N, D = (a.ravel() for a in np.meshgrid(np.logspace(7, 9, 5), np.logspace(9, 11, 4)))
    L = 0.6 + 40 * N ** -0.3 + 60 * D ** -0.3
    acc = sigmoid(L, 0.25, 1.0, 4.0, 1.4)
    pd.DataFrame({"N": N, "D": D, "task_loss": L, "accuracy": acc}).to_csv(tmp_path / "r.csv", index=False)
    return N, D, L, acc, tmp_path / "r.csv"


def test_two_step_recovers_a_known_law(tmp_path):
    N, D, L, acc, _ = data(tmp_path)
    law = TwoStepLaw(chance=0.25, ceiling=1.0).fit(np.column_stack([N, D]), L, L, acc)
    assert law.converged_
    assert law.step2_.params_["k"] == pytest.approx(4.0, rel=1e-3)
    p = law.predict([[1e10, 1e12]])
    truth = sigmoid(0.6 + 40 * 1e10 ** -0.3 + 60 * 1e12 ** -0.3, 0.25, 1.0, 4.0, 1.4)
    assert abs(p["accuracy"][0] - truth) < 0.01
    free = AccuracySigmoid().fit(L, acc)
    assert free.converged_ and abs(free.params_["floor"] - 0.25) < 0.05


def test_cli_fits_and_predicts(tmp_path, capsys):
    *_, csv = data(tmp_path)
    code, out, err = run(["downstream", csv, "--chance", "0.25", "--ceiling", "1", "--params", "1e10",
                          "--tokens", "1e12", "--out", tmp_path / "d.json", "--plot", tmp_path / "d.png"], capsys)
    assert code == 0, err
    assert "step 1" in out and "step 2" in out and "accuracy" in out
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["law"] == "two-step" and 0.25 < doc["prediction"]["accuracy"] < 1
    assert (tmp_path / "d.png").stat().st_size > 10_000


def test_frontier_weight_pulls_step_1_toward_the_largest_runs():
    """A task loss that is not of step 1's form (a third term in N·D): weighting the runs by
    (C/C_max)^1 fits the largest-compute runs closer, the smallest ones worse, extrapolates
    better, and leaves step 2 alone."""
    N = np.repeat(np.logspace(7, 9, 4), 4)
    D = N * np.tile([10, 20, 40, 80], 4)
    true = lambda N, D: 0.5 + 40 * N ** -0.3 + 60 * D ** -0.3 + 300 * (N * D) ** -0.2  # noqa: E731
    L = true(N, D)
    acc = sigmoid(L, 0.25, 1.0, 4.0, 1.4)
    X, C = np.column_stack([N, D]), N * D
    top, bottom = C >= np.sort(C)[-4], C <= np.sort(C)[3]
    plain = TwoStepLaw(chance=0.25, ceiling=1.0).fit(X, L, L, acc)
    weighted = TwoStepLaw(chance=0.25, ceiling=1.0, frontier_weight=1.0).fit(X, L, L, acc)
    assert plain.converged_ and weighted.converged_
    miss = {k: np.abs(np.log(law.step1_.predict(X) / L)) for k, law in (("plain", plain), ("weighted", weighted))}
    assert miss["weighted"][top].mean() < 0.7 * miss["plain"][top].mean()
    assert miss["weighted"][bottom].mean() > 2 * miss["plain"][bottom].mean()
    beyond = {k: abs(law.predict([[1e10, 8e11]])["task_loss"][0] / true(1e10, 8e11) - 1)
              for k, law in (("plain", plain), ("weighted", weighted))}
    assert beyond["weighted"] < 0.5 * beyond["plain"]
    assert weighted.step2_.params_ == plain.step2_.params_
    assert weighted.to_dict()["step1"]["settings"]["frontier_weight"] == 1.0


def test_cli_frontier_weight_reaches_step_1(tmp_path, capsys):
    *_, csv = data(tmp_path)
    docs = {}
    for p in ("0", "1"):
        code, out, err = run(["downstream", csv, "--chance", "0.25", "--frontier-weight", p, "--json"], capsys)
        assert code == 0, err
        docs[p] = json.loads(out)["step1"]
    assert docs["0"]["settings"]["frontier_weight"] == 0.0 and docs["1"]["settings"]["frontier_weight"] == 1.0
    code, out, err = run(["downstream", csv, "--chance", "0.25", "--frontier-weight", "1"], capsys)
    assert code == 0 and "weighted by (C/C_max)^1" in out


@pytest.mark.parametrize("extra, needle", [
    (["--params", "1e9"], "give both --params and --tokens"),
    (["--loss-col", "bpb"], "column 'bpb'"),
    (["--acc-col", "acc"], "column 'acc'"),
    (["--form", "wide"], "--form 'wide': choose one of free, tied"),
    (["--chance", "25"], "chance must lie in [0, 1]"),
    (["--frontier-weight", "-1"], "--frontier-weight must be a number >= 0"),
    (["--frontier-weight", "nan"], "--frontier-weight must be a number >= 0"),
])
def test_bad_input_is_one_line(tmp_path, capsys, extra, needle):
    *_, csv = data(tmp_path)
    code, _, err = run(["downstream", csv, *extra], capsys)
    assert_one_line_error(code, err, needle)


def test_percent_accuracies_are_refused(tmp_path, capsys):
    *_, csv = data(tmp_path)
    df = pd.read_csv(csv)
    df["accuracy"] *= 100
    df.to_csv(tmp_path / "p.csv", index=False)
    code, _, err = run(["downstream", tmp_path / "p.csv"], capsys)
    assert_one_line_error(code, err, "fractions, not percent")
