"""IsoFLOP fits refuse tables that are not IsoFLOP designs and warn about exact 3-point parabolas;
piped output keeps its lines whole."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tests.test_cli_fit import assert_one_line_error, run


def chin(N, D):
    return 1.69 + 406.4 * N ** -0.34 + 410.7 * D ** -0.28


def test_isoflop_refuses_a_continuum_of_compute(tmp_path, capsys):
    rng = np.random.default_rng(0)
    N = 10 ** rng.uniform(7, 9.5, 60)
    D = 10 ** rng.uniform(9, 11.5, 60)
    pd.DataFrame({"N": N, "D": D, "loss": chin(N, D)}).to_csv(tmp_path / "c.csv", index=False)
    code, _, err = run(["fit", tmp_path / "c.csv", "--law", "isoflop", "--bootstrap", "0"], capsys)
    assert_one_line_error(code, err, "not an IsoFLOP design", "--law auto")


def test_isoflop_warns_when_every_parabola_is_exact(tmp_path, capsys):
    rows = []
    for C in (1e18, 1e19, 1e20, 1e21):
        for f in (0.3, 1, 3):
            N = f * (C / 120) ** 0.5
            rows.append((N, C / 6 / N, C, chin(N, C / 6 / N)))
    pd.DataFrame(rows, columns=["N", "D", "C", "loss"]).to_csv(tmp_path / "i.csv", index=False)
    code, out, err = run(["fit", tmp_path / "i.csv", "--law", "isoflop", "--bootstrap", "0"], capsys)
    assert code == 0 and "warning: every budget holds exactly 3 sizes" in err


def test_piped_output_is_not_wrapped(cli, tmp_path):
    rows = [(N, C / (6 * N), C, chin(N, C / (6 * N))) for C in (1e18, 1e19, 1e20) for N in np.logspace(7, 9, 5)]
    pd.DataFrame(rows, columns=["N", "D", "C", "loss"]).to_csv(tmp_path / "i.csv", index=False)
    r = cli("fit", tmp_path / "i.csv", "--law", "isoflop", "--bootstrap", "0")
    assert r.returncode == 0, r.stderr
    assert "IsoFLOP profiles (Chinchilla approach 2; approach 1 as the envelope)" in r.stdout
    assert any(line.startswith(" optimiser │") and "budgets with a parabola minimum" in line
               for line in r.stdout.splitlines())
