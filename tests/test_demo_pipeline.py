"""`scalelab demo --quick` end to end in a subprocess, as a user runs it: killed with SIGKILL in
the middle of pretraining and run again (nothing lost or duplicated, finished runs kept), every
stage's records, the fits and the report with its figures; a re-run reuses every run and is fast;
`--json` parses. About 2-3 minutes on 2 cores (the quick preset trains 9 tiny models)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

from scalelab.pipeline.demo import STAGES, DemoConfig
from scalelab.tables import load_runs
from scalelab.records import read_record
from tests.conftest import REPO, run_cli


def _kill_after_finished_members(out, k):
    """Start `demo --quick`, SIGKILL its process group once k pretraining runs are complete;
    return {run dir: created_at} of the finished ones."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "scalelab", "demo", "--quick", "--workers", "1", "--out", str(out)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, done = time.time() + 400, {}
    while time.time() < deadline and proc.poll() is None and len(done) < k:
        for rec in (out / "runs").rglob("record.json"):
            try:
                r = read_record(rec.parent)
            except Exception:  # noqa: BLE001 - a record being replaced at this instant
                continue
            if r.status == "complete" and r.phase == "pretrain":
                done[rec.parent] = r.created_at
        time.sleep(0.1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(done) >= k, "the demo ended or stalled before the kill"
    return done


def test_quick_demo_killed_then_run_again_completes_every_stage_and_a_rerun_reuses_them(tmp_path):
    out = tmp_path / "demo"
    finished = _kill_after_finished_members(out, 3)
    t0 = time.perf_counter()
    p = run_cli("demo", "--quick", "--workers", "1", "--out", out, timeout=600)
    first = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    for d, created in finished.items():  # finished before the kill: kept, not trained again
        assert read_record(d).created_at == created
    assert "smoke test" in p.stdout and "wrote" in p.stdout
    for stage in STAGES:  # stderr is not a terminal: one plain line per finished stage
        assert re.search(rf"^{stage}\s", p.stderr, re.M), (stage, p.stderr[-2000:])

    cfg = DemoConfig.preset("quick")
    recs = load_runs(out / "runs").records
    phases = Counter(r.phase for r in recs)
    assert phases["pretrain"] == cfg.points * len(cfg.budgets)
    techniques = {r.technique for r in recs if r.phase == "posttrain"}
    assert {"sft", "rlvr", "distill-logit", "prune-wanda", "quantize-int8-weight"} <= techniques
    tt = [r for r in recs if r.phase == "testtime"]
    assert {r.technique for r in tt} == set(cfg.strategies)
    assert len({r.parent_id for r in tt}) == len(cfg.budgets)  # the compute-optimal member of each budget
    by_tech = {r.technique: r for r in recs if r.phase == "posttrain"}
    assert by_tech["rlvr"].parent_id == by_tech["sft"].run_id  # RL starts from the SFT child
    assert by_tech["sft"].parent_id == by_tech["prune-wanda"].parent_id == by_tech["quantize-int8-weight"].parent_id

    floor = next(r for r in recs if r.phase == "pretrain").metrics["entropy_floor"]
    for name in ("chinchilla", "isoflop", "exchange"):
        doc = json.loads((out / "fits" / f"{name}.json").read_text())
        assert doc["law"] == name
        assert (out / "fits" / f"{name}.png").stat().st_size > 10_000
    assert json.loads((out / "fits" / "chinchilla.json").read_text())["params"]["E"] == floor

    page = (out / "report.html").read_text()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) >= 6
    for section in ("pretraining", "post-training", "test-time", "exchange", "plan"):
        assert f'id="{section}"' in page
    assert "http://" not in page and "https://" not in page  # self-contained

    # re-running finds every run finished: no new run directory, no record rewritten, a few seconds
    before = {q: q.stat().st_mtime_ns for q in (out / "runs").rglob("record.json")}
    t1 = time.perf_counter()
    p2 = run_cli("demo", "--quick", "--workers", "1", "--out", out, "--json", timeout=300)
    second = time.perf_counter() - t1
    assert p2.returncode == 0, p2.stderr[-3000:]
    s = json.loads(p2.stdout)
    after = {q: q.stat().st_mtime_ns for q in (out / "runs").rglob("record.json")}
    assert after == before
    assert s["pretrain"]["reused"] == len(s["pretrain"]["runs"])
    assert list(s["stages"]) == list(STAGES) and all(v["wall_s"] >= 0 for v in s["stages"].values())
    assert s["smoke_test"] is True and s["paths"]["report"].endswith("report.html")
    assert 0 <= s["fits"]["backtest"]["mean_abs_err"] < 1 and s["fits"]["chinchilla"]["ci95"]
    ident = s["fits"]["chinchilla"]["identification"]  # the verdict on the intervals, kept in the summary
    assert isinstance(ident["identified"], bool) and set(ident["hi_lo"]) == {"alpha", "beta", "A", "B"}
    assert all({"budget", "N", "D", "loss"} <= set(r) for r in s["pretrain"]["runs"])
    sft_law = s["posttrain_laws"]["sft"]  # the SFT child's curve: 4 points, fitted on 3, checked on the 4th
    assert sft_law["law"] == "posttrain-power" and sft_law["n_points"] == 4 and sft_law["extrapolation_error"] >= 0
    assert "error" in s["posttrain_laws"]["quantize"]  # no curve to fit: said, not invented
    assert second < max(45.0, first / 3), (first, second)
    assert json.loads((out / "summary.json").read_text())["cache"] == s["cache"]


def test_a_runs_dir_without_fits_says_which_command_makes_them(tmp_path):
    (tmp_path / "runs").mkdir()
    p = run_cli("plan", "--budget", "1e13", "--queries", "1e6", "--target-accuracy", "0.5", "--fits", tmp_path / "runs")
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "scalelab fit" in p.stderr
