"""Experiment trackers, out and in: a real MLflow store (SQLite, created by the tests) and real
TensorBoard event files read back with TensorBoard's own reader; W&B runs exports as tables."""
from __future__ import annotations

import json
import os

import pytest

from scalelab import trackers
from scalelab.errors import ConfigError, InputError
from scalelab.records import read_metrics, read_record
from scalelab.tables import load_table

from tests.conftest import run_cli

mlflow = pytest.importorskip("mlflow")
SOURCE = "tests.test_train_source:MarkovSource"
TINY = [f"source={SOURCE}", "seq_len=16", "batch_size=4", "eval_tokens=256", "log_every=10", "threads=1"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite MLflow store and experiment, named the way MLflow itself is told."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweep")
    monkeypatch.delenv("SCALELAB_TRACKER", raising=False)
    return uri


def test_mlflow_round_trip_sweep_then_fit_gives_the_runs_folder_fit(tmp_path, store):
    runs = tmp_path / "runs"
    done = run_cli("sweep", "--plan", "grid", "--sizes", "d1,d2", "--tokens", "3200,6400", "--runs-dir", runs,
                   "--tracker", "mlflow", *sum((["--set", s] for s in TINY), []))
    assert done.returncode == 0, done.stderr[-2000:]

    client = mlflow.tracking.MlflowClient(store)
    exp = client.get_experiment_by_name("sweep")
    found = client.search_runs([exp.experiment_id])
    assert len(found) == 4 and {r.info.status for r in found} == {"FINISHED"}
    for r in found:
        run_dir = runs / r.data.tags["scalelab.run_id"]
        rows = [x for x in read_metrics(run_dir) if x.get("eval_loss") is not None]
        hist = sorted(client.get_metric_history(r.info.run_id, "eval_loss"), key=lambda m: m.step)
        # every row, against the FLOPs spent when it was written
        assert [(m.step, m.value) for m in hist] == [(int(x["flops"]), x["eval_loss"]) for x in rows]
        rec = read_record(run_dir)
        assert r.data.metrics["metrics.loss"] == rec.metrics["loss"]
        assert r.data.params["model"] == rec.config["model"] and r.data.tags["scalelab.phase"] == "pretrain"

    fits = {}
    for name, table in (("folder", str(runs)), ("mlflow", f"{store}#sweep")):
        out = tmp_path / f"{name}.json"
        res = run_cli("fit", table, "--law", "power", "--x", "C", "--bootstrap", "0", "--out", out)
        assert res.returncode == 0, res.stderr
        fits[name] = json.loads(out.read_text())
    assert fits["mlflow"]["params"] == fits["folder"]["params"]
    assert fits["mlflow"]["n_points"] == fits["folder"]["n_points"] == 4


def test_tensorboard_event_files_are_read_by_tensorboards_reader(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from scalelab.pretrain.train import TrainConfig, train

    monkeypatch.delenv("SCALELAB_TRACKER", raising=False)
    cfg = TrainConfig.build(model="d1", tokens=3200, tracker="tensorboard",
                            **{k: json.loads(v) if v[0].isdigit() else v for k, v in (s.split("=", 1) for s in TINY)})
    rec = train(cfg, tmp_path)
    run_dir = tmp_path / rec.run_id
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    rows = [x for x in read_metrics(run_dir) if x.get("eval_loss") is not None]
    got = [(e.step, e.value) for e in acc.Scalars("eval_loss")]
    assert got == [(int(x["flops"]), pytest.approx(x["eval_loss"], rel=1e-6)) for x in rows]
    assert acc.Scalars("final/metrics.loss")[-1].value == pytest.approx(rec.metrics["loss"], rel=1e-6)
    assert "config" in acc.Tags()["tensors"] or "config/text_summary" in acc.Tags()["tensors"]


def test_other_mlflow_runs_are_rows_mapped_like_a_csv(tmp_path, store):
    """Runs a user logged with MLflow directly: params and latest metrics, --col mapping as for a CSV."""
    import numpy as np

    from scalelab.laws import fit_table

    client = mlflow.tracking.MlflowClient(store)
    eid = client.create_experiment("mine", artifact_location=(tmp_path / "art").as_uri())
    C = np.array([1e15, 3e15, 1e16, 3e16, 1e17])
    loss = 1.7 + 30 * C ** -0.1
    for i, (c, l) in enumerate(zip(C, loss)):
        r = client.create_run(eid, run_name=f"r{i}")
        client.log_param(r.info.run_id, "compute", str(c))
        client.log_metric(r.info.run_id, "val_loss", 9.0, step=0)
        client.log_metric(r.info.run_id, "val_loss", float(l), step=1)  # the latest value is read
        client.set_terminated(r.info.run_id)
    running = client.create_run(eid, run_name="still-going")
    table = load_table(f"{store}#mine")
    assert len(table.frame) == 5 and [str(p) for p in table.problems] == [f"{store}#mine run still-going: MLflow status RUNNING"]
    est, _ = fit_table(f"{store}#mine", "power", x="C", col_map={"C": "compute", "loss": "val_loss"}, bootstrap=0)
    assert est.params_["alpha"] == pytest.approx(0.1, rel=1e-3)
    client.set_terminated(running.info.run_id)


def test_one_line_errors_for_bad_trackers_and_stores(tmp_path, store, monkeypatch):
    with pytest.raises(ConfigError, match="--tracker 'wandb': choose one of none, mlflow, tensorboard"):
        trackers.make("wandb")
    monkeypatch.setenv("SCALELAB_TRACKER", "bogus")
    with pytest.raises(ConfigError, match=r"\$SCALELAB_TRACKER 'bogus'"):
        trackers.make(None)
    monkeypatch.delenv("SCALELAB_TRACKER")
    mlflow.tracking.MlflowClient(store).create_experiment("a", artifact_location=(tmp_path / "a").as_uri())
    with pytest.raises(InputError, match="no experiment named or numbered 'nope'; experiments: .*'a'"):
        load_table(f"{store}#nope")
    res = run_cli("fit", f"{store}#nope", "--law", "power")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "nope" in res.stderr


def test_trainer_reporting_points_trl_at_the_same_store_and_restores_the_environment(tmp_path, store):
    run_dir = tmp_path / "d1-x"
    before = dict(os.environ)
    with trackers.use("mlflow"):
        with trackers.trainer_reporting(run_dir) as report:
            assert report == "mlflow"
            assert os.environ["MLFLOW_TRACKING_URI"] == store and os.environ["MLFLOW_EXPERIMENT_NAME"] == "sweep"
            assert json.loads(os.environ["MLFLOW_TAGS"])["scalelab.source"] == "trainer"
    assert dict(os.environ) == before
    with trackers.use("none"), trackers.trainer_reporting(run_dir) as report:
        assert report == "none"


def test_wandb_exports_web_table_and_public_api(tmp_path):
    web = tmp_path / "wandb_export.csv"
    web.write_text("Name,State,Notes,User,Tags,Created,Runtime,Sweep,params,tokens,loss\n"
                   "a,finished,-,me,,2026-01-01T00:00:00,10,,1e6,2e7,3.1\n"
                   "b,crashed,-,me,,2026-01-01T00:00:00,3,,2e6,4e7,\n"
                   "c,finished,-,me,,2026-01-01T00:00:00,12,,4e6,8e7,2.8\n")
    t = load_table(web)
    assert list(t.frame["run_id"]) == ["a", "c"] and [str(p) for p in t.problems] == [f"{web} run b: W&B state crashed"]
    api = tmp_path / "project.csv"
    api.write_text(',summary,config,name\n'
                   '0,"{\'loss\': 3.1, \'_step\': 99}","{\'n_params\': 1000000.0, \'opt\': {\'lr\': 0.01}}",run-a\n'
                   '1,"{""loss"": 2.8}","{""n_params"": 4000000.0, ""opt"": {""lr"": 0.02}}",run-b\n')
    f = load_table(api).frame
    assert list(f["run_id"]) == ["run-a", "run-b"] and list(f["loss"]) == [3.1, 2.8]
    assert list(f["n_params"]) == [1e6, 4e6] and list(f["opt.lr"]) == [0.01, 0.02] and "_step" not in f


def test_trl_sft_reports_to_the_same_mlflow_store_nested_under_the_stage(tiny_parent, tmp_path, store):
    from scalelab.posttrain import get_technique
    from scalelab.posttrain.stage import run_stage

    tech = get_technique("sft")
    cfg = tech.config.build(parent=str(tiny_parent), trainer="trl", examples=32, batch_size=8, eval_problems=2,
                            eval_parent=False, threads=1, tracker="mlflow")
    rec = run_stage(tech, cfg, tmp_path / "post")
    client = mlflow.tracking.MlflowClient(store)
    found = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    stage = [r for r in found if r.data.tags.get("scalelab.run_id") == rec.run_id and "scalelab.source" not in r.data.tags]
    nested = [r for r in found if r.data.tags.get("scalelab.source") == "trainer"]
    assert len(stage) == 1 and stage[0].info.status == "FINISHED"
    assert stage[0].data.metrics["metrics.accuracy"] == rec.metrics["accuracy"]
    assert len(nested) == 1 and nested[0].data.tags["mlflow.parentRunId"] == stage[0].info.run_id
    assert "train_loss" in nested[0].data.metrics or "loss" in nested[0].data.metrics  # TRL's own log
    assert len(load_table(f"{store}#sweep").frame) == 1  # the trainer's log is not a run of the table


def test_ray_workers_are_told_the_tracker_and_its_store(tmp_path, monkeypatch):
    """A Ray member runs in another process without this one's `trackers.use` block: the sweep passes
    the active tracker and the store's variables in the task's environment."""
    for var in (trackers.ENV, "MLFLOW_EXPERIMENT_ID", trackers.TB_ENV):  # set by other tests' stores
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweeps")
    assert trackers.worker_env()[trackers.ENV] == "none"
    with trackers.use("tensorboard"):
        env = trackers.worker_env()
    assert env == {trackers.ENV: "tensorboard", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}",
                   "MLFLOW_EXPERIMENT_NAME": "sweeps"}
    monkeypatch.setenv(trackers.ENV, "tensorboard")
    assert trackers.worker_env()[trackers.ENV] == "tensorboard"  # the environment default carries over too
