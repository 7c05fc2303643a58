"""Resumable post-training: a stage stopped mid-training (an error after a save, or a real SIGKILL
of the command) and run again picks up at its last saved step and ends exactly where an
uninterrupted run ends: the same weights, metrics rows, curve and FLOPs ledger, nothing written
twice, and the training state removed once the child is saved."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from scalelab.posttrain import run
from scalelab.posttrain.resume import STATE_DIR, Resume
from scalelab.records import read_metrics, read_record
from tests.conftest import REPO, run_cli

EVAL = {"eval_problems": 2, "threads": 1, "eval_parent": False}
SFT = {"examples": 24, "batch_size": 8, "epochs": 2, **EVAL}        # 3 steps an epoch, 6 in all
RL = {"steps": 4, "prompts_per_step": 2, "group_size": 2, "eval_every": 2, "curve_problems": 2, **EVAL}


@pytest.fixture(scope="module")
def parent(tiny_parent):
    return tiny_parent


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoint" / "model.safetensors"))


def _rows(run_dir):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in read_metrics(run_dir)]


def _stop_after_saves(monkeypatch, n):
    """The stage raises right after its n-th save of the training state (as if killed there)."""
    real, count = Resume.save, {"n": 0}

    def save(self, *a, **kw):
        real(self, *a, **kw)
        count["n"] += 1
        if count["n"] == n:
            raise RuntimeError("stopped for the test")

    monkeypatch.setattr(Resume, "save", save)


def _same_as_uninterrupted(resumed, ref, runs, ref_runs):
    a, b = runs / resumed.run_id, ref_runs / ref.run_id
    assert resumed.run_id == ref.run_id
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert _rows(a) == _rows(b)  # every row once, none lost
    assert resumed.posttrain_ledger == ref.posttrain_ledger and resumed.flops == ref.flops
    assert resumed.metrics["accuracy"] == ref.metrics["accuracy"]
    assert not (a / STATE_DIR).exists()


@pytest.mark.parametrize("lora", [0, 2])
def test_sft_stopped_mid_epoch_resumes_at_its_saved_step(parent, tmp_path, monkeypatch, lora):
    cfg = {"parent": str(parent), **SFT, "lora_rank": lora, "checkpoint_interval_s": 0, "curve_points": 3,
           "curve_problems": 2}
    ref = run("sft", cfg, tmp_path / "ref")
    assert [c["step"] for c in ref.metrics["curve"]] == [0, 2, 4, 6]
    assert ref.resumed_from_step is None and ref.metrics["train_steps_run"] == 6
    _stop_after_saves(monkeypatch, 4)  # saved after steps 1..4: stopped in the second epoch
    with pytest.raises(RuntimeError):
        run("sft", cfg, tmp_path / "runs")
    monkeypatch.undo()
    stopped = next((tmp_path / "runs").iterdir())
    assert read_record(stopped).status == "failed" and (stopped / STATE_DIR / "trainer_state.json").is_file()
    again = run("sft", cfg, tmp_path / "runs")
    assert again.resumed_from_step == 4 and again.metrics["train_steps_run"] == 2  # steps 1-4 not redone
    assert again.metrics["train_steps"] == 6 and again.metrics["train_loss"] == ref.metrics["train_loss"]
    assert again.metrics["curve"] == ref.metrics["curve"]  # points before the stop kept, after it measured once
    _same_as_uninterrupted(again, ref, tmp_path / "runs", tmp_path / "ref")


def test_rlvr_stopped_mid_run_resumes_with_its_curve(parent, tmp_path, monkeypatch):
    cfg = {"parent": str(parent), **RL, "checkpoint_interval_s": 0}
    ref = run("rlvr", cfg, tmp_path / "ref")
    _stop_after_saves(monkeypatch, 2)  # saved after steps 1 and 2 (a curve point at 2)
    with pytest.raises(RuntimeError):
        run("rlvr", cfg, tmp_path / "runs")
    monkeypatch.undo()
    again = run("rlvr", cfg, tmp_path / "runs")
    assert again.resumed_from_step == 2 and again.metrics["rl_steps_run"] == 2 and ref.metrics["rl_steps_run"] == 4
    assert again.metrics["curve"] == ref.metrics["curve"] and [c["step"] for c in again.metrics["curve"]] == [0, 2, 4]
    assert again.metrics["samples"] == ref.metrics["samples"] == 4 * 2 * 2
    _same_as_uninterrupted(again, ref, tmp_path / "runs", tmp_path / "ref")


def test_without_a_saved_state_a_stopped_stage_starts_over(parent, tmp_path, monkeypatch):
    """No save happened (a long interval): the re-run trains from step 0 and writes each row once."""
    cfg = {"parent": str(parent), **SFT, "checkpoint_interval_s": 1e6}
    monkeypatch.setattr("scalelab.posttrain.loop.lr_at", _raise_at_step(3))
    with pytest.raises(RuntimeError):
        run("sft", cfg, tmp_path)
    monkeypatch.undo()
    again = run("sft", cfg, tmp_path)
    assert again.resumed_from_step is None and again.metrics["train_steps_run"] == 6
    steps = [r["step"] for r in read_metrics(tmp_path / again.run_id)]
    assert steps == sorted(set(steps)) and steps[-1] == 6


def _raise_at_step(k):
    from scalelab.posttrain.loop import lr_at

    def f(step, *a):
        if step == k:
            raise RuntimeError("stopped for the test")
        return lr_at(step, *a)
    return f


def _kill_when_saved(args, runs, min_step):
    """Start the command in its own process group, SIGKILL the group once a saved training state
    has reached `min_step`; return that step."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "scalelab", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, step = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None:
        states = list(runs.glob(f"*/{STATE_DIR}/trainer_state.json"))
        if states:
            try:
                step = json.loads(states[0].read_text())["loop"]["step"]
            except (OSError, ValueError, KeyError):
                step = None
            if step is not None and step >= min_step:
                break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the command ended before it could be killed"
    return step


@pytest.mark.parametrize("technique,sets,steps_key,total", [
    ("sft", ["examples=400", "batch_size=4", "epochs=1"], "train_steps_run", 100),
    ("rlvr", ["steps=12", "prompts_per_step=2", "group_size=2", "eval_every=0", "curve_problems=2"],
     "rl_steps_run", 12),
])
def test_kill_9_mid_stage_then_the_same_command_resumes(parent, tmp_path, technique, sets, steps_key, total):
    runs = tmp_path / "runs"
    args = ["posttrain", technique, "--from", parent, "--runs-dir", runs, "--threads", "1",
            *sum((["--set", s] for s in sets + ["eval_problems=2", "checkpoint_interval_s=0"]), [])]
    killed_at = _kill_when_saved(args, runs, 2)
    run_dir = next(runs.iterdir())
    assert read_record(run_dir).status == "running"  # stopped: not complete, not failed
    use = run_cli("testtime", "--model", run_dir, "--strategies", "cot", "--problems", "2", "--runs-dir",
                  tmp_path / "tt", cwd=REPO)
    assert use.returncode == 2 and "did not finish" in use.stderr and use.stderr.count("\n") == 1
    done = run_cli(*args, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    rec = read_record(run_dir)
    assert rec.status == "complete" and rec.resumed_from_step >= killed_at >= 2
    assert rec.metrics[steps_key] == total - rec.resumed_from_step  # the steps before the kill not redone
    steps = [r["step"] for r in read_metrics(run_dir) if not r.get("curve")]
    assert steps == sorted(set(steps)) and steps[-1] == total  # nothing duplicated, nothing lost
    assert not (run_dir / STATE_DIR).exists()
