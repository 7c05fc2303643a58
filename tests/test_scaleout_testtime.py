"""Scale-out (issue 8) of test-time evaluation: `scalelab testtime ... --executor ray [--address]
[--shards K]` through the real command line.

Fast (CI, which has no Ray): the install hint without Ray, option errors; with Ray installed, a
closed address fails at once. Slow (`-m slow`, needs Ray): an address that accepts but never
speaks Ray fails within 30 s; on a local Ray instance one shard writes the local command's records
value for value, and two shards write the same records with greedy decoding equal; a shard that
dies twice ends sampling with one error line.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from scalelab.records import read_record
from scalelab.pretrain.train import TrainConfig

from tests.test_scaleout import _cli, _env, _free_port

EVAL = ("--strategies", "cot,majority", "--n", "1,4", "--difficulties", "1", "--problems", "8", "--threads", "1")


def _main(*args: object) -> int:
    """The command line in-process (so that a test can hide Ray from it); its exit code."""
    from scalelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(map(str, args)))
    return e.value.code


def test_testtime_executor_ray_without_ray_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed
    code = _main("testtime", "--model", tmp_path / "policy", *EVAL, "--executor", "ray",
                    "--runs-dir", tmp_path / "tt")
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: Ray is not installed"), err
    assert "pip install -e '.[ray]'" in err
    assert not (tmp_path / "tt").exists()  # refused before anything was loaded or written


@pytest.mark.parametrize("args, message", [
    (("--address", "127.0.0.1:6379"), "error: --address and --shards need --executor ray"),
    (("--shards", "2"), "error: --address and --shards need --executor ray"),
    (("--executor", "slurm"), "error: --executor 'slurm': expected local or ray"),
])
def test_testtime_executor_option_errors_are_one_line(tmp_path, capsys, args, message):
    code = _main("testtime", "--model", tmp_path / "policy", *EVAL, *args, "--runs-dir", tmp_path / "tt")
    assert code == 2
    assert capsys.readouterr().err.strip() == message


@pytest.mark.parametrize("listener", ["closed port", pytest.param("silent listener", marks=pytest.mark.slow)])
def test_testtime_unreachable_ray_address_is_one_line_exit_2_within_30_s(tmp_path, listener):
    """The cluster is joined before the policy loads, so no model is needed to see the error:
    nothing listening fails at once, a listener that never speaks Ray when the 20 s wait ends."""
    pytest.importorskip("ray")
    port = _free_port()
    server = socket.create_server(("127.0.0.1", port)) if listener == "silent listener" else None
    try:
        t0 = time.monotonic()
        r = _cli("testtime", "--model", tmp_path / "policy", *EVAL, "--executor", "ray",
                 "--address", f"127.0.0.1:{port}", "--runs-dir", tmp_path / "tt", timeout=60)
        took = time.monotonic() - t0
    finally:
        if server is not None:
            server.close()
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0], r.stderr
    assert r.stderr.strip().splitlines()[-1] == errors[0]
    assert took < 30, took
    assert not (tmp_path / "tt").exists()


def _records(root: Path) -> dict[str, object]:
    return {p.parent.name: read_record(p.parent) for p in root.rglob("record.json")}


def _values(rec) -> tuple:
    m = rec.metrics
    return m["accuracy"], m["per_problem"], m["tokens_per_question"], rec.flops


@pytest.mark.slow
def test_testtime_cli_on_ray_writes_the_records_of_the_local_cli(tmp_path):
    """The same command with `--executor ray`: one shard draws the local run's samples (shard 0
    keeps the seed), so every record is equal value for value; two shards write the same records
    (run ids, configs), greedy chain of thought equal, majority voting from other sample streams.
    This tiny policy scores 0 at difficulty 1, so the FLOPs, which count every sample's tokens,
    are what shows the samples equal."""
    pytest.importorskip("ray")
    from scalelab.pretrain.train import train

    policy = train(TrainConfig.build(model="d1", tokens=65_536, seq_len=256, batch_size=4, threads=1), tmp_path)
    model = tmp_path / policy.run_id
    runs = {}
    for name, extra in (("local", ()), ("ray1", ("--executor", "ray", "--shards", "1")),
                        ("ray2", ("--executor", "ray", "--shards", "2"))):
        r = _cli("testtime", "--model", model, *EVAL, *extra, "--runs-dir", tmp_path / name, timeout=240)
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip().splitlines()[-1] == f"3 records under {tmp_path / name}", r.stderr
        runs[name] = _records(tmp_path / name)
    local = runs["local"]
    assert len(local) == 3 and all(rec.status == "complete" for rec in local.values())
    for name in ("ray1", "ray2"):
        assert runs[name].keys() == local.keys()
        for rid, rec in runs[name].items():
            assert rec.status == "complete" and rec.config == local[rid].config and rec.parent_id == local[rid].parent_id
    assert {rid: _values(rec) for rid, rec in runs["ray1"].items()} == {rid: _values(rec) for rid, rec in local.items()}
    for rid, rec in runs["ray2"].items():
        if rid.startswith("cot-"):
            assert _values(rec) == _values(local[rid])
    # The check has power: other sample streams (two shards) give other FLOPs.
    assert any(_values(rec) != _values(local[rid]) for rid, rec in runs["ray2"].items() if rid.startswith("majority-"))


class _DyingActor:
    """A shard whose process exits mid-sample on every attempt, as one killed by the OOM killer."""

    def generate(self, prompts, n, params):
        os._exit(1)


@pytest.mark.slow
def test_a_shard_that_dies_twice_is_one_error_line_not_a_traceback(tmp_path, monkeypatch):
    """Ray restarts a dead actor once (max_restarts=1) and retries its call; when the restarted
    actor dies too, `ShardedEngine.generate` raises a ScalelabError (the CLI's one line, exit 2)."""
    ray = pytest.importorskip("ray")
    from scalelab.errors import ScalelabError
    from scalelab.cluster import connect
    from scalelab.inference.sharded import ShardedEngine
    from scalelab.inference.engine import Engine, SamplingParams
    from scalelab.pretrain.train import train

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # Ray's workers import tests.* from here
    policy = train(TrainConfig.build(model="d1", tokens=8_192, seq_len=256, batch_size=4, threads=1), tmp_path)
    owns = connect(None, num_cpus=1)
    try:
        actor = ray.remote(_DyingActor).options(num_cpus=1, max_restarts=1, max_task_retries=1).remote()
        with pytest.raises(ScalelabError, match=r"^sampling on Ray failed: (worker died: )?\w*ActorDiedError: .*re-run"):
            ShardedEngine(Engine.load(tmp_path / policy.run_id), [actor]).generate(["<bos>Q1:3 a+4\n"], 2, SamplingParams())
    finally:
        if owns:
            ray.shutdown()
