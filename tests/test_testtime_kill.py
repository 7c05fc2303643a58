"""`scalelab testtime` killed with SIGKILL part way through its points, then the same command again:
the points finished before the kill are kept as they were, the others are computed once, and
every point equals an uninterrupted run's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from scalelab.records import read_record
from scalelab.tables import load_runs
from tests.conftest import REPO, run_cli


def _points(runs):
    return {r.run_id: r for r in load_runs(runs).records}


def test_kill_9_mid_evaluation_then_the_same_command_finishes_it(tiny_parent, tmp_path):
    args = ["testtime", "--model", tiny_parent, "--strategies", "cot,majority,coverage", "--n", "1,2,4",
            "--difficulties", "1,2", "--problems", "6", "--threads", "1"]
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "scalelab", *map(str, args), "--runs-dir", str(runs)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, done = time.time() + 240, {}
    while time.time() < deadline and proc.poll() is None and len(done) < 3:
        done = {p.parent: read_record(p.parent).created_at for p in runs.rglob("record.json")}
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(done) >= 3, "the evaluation ended before the kill"
    r = run_cli(*args, "--runs-dir", runs, cwd=REPO)
    assert r.returncode == 0, r.stderr
    for d, created in done.items():
        assert read_record(d).created_at == created  # kept, not recomputed
    resumed = _points(runs)
    assert len(resumed) == 2 * (1 + 2 * 3)  # cot once, majority and coverage at three n; no duplicates
    ref = run_cli(*args, "--runs-dir", tmp_path / "ref", cwd=REPO)
    assert ref.returncode == 0, ref.stderr
    whole = _points(tmp_path / "ref")
    assert resumed.keys() == whole.keys()
    for rid, rec in resumed.items():
        assert rec.metrics["per_problem"] == whole[rid].metrics["per_problem"], rid
        assert rec.flops == whole[rid].flops
