"""`scalelab demo` on the bundled sweep: fits, files and figures, and its bad input."""
from __future__ import annotations

import json

import pandas as pd

from scalelab.cli.demo import bundled_table
from tests.test_cli_fit import run


def test_bundled_table_is_a_sweep_the_fitters_accept():
    frame = pd.read_csv(bundled_table())
    assert {"N", "D", "C", "loss"} <= set(frame.columns)
    assert len(frame) >= 12 and frame["N"].nunique() >= 3 and frame["C"].nunique() >= 3
    assert (frame[["N", "D", "C", "loss"]] > 0).all().all()


def test_demo_writes_fits_and_figures(tmp_path, capsys):
    code, out, err = run(["demo", "--out", tmp_path / "d", "--bootstrap", "20"], capsys)
    assert code == 0, err
    for name in ("chinchilla", "isoflop"):
        doc = json.loads((tmp_path / "d" / f"{name}.json").read_text())
        assert doc["law"] == name and doc["n_points"] >= 12
        assert (tmp_path / "d" / f"{name}.png").stat().st_size > 10_000
    assert "Chinchilla fit" in out and "IsoFLOP fit" in out and "predicted loss" in out

    code, out, _ = run(["demo", "--out", tmp_path / "d", "--bootstrap", "0", "--json"], capsys)
    s = json.loads(out)
    ch = s["fits"]["chinchilla"]["params"]
    frame = pd.read_csv(bundled_table())
    # the irreducible loss sits below every measured loss, and 10x the compute predicts a lower loss
    assert 0 < ch["E"] < frame["loss"].min()
    assert s["next_budget"]["C"] == 10 * frame["C"].max()
    assert s["next_budget"]["predicted_loss"] < frame["loss"].min()


def test_demo_refuses_a_negative_bootstrap(tmp_path, capsys):
    code, _, err = run(["demo", "--out", tmp_path, "--bootstrap", "-1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--bootstrap" in err
