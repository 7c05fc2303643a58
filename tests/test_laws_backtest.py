"""Law forms, variable projection, backtests and `fit --law auto`, with the bad input each new
option must refuse in one line (exit code 2)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scalelab.errors import InputError
from scalelab.laws import ChinchillaLaw
from scalelab.laws.backtest import backtest, levels, runs_frame, splits
from tests.test_cli_fit import assert_one_line_error, run

TIED = {"E": 1.8, "A": 500.0, "B": 1500.0, "alpha": 0.33, "beta": 0.33}


def ladder(path, p=TIED, sd=0.002, seed=0):
    """An over-training ladder: 6 sizes x 5 token multipliers (10-160 tokens per parameter)."""
    rng = np.random.default_rng(seed)
    rows = [(N, N * m) for N in np.logspace(7, 9, 6) for m in (10, 20, 40, 80, 160)]
    N, D = np.array(rows).T
    loss = (p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]) * np.exp(rng.normal(0, sd, N.size))
    pd.DataFrame({"N": N, "D": D, "loss": loss}).to_csv(path, index=False)
    return path


def test_forms_and_methods_reach_one_optimum(tmp_path):
    df = pd.read_csv(ladder(tmp_path / "l.csv"))
    X, y = df[["N", "D"]].to_numpy(), df["loss"].to_numpy()
    fits = {(f, m): ChinchillaLaw(form=f, method=m, bootstrap=0).fit(X, y)
            for f in ("free", "tied") for m in ("lbfgs", "vpnls")}
    for f in ("free", "tied"):
        a, b = fits[(f, "lbfgs")], fits[(f, "vpnls")]
        assert a.converged_ and b.converged_
        assert b.result_.fun <= a.result_.fun * (1 + 1e-6)
    tied = fits[("tied", "vpnls")].params_
    assert tied["alpha"] == tied["beta"] and abs(tied["alpha"] - 0.33) < 0.03
    again = ChinchillaLaw.from_dict(fits[("tied", "vpnls")].to_dict())
    assert again.form == "tied" and np.allclose(again.predict(X), fits[("tied", "vpnls")].predict(X))
    with pytest.raises(InputError, match="needs a known irreducible loss"):
        ChinchillaLaw(form="fixed-e", bootstrap=0).fit(X, y)
    fixed = ChinchillaLaw(form="fixed-e", E_fixed=1.8, method="vpnls", bootstrap=0).fit(X, y)
    assert fixed.params_["E"] == 1.8 and fixed.converged_


def test_levels_and_splits():
    C = np.repeat([1e18, 3e18, 1e19, 3e19, 1e20], 4)
    assert list(levels(C, 0.1, 0.25)) == list(np.repeat(range(5), 4))
    cont = np.logspace(18, 21, 60)              # a continuum: binned at 0.25 dex
    assert levels(cont, 0.1, 0.25).max() == 11
    frame = pd.DataFrame({"N": np.repeat([1e7, 2e7, 4e7, 8e7, 1.6e8], 4), "C": C, "D": 1.0, "loss": 1.0})
    sp = splits(frame, "largest-compute")
    assert sp[0][2].sum() == 4 and sp[0][1].sum() == 16 and len(sp) == 2   # primary + one rolling level
    assert splits(frame, 2)[0][2].sum() == 8
    with pytest.raises(InputError, match="at least 6"):
        splits(frame, 4)


def test_backtest_scores_the_true_form_well(tmp_path):
    runs = runs_frame(ladder(tmp_path / "l.csv"))
    bt = backtest(runs, ["free", "tied", "kaplan"], holdout="largest-params")
    rows = {r["law"]: r for r in bt["candidates"]}
    assert set(rows) == {"free", "tied", "kaplan"} and bt["best"] in rows
    assert rows["tied"]["mean_abs_err"] < 0.01 and rows["free"]["mean_abs_err"] < 0.01
    # L(C) cannot tell 10 from 160 tokens per parameter at one compute: it misses the held-out size
    assert rows["kaplan"]["max_abs_err"] > rows["tied"]["max_abs_err"]
    for r in rows.values():
        assert {"mean_abs_err", "max_abs_err", "bias", "rolling"} <= set(r)


def test_backtest_and_auto_from_the_command_line(tmp_path, capsys):
    csv = ladder(tmp_path / "l.csv")
    code, out, err = run(["backtest", csv, "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert {"candidates", "best"} <= set(doc) and doc["candidates"][0]["law"] == "free"
    code, out, err = run(["backtest", csv, "--law", "tied", "--law", "kaplan", "--holdout", "largest-params"], capsys)
    assert code == 0 and "rolling mean" in out and "best: " in out
    code, out, err = run(["fit", csv, "--law", "auto", "--bootstrap", "20", "--out", tmp_path / "f.json"], capsys)
    assert code == 0, err
    assert out.startswith("chose ") and "by backtest" in out.splitlines()[0]
    fit = json.loads((tmp_path / "f.json").read_text())
    assert fit["selected_by"]["by"] == "backtest" and fit["backtest"]["best"] == fit["selected_by"]["choice"]
    assert fit["law"] in ("chinchilla", "power")
    code, out, err = run(["fit", csv, "--law", "chinchilla", "--form", "tied", "--method", "vpnls", "--bootstrap", "0",
                          "--out", tmp_path / "t.json"], capsys)
    assert code == 0 and json.loads((tmp_path / "t.json").read_text())["settings"]["form"] == "tied"


@pytest.mark.parametrize("argv, needle", [
    (["backtest", "{csv}", "--holdout", "top"], "--holdout 'top': expected"),
    (["backtest", "{csv}", "--holdout", "0"], "positive integer"),
    (["backtest", "{csv}", "--holdout", "9"], "a backtest needs at least 11"),
    (["backtest", "{csv}", "--law", "gpt"], "backtest candidates are free, tied"),
    (["backtest", "{csv}", "--law", "fixed-e"], "needs --floor"),
    (["backtest", "{csv}", "--law", "datacon"], "needs unique tokens U"),
    (["backtest", "{csv}", "--method", "newton"], "--method 'newton': choose one of lbfgs, vpnls"),
    (["backtest", "{json}"], "is a FIT.json (a fitted law), not a table of runs"),
    (["fit", "{json}", "--law", "chinchilla"], "is a FIT.json (a fitted law), not a table of runs"),
    (["fit", "{csv}", "--law", "chinchilla", "--form", "loose"], "--form 'loose': choose one of free, tied, fixed-e"),
    (["fit", "{csv}", "--law", "chinchilla", "--form", "fixed-e"], "--form fixed-e needs --floor"),
    (["fit", "{csv}", "--law", "power", "--form", "tied"], "--form applies to --law chinchilla / datacon, not power"),
    (["fit", "{csv}", "--law", "coverage", "--form", "tied"], "--form applies to --law chinchilla / datacon"),
    (["fit", "{csv}", "--law", "datacon", "--form", "fixed-e"], "--form 'fixed-e': choose one of free, tied"),
    (["fit", "{csv}", "--law", "isoflop", "--method", "vpnls"], "--method applies to --law chinchilla"),
    (["fit", "{csv}", "--law", "chinchilla", "--holdout", "2"], "--holdout applies to --law auto"),
    (["fit", "{csv}", "--law", "auto", "--form", "tied"], "--law auto chooses the form itself"),
    (["fit", "{csv}", "--law", "auto", "--holdout", "x"], "--holdout 'x': expected"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, needle):
    csv = ladder(tmp_path / "l.csv")
    (tmp_path / "FIT.json").write_text(json.dumps({"law": "chinchilla", "params": TIED}))
    argv = [a.format(csv=csv, json=tmp_path / "FIT.json") for a in argv]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, needle)


def test_floor_holds_E_in_the_fixed_e_candidate_only(tmp_path):
    runs = runs_frame(ladder(tmp_path / "l.csv"))
    bt = backtest(runs, ["free", "fixed-e"], holdout="largest-params", floor=1.8)
    rows = {r["law"]: r for r in bt["candidates"]}
    assert rows["free"]["mean_abs_err"] != rows["fixed-e"]["mean_abs_err"]


def test_one_standard_error_rule_prefers_the_simpler_form():
    from scalelab.laws.backtest import choose

    def row(law, folds):
        return {"law": law, "mean_abs_err": folds[0],
                "rolling": {"mean_abs_err": float(np.mean(folds)), "per_fold": [{"mean_abs_err": f} for f in folds]}}

    free, tied = row("free", [0.010, 0.004, 0.006]), row("tied", [0.011, 0.005, 0.006])
    assert choose([free, tied])["law"] == "tied" and tied["chosen_over"] == "free"
    far = row("tied", [0.030, 0.020, 0.025])
    assert choose([row("free", [0.010, 0.004, 0.006]), far])["law"] == "free"


def test_one_standard_error_rule_stays_within_the_family():
    from scalelab.laws.backtest import choose

    def row(law, folds):
        return {"law": law, "mean_abs_err": folds[0],
                "rolling": {"mean_abs_err": float(np.mean(folds)), "per_fold": [{"mean_abs_err": f} for f in folds]}}

    # L(C) has fewer parameters but is not nested in Chinchilla's law: it wins only by being lowest
    assert choose([row("free", [0.010, 0.004, 0.006]), row("kaplan", [0.011, 0.005, 0.006])])["law"] == "free"


def test_auto_reads_the_pretraining_runs_of_a_runs_directory(tmp_path, capsys):
    from scalelab.records import RunRecord, write_record

    df = pd.read_csv(ladder(tmp_path / "l.csv"))
    for i, row in df.iterrows():
        rec = RunRecord(run_id=f"r{i}", phase="pretrain", technique="pretrain", task="testbed",
                        n_params_nonembedding=int(row.N), tokens=int(row.D), flops={"pretrain": 6 * row.N * row.D})
        rec.complete(loss=row.loss)
        write_record(tmp_path / "runs" / f"r{i}", rec)
    post = RunRecord(run_id="sft", phase="posttrain", technique="sft", task="testbed", flops={"posttrain": 1e12})
    post.complete(accuracy=0.5)
    write_record(tmp_path / "runs" / "sft", post)
    code, out, err = run(["fit", tmp_path / "runs", "--law", "auto", "--bootstrap", "0"], capsys)
    assert code == 0, err
    assert out.startswith("chose ") and "left out 1 post-training" in err


def test_auto_offers_the_fixed_e_form_when_every_run_records_one_floor(tmp_path, capsys):
    """Pretraining runs that record one entropy floor make fixed-E a candidate of --law auto (with a
    note; post-training records beside them do not count); one run without it, or two floors, and
    the candidates are as before."""
    from scalelab.records import RunRecord, write_record

    df = pd.read_csv(ladder(tmp_path / "l.csv"))
    floor = 0.9 * float(df["loss"].min())

    def runs(folder, floors):
        for i, (row, f) in enumerate(zip(df.itertuples(), floors)):
            rec = RunRecord(run_id=f"r{i}", phase="pretrain", technique="pretrain", task="testbed",
                            n_params_nonembedding=int(row.N), tokens=int(row.D), flops={"pretrain": 6 * row.N * row.D})
            rec.complete(loss=row.loss, **({} if f is None else {"entropy_floor": f}))
            write_record(tmp_path / folder / f"r{i}", rec)
        post = RunRecord(run_id="sft", phase="posttrain", technique="sft", task="testbed", flops={"posttrain": 1e12})
        post.complete(accuracy=0.5)  # no floor, and no pretraining point: it does not count
        write_record(tmp_path / folder / "sft", post)
        code, out, err = run(["fit", tmp_path / folder, "--law", "auto", "--bootstrap", "0", "--json"], capsys)
        assert code == 0, err
        return {c["law"] for c in json.loads(out)["backtest"]["candidates"]}, err

    got, err = runs("one", [floor] * len(df))
    assert "fixed-e" in got and f"records the entropy floor {floor:.6g}" in err
    for folder, floors in (("missing", [floor] * (len(df) - 1) + [None]), ("two", [floor, 0.5 * floor] * len(df))):
        got, err = runs(folder, floors)
        assert "fixed-e" not in got and "entropy floor" not in err


def test_a_csv_column_of_entropy_floors_counts_as_recorded(tmp_path, capsys):
    """A CSV with an `entropy_floor` column (the bundled testbed table has one) gives --floor auto its
    value and makes fixed-E a candidate of --law auto, as run records do."""
    df = pd.read_csv(ladder(tmp_path / "l.csv"))
    floor = 0.9 * float(df["loss"].min())
    df.assign(entropy_floor=floor).to_csv(tmp_path / "floors.csv", index=False)
    code, out, err = run(["fit", tmp_path / "floors.csv", "--law", "chinchilla", "--form", "fixed-e", "--floor",
                          "auto", "--bootstrap", "0", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["params"]["E"] == pytest.approx(floor)
    code, out, err = run(["fit", tmp_path / "floors.csv", "--law", "auto", "--bootstrap", "0", "--json"], capsys)
    assert code == 0, err
    assert "fixed-e" in {c["law"] for c in json.loads(out)["backtest"]["candidates"]}


def test_datacon_tied_form_from_the_command_line(tmp_path, capsys):
    from scalelab.laws.datacon import datacon_loss

    p = dict(TIED, R_D_star=15.0, R_N_star=5.0)
    rows = [(N, D, U) for N in (5e7, 1e8, 2e8, 5e8, 1e9) for D in (2e9, 1e10, 5e10) for U in (D, D / 4, D / 16)]
    X = np.array(rows)
    pd.DataFrame({"N": X[:, 0], "D": X[:, 1], "U": X[:, 2],
                  "loss": datacon_loss(X[:, 0], X[:, 1], X[:, 2], p)}).to_csv(tmp_path / "dc.csv", index=False)
    code, out, err = run(["fit", tmp_path / "dc.csv", "--law", "datacon", "--form", "tied", "--bootstrap", "0",
                          "--out", tmp_path / "dc.json"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "dc.json").read_text())
    assert doc["settings"]["tie_exponents"] is True and doc["params"]["alpha"] == doc["params"]["beta"]
