"""`scalelab next`: proposed runs narrow the interval of the mean at the target; bad input is one line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scalelab.laws import ChinchillaLaw
from scalelab.laws.nextrun import next_runs
from tests.test_cli_fit import assert_one_line_error, chinchilla_csv, run

COLS = ["--col", "N=params", "--col", "loss=val_loss"]


def test_new_runs_narrow_the_interval(tmp_path):
    rng = np.random.default_rng(1)
    N, D = (a.ravel() for a in np.meshgrid(np.logspace(7, 8.5, 4), np.logspace(9, 10.5, 4)))
    y = (1.69 + 406.4 * N ** -0.34 + 410.7 * D ** -0.28) * np.exp(rng.normal(0, 0.005, N.size))
    X = np.column_stack([N, D])
    law = ChinchillaLaw(method="vpnls", bootstrap=0).fit(X, y)
    one = next_runs(law, X, budget=1e20, k=1)
    two = next_runs(law, X, budget=2e20, k=2)
    w = lambda r, when: np.diff(r[when]["ci95_mean"])[0]  # noqa: E731
    assert w(one, "after") < w(one, "before") and w(two, "after") <= w(two, "before")
    assert len(two["runs"]) == 2 and all(np.isclose(6 * r["N"] * r["D"], 1e20) for r in two["runs"])
    assert one["target"]["compute"] == pytest.approx(10 * (6 * N * D).max())
    # the prediction interval keeps the scatter of single runs
    assert w(one, "after") < np.diff(one["after"]["pi95_new_run"])[0]


def test_cli(tmp_path, capsys):
    csv = chinchilla_csv(tmp_path / "r.csv")
    code, out, err = run(["next", csv, *COLS, "--budget", "1e20", "--k", "2", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["runs"]) == 2 and {"before", "after", "target"} <= set(doc)
    code, out, err = run(["next", csv, *COLS, "--budget", "1e20"], capsys)
    assert code == 0 and "expected after" in out and "run 1:" in out


@pytest.mark.parametrize("extra, needle", [
    (["--budget", "-1"], "--budget must be a finite number"),
    (["--budget", "1e20", "--k", "0"], "--k must be between 1 and 20"),
    (["--budget", "1e20", "--at", "0"], "--at must be a finite number"),
    (["--budget", "1e20", "--form", "fixed-e"], "--form 'fixed-e': choose one of free, tied"),
])
def test_bad_input_is_one_line(tmp_path, capsys, extra, needle):
    csv = chinchilla_csv(tmp_path / "r.csv")
    code, _, err = run(["next", csv, *COLS, *extra], capsys)
    assert_one_line_error(code, err, needle)
