"""`scalelab fit / predict / optimal` as a user runs them, and every bad input they must refuse
with a one-line error and exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scalelab.cli import main
from scalelab.records import RunRecord, write_record

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
FIT_KEYS = {"law", "params", "ci95", "n_points", "objective", "converged", "optimal"}


def chinchilla_csv(path, *, with_d=True, rows=None):
    rng = np.random.default_rng(0)
    N, D = (a.ravel() for a in np.meshgrid(np.logspace(7, 9.5, 5), np.logspace(9, 11.5, 5)))
    loss = (TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]) * np.exp(rng.normal(0, 0.002, N.size))
    df = pd.DataFrame({"params": N, "D": D, "C": 6 * N * D, "val_loss": loss})
    if not with_d:
        df = df.drop(columns="D")
    if rows is not None:
        df = df.iloc[:rows]
    df.to_csv(path, index=False)
    return path


def run(argv, capsys):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    try:
        main(list(map(str, argv)))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ---- the happy paths, in a real subprocess -----------------------------------------------------
def test_fit_predict_optimal_end_to_end(cli, tmp_path):
    csv = chinchilla_csv(tmp_path / "runs.csv")
    fit, fig = tmp_path / "FIT.json", tmp_path / "fig.png"
    r = cli("fit", csv, "--law", "chinchilla", "--col", "N=params", "--col", "loss=val_loss",
            "--n-init", "300", "--bootstrap", "50", "--out", fit, "--plot", fig)
    assert r.returncode == 0, r.stderr
    assert "95% interval" in r.stdout and "alpha" in r.stdout and "converged" in r.stdout
    doc = json.loads(fit.read_text())
    assert FIT_KEYS <= set(doc) and doc["law"] == "chinchilla" and doc["n_points"] == 25
    assert set(doc["params"]) == {"E", "A", "B", "alpha", "beta"} == set(doc["ci95"])
    assert set(doc["optimal"]) == {"a", "b"} and doc["converged"] is True
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size < 400_000

    r = cli("predict", fit, "--params", "1e9", "--tokens", "2e10", "--json")
    assert r.returncode == 0, r.stderr
    pred = json.loads(r.stdout)
    p = doc["params"]
    expect = p["E"] + p["A"] * 1e9 ** -p["alpha"] + p["B"] * 2e10 ** -p["beta"]
    assert np.isclose(pred["loss"], expect, rtol=1e-12)

    r = cli("optimal", fit, "--compute", "1e21", "--json")
    assert r.returncode == 0, r.stderr
    alloc = json.loads(r.stdout)["allocation"]
    assert np.isclose(6 * alloc["N"] * alloc["D"], 1e21) and np.isclose(alloc["tokens_per_param"], alloc["D"] / alloc["N"])

    r = cli("optimal", fit, "--compute", "1e21", "--inference-tokens", "1e12")
    assert r.returncode == 0, r.stderr
    assert "inference-aware" in r.stdout and "total FLOPs saved" in r.stdout


def test_d_derived_from_c_with_a_notice(tmp_path, capsys):
    csv = chinchilla_csv(tmp_path / "runs.csv", with_d=False)
    code, out, err = run(["fit", csv, "--law", "chinchilla", "--col", "N=params", "--col", "loss=val_loss",
                          "--n-init", "100", "--bootstrap", "0"], capsys)
    assert code == 0, err
    assert "D = C/(6N)" in err


def test_power_isoflop_datacon_and_runs_dir(tmp_path, capsys):
    csv = chinchilla_csv(tmp_path / "runs.csv")
    code, out, err = run(["fit", csv, "--law", "power", "--x", "C", "--col", "loss=val_loss", "--bootstrap", "0",
                          "--col", "N=params", "--out", tmp_path / "p.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "p.json").read_text())["x"] == "C"
    code, out, err = run(["predict", tmp_path / "p.json", "--params", "1e9", "--tokens", "1e10"], capsys)
    assert code == 0 and "predicted loss" in out

    # IsoFLOP budgets: 4 budgets x 6 sizes around each optimum.
    rows = []
    for C in (1e18, 1e19, 1e20, 1e21):
        for N in np.logspace(np.log10(C) / 2 - 5, np.log10(C) / 2 - 3, 6):
            D = C / (6 * N)
            rows.append((N, D, C, TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]))
    pd.DataFrame(rows, columns=["N", "D", "C", "loss"]).to_csv(tmp_path / "iso.csv", index=False)
    code, out, err = run(["fit", tmp_path / "iso.csv", "--law", "isoflop", "--bootstrap", "20",
                          "--out", tmp_path / "iso.json", "--plot", tmp_path / "iso.png"], capsys)
    assert code == 0, err
    assert "budgets" in out and (tmp_path / "iso.png").exists()
    code, out, err = run(["optimal", tmp_path / "iso.json", "--compute", "1e22"], capsys)
    assert code == 0 and "tokens per parameter" in out

    # A runs directory written through the ledger.
    runs = tmp_path / "runs"
    for i, (N, D) in enumerate([(n, d) for n in (1e6, 3e6, 1e7) for d in (1e8, 1e9, 1e10)]):
        loss = TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]
        rec = RunRecord(run_id=f"r{i}", phase="pretrain", technique="pretrain", task="testbed",
                        n_params_nonembedding=int(N), tokens=int(D), flops={"pretrain": 6 * N * D})
        write_record(runs / f"r{i}", rec.complete(loss=float(loss)))
    failed = RunRecord(run_id="broken", phase="pretrain", technique="pretrain", task="testbed")
    write_record(runs / "broken", failed.fail("out of memory"))
    # a whole pipeline's runs dir: a test-time record (no loss) next to the sweep is left out, and said
    tt = RunRecord(run_id="cot-d1", phase="testtime", technique="cot", task="testbed", parent_id="r0")
    write_record(runs / "r0-tt" / "cot-d1", tt.complete(accuracy=0.5, n=1))
    code, out, err = run(["fit", runs, "--law", "chinchilla", "--n-init", "200", "--bootstrap", "0",
                          "--out", tmp_path / "runs.json"], capsys)
    assert code == 0, err
    assert "run left out" in err and "out of memory" in err
    assert "read the 9 pretraining runs; left out 1 post-training and test-time records" in " ".join(err.split())
    doc = json.loads((tmp_path / "runs.json").read_text())
    assert doc["n_points"] == 9 and abs(doc["params"]["alpha"] - TRUE["alpha"]) < 0.01


def test_datacon_fit_and_predict(tmp_path, capsys):
    from scalelab.laws.datacon import MUENNIGHOFF_2023, datacon_loss

    rows = [(N, D, U) for N in (5e7, 1e8, 2e8, 5e8, 1e9) for D in (2e9, 1e10, 5e10) for U in (D, D / 4, D / 16)]
    X = np.array(rows)
    df = pd.DataFrame(X, columns=["N", "D", "unique"])
    df["loss"] = datacon_loss(X[:, 0], X[:, 1], X[:, 2], MUENNIGHOFF_2023)
    df.to_csv(tmp_path / "dc.csv", index=False)
    code, out, err = run(["fit", tmp_path / "dc.csv", "--law", "datacon", "--col", "U=unique", "--bootstrap", "0",
                          "--out", tmp_path / "dc.json"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "dc.json").read_text())
    assert {"R_D_star", "R_N_star", "E", "A", "B", "alpha", "beta"} == set(doc["params"])
    code, out, err = run(["predict", tmp_path / "dc.json", "--params", "1e9", "--tokens", "1e11",
                          "--unique-tokens", "1e10", "--json"], capsys)
    assert code == 0 and json.loads(out)["inputs"]["U"] == 1e10


# ---- bad input: one line, exit code 2, no traceback -----------------------------------------
def test_missing_file_in_a_subprocess(cli, tmp_path):
    r = cli("fit", tmp_path / "nope.csv", "--law", "chinchilla")
    assert_one_line_error(r.returncode, r.stderr, "no such file")


def test_missing_and_misspelled_columns(tmp_path, capsys):
    csv = chinchilla_csv(tmp_path / "runs.csv")
    code, _, err = run(["fit", csv, "--law", "chinchilla"], capsys)  # no 'loss', no 'N'
    assert_one_line_error(code, err, "'loss'", "columns in the table: params, D, C, val_loss")
    code, _, err = run(["fit", csv, "--law", "chinchilla", "--col", "loss=val_loss"], capsys)
    assert_one_line_error(code, err, "'N'", "params")
    code, _, err = run(["fit", csv, "--law", "chinchilla", "--col", "N=param", "--col", "loss=val_loss"], capsys)
    assert_one_line_error(code, err, "'param'", "did you mean 'params'")
    code, _, err = run(["fit", csv, "--law", "chinchilla", "--col", "X=params"], capsys)
    assert_one_line_error(code, err, "not one of")
    code, _, err = run(["fit", csv, "--law", "chinchilla", "--col", "Nparams"], capsys)
    assert_one_line_error(code, err, "expected STANDARD=NAME")
    code, _, err = run(["fit", csv, "--law", "chinchila"], capsys)
    assert_one_line_error(code, err, "choose one of power, chinchilla, isoflop, datacon")
    code, _, err = run(["fit", csv, "--law", "chinchilla", "--x", "C"], capsys)
    assert_one_line_error(code, err, "--x applies to --law power")
    code, _, err = run(["fit", csv, "--law", "isoflop", "--n-init", "10"], capsys)
    assert_one_line_error(code, err, "--n-init applies to --law power / chinchilla")


@pytest.mark.parametrize("bad, needle", [
    ("abc", "non-numeric in row 4 ('abc')"),
    ("", "empty/NaN in row 4"),
    ("inf", "infinite in row 4"),
    ("0", "zero or negative in row 4"),
    ("-3", "zero or negative in row 4"),
])
def test_bad_values_name_the_rows(tmp_path, capsys, bad, needle):
    csv = chinchilla_csv(tmp_path / "runs.csv")
    lines = csv.read_text().splitlines()
    cells = lines[4].split(",")
    cells[3] = bad                       # the loss of data row 4
    lines[4] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    code, _, err = run(["fit", csv, "--law", "chinchilla", "--col", "N=params", "--col", "loss=val_loss"], capsys)
    assert_one_line_error(code, err, "'val_loss' (as loss)", needle)


def test_too_few_points_and_sizes(tmp_path, capsys):
    csv = chinchilla_csv(tmp_path / "runs.csv", rows=4)
    code, _, err = run(["fit", csv, "--law", "chinchilla", "--col", "N=params", "--col", "loss=val_loss"], capsys)
    assert_one_line_error(code, err, "at least 6 runs", "has 4")
    df = pd.read_csv(chinchilla_csv(tmp_path / "runs.csv"))
    df["params"] = np.where(df["params"] > 1e8, 2e9, 5e7)   # two model sizes only
    df.to_csv(tmp_path / "two.csv", index=False)
    code, _, err = run(["fit", tmp_path / "two.csv", "--law", "chinchilla", "--col", "N=params",
                        "--col", "loss=val_loss"], capsys)
    assert_one_line_error(code, err, "at least 3 model sizes", "has 2")
    code, _, err = run(["fit", tmp_path / "two.csv", "--law", "isoflop", "--col", "N=params",
                        "--col", "loss=val_loss"], capsys)
    assert_one_line_error(code, err, "model sizes")


def test_wrong_or_broken_fit_json(tmp_path, capsys):
    rows = [(N, 1e18 / (6 * N), 1e18, 2 + (np.log10(N) - 8) ** 2 / 10) for N in np.logspace(7, 9, 5)]
    rows += [(N, 1e19 / (6 * N), 1e19, 1.9 + (np.log10(N) - 8.5) ** 2 / 10) for N in np.logspace(7.5, 9.5, 5)]
    pd.DataFrame(rows, columns=["N", "D", "C", "loss"]).to_csv(tmp_path / "iso.csv", index=False)
    code, _, err = run(["fit", tmp_path / "iso.csv", "--law", "isoflop", "--bootstrap", "0",
                        "--out", tmp_path / "iso.json"], capsys)
    assert code == 0, err
    code, _, err = run(["predict", tmp_path / "iso.json", "--params", "1e9", "--tokens", "1e10"], capsys)
    assert_one_line_error(code, err, "holds a 'isoflop' fit", "`predict` needs one of: power, chinchilla, datacon")
    code, _, err = run(["optimal", tmp_path / "iso.json", "--compute", "1e21", "--inference-tokens", "1e12"], capsys)
    assert_one_line_error(code, err, "needs a chinchilla fit")
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run(["optimal", tmp_path / "bad.json", "--compute", "1e21"], capsys)
    assert_one_line_error(code, err, "not valid JSON")
    (tmp_path / "other.json").write_text(json.dumps({"law": "kaplan", "params": {}}))
    code, _, err = run(["predict", tmp_path / "other.json", "--params", "1", "--tokens", "1"], capsys)
    assert_one_line_error(code, err, "unknown law 'kaplan'")
    code, _, err = run(["optimal", tmp_path / "missing.json", "--compute", "1e21"], capsys)
    assert_one_line_error(code, err, "no such file")
    code, _, err = run(["optimal", tmp_path / "iso.json", "--compute", "-5"], capsys)
    assert_one_line_error(code, err, "--compute must be a finite number > 0")
    # a FIT.json saved by an editor that writes a byte-order mark is read like one without
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "iso.json").read_bytes())
    plain = run(["optimal", tmp_path / "iso.json", "--compute", "1e21"], capsys)
    assert plain[0] == 0, plain[2]
    assert run(["optimal", tmp_path / "bom.json", "--compute", "1e21"], capsys)[:2] == plain[:2]


def test_non_convergence_is_reported(tmp_path, capsys, monkeypatch):
    """A fit whose optimiser stops early says so on stderr and in FIT.json."""
    import scalelab.laws.loghuber as lh

    monkeypatch.setattr(lh, "MULTISTART_TOL", dict(gtol=1e-30, ftol=0.0, max_iter=2))
    monkeypatch.setattr(lh, "finish", lambda fg, batch, **kw: _batch_only(fg, batch))
    csv = chinchilla_csv(tmp_path / "runs.csv")
    code, out, err = run(["fit", csv, "--law", "chinchilla", "--col", "N=params", "--col", "loss=val_loss",
                          "--n-init", "20", "--bootstrap", "0", "--out", tmp_path / "f.json"], capsys)
    assert code == 0
    assert "warning: the optimiser did not converge" in err and "NO" in out
    assert json.loads((tmp_path / "f.json").read_text())["converged"] is False


def _batch_only(fg, batch):
    """The best batch row as the result, without scipy's clean-up (to provoke non-convergence)."""
    from scipy.optimize import OptimizeResult

    from scalelab.laws.optimize import STOP_REASONS

    i = int(np.nanargmin(batch.fun))
    return OptimizeResult(x=batch.x[i], fun=float(batch.fun[i]), success=bool(batch.converged[i]),
                          message=STOP_REASONS[batch.reason[i]], nit=int(batch.nit[i]), check=None)


def test_floor_fixes_E_and_recovers_the_other_parameters(tmp_path, capsys):
    path = chinchilla_csv(tmp_path / "t.csv")
    code, out, err = run(["fit", path, "--law", "chinchilla", "--col", "N=params", "--col", "loss=val_loss",
                          "--floor", TRUE["E"], "--bootstrap", 20, "--out", tmp_path / "f.json"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["params"]["E"] == TRUE["E"] and doc["settings"]["E_fixed"] == TRUE["E"]
    assert doc["params"]["alpha"] == pytest.approx(TRUE["alpha"], abs=0.02)
    assert doc["params"]["beta"] == pytest.approx(TRUE["beta"], abs=0.02)
    assert "fixed (--floor)" in out
    # a floor at or above a measured loss cannot be an irreducible loss; auto needs recorded floors
    for bad, msg in (("5", "below every loss"), ("-1", "positive"), ("auto", "entropy floors")):
        code, _, err = run(["fit", path, "--law", "chinchilla", "--col", "N=params", "--col", "loss=val_loss",
                            "--floor", bad], capsys)
        assert code == 2 and msg in err and err.count("\n") == 1
    code, _, err = run(["fit", path, "--law", "power", "--col", "N=params", "--col", "loss=val_loss",
                        "--floor", "1"], capsys)
    assert code == 2 and "--floor applies to --law chinchilla" in err


def test_floor_auto_reads_the_entropy_floor_the_runs_recorded(tmp_path, capsys):
    df = pd.read_csv(chinchilla_csv(tmp_path / "t.csv"))
    for i, row in df.iterrows():
        rec = RunRecord(run_id=f"r{i}", phase="pretrain", technique="pretrain", task="testbed",
                        n_params_nonembedding=int(row.params), tokens=int(row.D), flops={"pretrain": row.C})
        rec.complete(loss=row.val_loss, entropy_floor=TRUE["E"])
        write_record(tmp_path / "runs" / f"r{i}", rec)
    code, out, err = run(["fit", tmp_path / "runs", "--law", "chinchilla", "--floor", "auto", "--bootstrap", 0,
                          "--out", tmp_path / "f.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "f.json").read_text())["params"]["E"] == TRUE["E"]
