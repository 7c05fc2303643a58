"""Runs folders written before the layered layout still load, fit and report: the record format
did not change with the move of the code. The records under golden/runs_before_layout were written
by `scalelab demo --quick` before the move (records only; checkpoints left out)."""
from __future__ import annotations

from pathlib import Path

OLD = Path(__file__).parent / "golden" / "runs_before_layout"


def test_old_records_load_into_tables():
    from scalelab.tables import load_runs, posttrain_table

    runs = load_runs(OLD)
    assert not runs.problems and len(runs.records) >= 10
    assert {r.phase for r in runs.records} == {"pretrain", "posttrain"}
    post = posttrain_table(OLD / "posttrain")
    assert {"sft", "rlvr"} <= set(post.technique) and len(set(post.technique)) >= 4


def test_old_records_fit_and_report(cli, tmp_path):
    r = cli("fit", OLD / "pretrain", "--law", "isoflop", "--out", tmp_path / "fit.json")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fit.json").is_file()
    r = cli("report", OLD, "--out", tmp_path / "report.html", "--bootstrap", "0")
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "report.html").read_text()
    assert "Pretraining: 9 runs" in html and "Post-training:" in html
