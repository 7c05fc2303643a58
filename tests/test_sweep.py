"""Sweeps: plans, idempotence, corrupt records, parallel workers and a real kill -9."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalelab import model as M
from scalelab.pretrain import sweep as S
from scalelab.errors import ConfigError, InputError
from scalelab.records import read_record
from scalelab.tables import load_table
from scalelab.pretrain.train import TrainConfig, run_id_for, train

from tests.conftest import REPO, run_cli

SOURCE = "tests.test_train_source:MarkovSource"
SETS = [f"source={SOURCE}", "seq_len=16", "batch_size=4", "eval_tokens=256", "log_every=10"]


def base(**kw) -> TrainConfig:
    return TrainConfig.build(model="d2", **{k: json.loads(v) if v[0].isdigit() else v
                                            for k, v in (s.split("=", 1) for s in SETS)}, **kw)


def test_isoflop_plan_brackets_twenty_tokens_per_parameter():
    b = TrainConfig.build(model="d2", seq_len=64)
    configs = S.plan_isoflop(b, [1e11, 1e12], 3, vocab_size=64)
    assert len(configs) == 6
    for c_budget, group in ((1e11, configs[:3]), (1e12, configs[3:])):
        depths = [M.parse_preset(c.model, 64, 64).depth for c in group]
        assert depths == list(range(depths[0], depths[0] + 3))  # consecutive sizes
        ratios = []
        for c in group:
            arch = M.parse_preset(c.model, 64, 64)
            assert c.tokens * M.train_flops_per_token(arch, 64) == pytest.approx(c_budget, rel=1e-3)
            ratios.append(c.tokens / M.param_counts(arch).active)
        assert ratios[0] > S.TOKENS_PER_PARAM > ratios[-1]  # the 20 tokens/param point is inside
    assert [c.tokens for c in configs[:3]] == sorted((c.tokens for c in configs[:3]), reverse=True)


def test_isoflop_plan_takes_a_finer_ladder_of_sizes():
    b = TrainConfig.build(model="d2", seq_len=64)
    fine = ["d3", "d2w48", "d2", "d3w32", "d4w48"]  # any order: the plan sorts them by size
    configs = S.plan_isoflop(b, [1e12], 3, vocab_size=64, sizes=fine, tokens_per_param=40)
    names = [c.model for c in configs]
    assert len(names) == 3 and set(names) <= set(fine)
    ns = [M.param_counts(M.parse_preset(n, 64, 64)).active for n in names]
    assert ns == sorted(ns)
    assert all(c.tokens * M.train_flops_per_token(M.parse_preset(c.model, 64, 64), 64) == pytest.approx(1e12, rel=1e-3)
               for c in configs)


def test_isoflop_plan_centres_each_budget_on_its_own_ratio():
    """One centre per budget (in the budgets' order, whatever it is) moves each window on its own;
    a list of the wrong length is refused."""
    b = TrainConfig.build(model="d2", seq_len=64)
    fine = ["d2w16", "d3w16", "d4w16", "d2", "d3w32", "d4w32", "d3", "d4w48"]
    same = S.plan_isoflop(b, [1e12, 1e11], 3, vocab_size=64, sizes=fine, tokens_per_param=100)
    apart = S.plan_isoflop(b, [1e12, 1e11], 3, vocab_size=64, sizes=fine, tokens_per_param=[30, 100])
    window = lambda configs, c: [x.model for x in configs  # noqa: E731
                                 if x.tokens * M.train_flops_per_token(M.parse_preset(x.model, 64, 64), 64)
                                 == pytest.approx(c, rel=1e-3)]
    assert window(apart, 1e11) == window(same, 1e11)  # its centre did not change
    bigger = lambda m: M.param_counts(M.parse_preset(m, 64, 64)).active  # noqa: E731
    assert min(map(bigger, window(apart, 1e12))) > min(map(bigger, window(same, 1e12)))  # fewer tokens/param: larger
    with pytest.raises(ConfigError, match="2 budgets"):
        S.plan_isoflop(b, [1e12, 1e11], 3, vocab_size=64, sizes=fine, tokens_per_param=[30, 100, 200])


def test_isoflop_plan_replicates_a_budget_with_the_next_seeds():
    """seeds=[3, 1]: the first budget's sizes three times, with seeds base, base+1, base+2 (new run
    ids); the second budget's once, the same runs as without replicates (ids unchanged)."""
    b = TrainConfig.build(model="d2", seq_len=64, seed=7)
    fine = ["d2w16", "d3w16", "d4w16", "d2", "d3w32", "d4w32", "d3", "d4w48"]
    one = S.plan_isoflop(b, [1e11, 1e12], 3, vocab_size=64, sizes=fine, tokens_per_param=100)
    rep = S.plan_isoflop(b, [1e11, 1e12], 3, vocab_size=64, sizes=fine, tokens_per_param=100, seeds=[3, 1])
    small = {(c.model, c.tokens) for c in one if c.tokens * M.train_flops_per_token(
        M.parse_preset(c.model, 64, 64), 64) == pytest.approx(1e11, rel=1e-3)}
    assert len(rep) == len(one) + 2 * len(small)
    assert {S.run_id_for(c) for c in one} <= {S.run_id_for(c) for c in rep}
    for size in small:
        assert sorted(c.seed for c in rep if (c.model, c.tokens) == size) == [7, 8, 9]
    assert all(c.seed == 7 for c in rep if (c.model, c.tokens) not in small)
    with pytest.raises(ConfigError, match="seeds"):
        S.plan_isoflop(b, [1e11, 1e12], 3, vocab_size=64, sizes=fine, seeds=[3, 1, 1])


def test_isoflop_plan_refuses_a_budget_too_small_for_the_ladder():
    with pytest.raises(ConfigError, match="budget 1e\\+06"):
        S.plan_isoflop(TrainConfig.build(model="d2"), [1e6], 3, vocab_size=64)


def test_grid_plan_is_the_product_without_duplicates():
    configs = S.plan_grid(base(), ["d1", "d2", "d1"], [2000, 4000])
    assert sorted((c.model, c.tokens) for c in configs) == [("d1", 2000), ("d1", 4000), ("d2", 2000), ("d2", 4000)]
    with pytest.raises(ConfigError):
        S.plan_grid(base(), [], [1000])


def test_budgets_parse_with_one_line_errors():
    assert S.read_budgets("1e12, 3e12") == [1e12, 3e12]
    for bad in ("1e12,x", "1e12,-3"):
        with pytest.raises(Exception) as e:
            S.read_budgets(bad)
        assert "\n" not in str(e.value)


def test_parallel_sweep_is_idempotent_and_fit_ready(tmp_path):
    configs = S.plan_grid(base(), ["d1", "d2"], [3200, 6400])
    out = S.run_sweep(configs, tmp_path, workers=2)
    assert [o.status for o in out] == ["complete"] * 4
    stamps = {o.run_id: read_record(tmp_path / o.run_id).finished_at for o in out}
    assert len(stamps) == 4  # four distinct run directories, one per member
    again = S.run_sweep(configs, tmp_path, workers=2)
    assert [o.status for o in again] == ["skipped"] * 4
    assert {o.run_id: read_record(tmp_path / o.run_id).finished_at for o in again} == stamps
    frame = load_table(tmp_path).frame
    assert len(frame) == 4 and frame[["N", "D", "C", "loss"]].notna().all().all()
    assert list(tmp_path.glob("sweep-*.json"))


def test_a_member_held_by_another_process_is_reported_busy_not_trained_twice(tmp_path):
    from scalelab.runs import run_lock

    configs = S.plan_grid(base(), ["d1"], [1600, 3200])
    with run_lock(tmp_path / run_id_for(configs[0])):  # as a concurrent sweep would hold it
        out = S.run_sweep(configs, tmp_path, workers=1)
    assert [o.status for o in out] == ["busy", "complete"]
    assert not (tmp_path / run_id_for(configs[0]) / "record.json").exists()


def test_corrupt_member_record_is_reported_and_skipped(tmp_path):
    configs = S.plan_grid(base(), ["d1"], [1600, 3200])
    bad = tmp_path / run_id_for(configs[0])
    bad.mkdir(parents=True)
    (bad / "record.json").write_text('{"run_id": "half')
    out = S.run_sweep(configs, tmp_path, workers=1)
    assert out[0].status == "failed" and "unreadable record" in out[0].error
    assert out[1].status == "complete"
    r = run_cli("sweep", "--plan", "grid", "--sizes", "d1", "--tokens", "1600,3200", "--runs-dir", tmp_path,
                *sum((["--set", s] for s in SETS), []), cwd=REPO)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "unreadable record" in err[0] and run_id_for(configs[0]) in err[0]
    assert "warning:" in r.stderr and "skipped" in r.stderr


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    for args in (["--plan", "isoflop", "--budgets", "1e12,abc"], ["--plan", "cube"],
                 ["--preset", "quick", "--set", "seqlen=4"], ["--plan", "grid", "--sizes", "d2"],
                 ["--plan", "isoflop", "--budgets", "1e12", "--sizes", "d2,d3w33,d3"]):
        r = run_cli("sweep", "--runs-dir", tmp_path, *args, cwd=REPO)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error:"), r.stderr


def test_kill_9_of_a_running_sweep_loses_only_uncheckpointed_steps(tmp_path):
    """A real SIGKILL of the sweep's whole process group mid-training, then the same command again:
    every member completes with exactly the losses of an uninterrupted run."""
    runs = tmp_path / "killed"
    sets = SETS + ["checkpoint_every=25", "eval_every=100"]
    args = ["sweep", "--plan", "grid", "--sizes", "d1,d2", "--tokens", "32000", "--workers", "2",
            "--runs-dir", runs, *sum((["--set", s] for s in sets), [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "scalelab", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("*/checkpoint/trainer_state.json")):
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    states = {p.parent.parent.name: json.loads(p.read_text())["step"]
              for p in runs.glob("*/checkpoint*/trainer_state.json")}
    assert states, "no checkpoint was written before the kill"
    for rec in runs.glob("*/record.json"):  # every record is whole and none says complete yet
        assert read_record(rec.parent).status == "running"
    again = [a if a != "2" else "1" for a in args]  # the same plan; one in-process worker starts faster
    r = run_cli(*again, cwd=REPO)
    assert r.returncode == 0, r.stderr
    resumed = {d.name: read_record(d) for d in runs.iterdir() if d.is_dir()}
    assert all(rec.status == "complete" for rec in resumed.values())
    assert any((rec.resumed_from_step or 0) > 0 for rec in resumed.values())
    for rid, rec in resumed.items():
        assert rec.resumed_from_step == (states.get(rid) or None)  # restarted exactly at its checkpoint
        ref = train(TrainConfig.build(rec.config), tmp_path / "reference")  # same config, no kill
        assert ref.run_id == rid and ref.metrics["loss"] == rec.metrics["loss"]


@pytest.mark.slow
def test_quick_preset_on_the_testbed_feeds_the_fitters(tmp_path):
    """`--preset quick` end to end (about 2 min on 2 idle cores), then both fits read its dir."""
    r = run_cli("sweep", "--preset", "quick", "--workers", "2", "--runs-dir", tmp_path, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr
    frame = load_table(tmp_path).frame
    assert len(frame) == 9 and frame[["N", "D", "C", "loss"]].notna().all().all()
    for law in ("chinchilla", "isoflop"):
        f = run_cli("fit", tmp_path, "--law", law, "--bootstrap", "50", cwd=REPO)
        assert f.returncode == 0, f.stderr


def test_text_presets_change_vocabulary_data_and_budgets_only():
    from scalelab.pretrain.sweep import SWEEP_PRESETS, sweep_preset

    tb, text = sweep_preset("default"), sweep_preset("default", "stdlib")
    assert tb == SWEEP_PRESETS["default"] and "source_options" not in tb["base"]
    assert text["base"]["source_options"] == {"vocab_size": 1024, "include_tests": True}
    assert max(text["budgets"]) < max(tb["budgets"]) and text["points"] == tb["points"]
    assert sweep_preset("quick", "my/*.txt")["base"]["source_options"] == {"vocab_size": 1024}
    assert "source_options" not in SWEEP_PRESETS["default"]["base"]  # the table itself is untouched
    with pytest.raises(ConfigError, match="quick, default"):
        sweep_preset("huge")


def test_frontier_recovers_a_power_law_and_the_figure_is_written(tmp_path):
    from scalelab.pretrain.curves import frontier, plot_curves
    from scalelab.records import RunRecord, append_metrics, write_record

    floor, k, g = 0.3, 50.0, 0.2
    for c in (1e11, 1e12, 1e13):
        for j, (model, extra) in enumerate((("d2", 0.05), ("d3", 0.0), ("d4", 0.08))):
            loss = floor + k * c ** -g + extra  # d3 is best at every budget
            rid = f"{model}-{c:.0e}"
            rec = RunRecord(run_id=rid, phase="pretrain", technique="pretrain", task="testbed",
                            n_params_nonembedding=10 ** (4 + j), tokens=int(c / (6 * 10 ** (4 + j))),
                            flops={"pretrain": c * (1 + 0.01 * j)}, config={"model": model})
            rec.complete(loss=loss, entropy_floor=floor)
            write_record(tmp_path / rid, rec)
            for s in range(1, 21):
                append_metrics(tmp_path / rid, {"step": s, "flops": c * s / 20, "loss": loss + 1 / s,
                                                "eval_loss": loss if s == 20 else None})
    f = frontier(tmp_path)
    assert f.model == ["d3"] * 3 and f.floor == floor
    assert f.g == pytest.approx(g, rel=1e-3) and f.residual_rms < 1e-3
    path, _ = plot_curves(tmp_path, tmp_path / "fig" / "curves.png")
    assert path.stat().st_size > 10_000
    with pytest.raises(InputError, match="at least 3"):
        frontier(tmp_path / "d2-1e+11")
