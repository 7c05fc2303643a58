import json
import os
import multiprocessing as mp

import pandas as pd
import pytest

from scalelab import records as ledger
from scalelab import tables
from scalelab.errors import InputError


def _rec(run_id, **kw):
    base = dict(run_id=run_id, phase="pretrain", technique="pretrain", task="testbed",
                n_params=1200, n_params_nonembedding=1000, tokens=5000,
                flops={"pretrain": 3.2e10}, flops_6n={"pretrain": 3.0e10})
    base.update(kw)
    return ledger.RunRecord(**base)


def test_record_roundtrip_and_table(tmp_path):
    for i in range(3):
        r = _rec(f"r{i}", tokens=1000 * (i + 1)).complete(loss=2.0 - 0.1 * i, accuracy=0.5)
        ledger.write_record(tmp_path / f"r{i}", r)
    back = ledger.read_record(tmp_path / "r1")
    assert back.tokens == 2000 and back.metrics["loss"] == pytest.approx(1.9)
    table = tables.load_table(tmp_path)
    df = table.frame.sort_values("run_id")
    assert list(df["D"]) == [1000, 2000, 3000]
    assert list(df["N"]) == [1000] * 3
    assert df["C"].iloc[0] == 3.2e10 and df["C_6N"].iloc[0] == 3.0e10
    assert df["metrics.accuracy"].tolist() == [0.5] * 3
    assert table.problems == []


def test_corrupt_partial_and_failed_records_are_reported_not_dropped(tmp_path):
    ledger.write_record(tmp_path / "good", _rec("good").complete(loss=1.0))
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "record.json").write_text('{"run_id": "torn", "pha')
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text(json.dumps({"run_id": "bad"}))
    ledger.write_record(tmp_path / "failed", _rec("failed").fail(RuntimeError("out of memory")))
    ledger.write_record(tmp_path / "running", _rec("running"))
    table = tables.load_table(tmp_path)
    assert table.frame["run_id"].tolist() == ["good"]
    reasons = {p.path.split(os.sep)[-1]: p.reason for p in table.problems}
    assert set(reasons) == {"torn", "bad", "failed"}
    assert "corrupt" in reasons["torn"] and "out of memory" in reasons["failed"]


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "x.json"
    ledger.atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        ledger.atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def _writer(args):
    d, i = args
    for k in range(50):
        ledger.write_record(d, _rec("shared", tokens=i * 1000 + k))
    return i


def test_parallel_writers_never_leave_a_torn_record(tmp_path):
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_writer, [(tmp_path / "run", i) for i in range(4)])
    rec = ledger.read_record(tmp_path / "run")  # parses: some writer's whole record
    assert rec.run_id == "shared"


def test_metrics_jsonl_skips_a_torn_last_line(tmp_path):
    ledger.append_metrics(tmp_path, {"step": 1, "loss": 2.0})
    ledger.append_metrics(tmp_path, {"step": 2, "loss": 1.5})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')
    assert [r["step"] for r in ledger.read_metrics(tmp_path)] == [1, 2]


def test_load_table_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        tables.load_table(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty file"):
        tables.load_table(tmp_path / "empty.csv")
    (tmp_path / "runs").mkdir()
    with pytest.raises(InputError, match="no run records"):
        tables.load_table(tmp_path / "runs")


def test_csv_table(tmp_path):
    pd.DataFrame({"N": [1e6, 2e6], "D": [1e9, 2e9], "loss": [3.0, 2.8]}).to_csv(tmp_path / "t.csv", index=False)
    t = tables.load_table(tmp_path / "t.csv")
    assert t.frame.shape == (2, 3)


def test_config_hash_is_stable():
    assert ledger.config_hash({"a": 1, "b": [1, 2]}) == ledger.config_hash({"b": [1, 2], "a": 1})
    assert ledger.config_hash({"a": 1}) != ledger.config_hash({"a": 2})
