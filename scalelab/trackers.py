"""Experiment trackers: every metric row, the config and the final record of a run also go to MLflow
or to TensorBoard event files, where users keep and compare runs. The run folder stays the truth
(STYLE.md item 5): a tracker only mirrors what `records.append_metrics` and `records.write_record`
write, so every stage that writes records is tracked without code of its own.

    with trackers.use("mlflow"):            # or "tensorboard", "none"; None: $SCALELAB_TRACKER
        train(config, "runs")               # rows, config and record mirrored as they are written

    SCALELAB_TRACKER=tensorboard scalelab train ...      # the environment default of every verb

MLflow: the store and experiment are MLflow's own settings, `MLFLOW_TRACKING_URI` (MLflow's default
when unset) and `MLFLOW_EXPERIMENT_NAME` / `MLFLOW_EXPERIMENT_ID` (else the Default experiment).
One MLflow run per run folder, named by the run id and tagged `scalelab.run_id` and
`scalelab.run_dir`, so a resumed run appends to the MLflow run it started. The config goes in as
params (nested keys joined with dots), each metric row as metrics, and the final record as
metrics named like the columns of `scalelab.tables` (`metrics.loss`, `flops.pretrain`, ...) plus
the whole `record.json` as an artifact, which `scalelab fit` reads back (`scalelab.trackerstores`).
TensorBoard: event files under `RUN_DIR/tensorboard/` (or `$SCALELAB_TENSORBOARD_DIR/<run id>`).

Everything is logged against compute: the step of each point is the FLOPs the run has spent when
the row was written (`flops`, or `posttrain_flops` in post-training; STYLE.md item 6), falling back
to the optimizer step where a row has no FLOPs or they do not fit a 64-bit step. mlflow and
tensorboard are optional extras (`pip install 'scalelab[mlflow]'`); they are imported only when
asked for. A tracker that fails while a run is going warns once and stops, never the run.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Protocol

from scalelab.errors import ConfigError

NAMES = ("none", "mlflow", "tensorboard")
ENV = "SCALELAB_TRACKER"
TB_ENV = "SCALELAB_TENSORBOARD_DIR"
FINAL = ("complete", "failed")
STEP_KEYS = ("flops", "posttrain_flops")  # the compute axis of a row, in order of preference
MAX_STEP = 2**63 - 1  # MLflow and TensorBoard store steps as signed 64-bit integers


class Tracker(Protocol):
    name: str

    def log_row(self, run_dir: Path, row: dict[str, Any]) -> None: ...
    def log_record(self, run_dir: Path, record: dict[str, Any]) -> None: ...
    def trainer_env(self, run_dir: Path) -> tuple[str, dict[str, str]]: ...
    def flush(self) -> None: ...


# ---- choosing one --------------------------------------------------------------------------------
_stack: list[Tracker] = []
_cache: dict[tuple[str, ...], Tracker] = {}


def resolve_name(name: str | None) -> str:
    """`name`, else $SCALELAB_TRACKER, else "none"; a one-line error for anything else."""
    value = (name if name is not None else os.environ.get(ENV) or "none").strip().lower()
    if value not in NAMES:
        where = "--tracker" if name is not None else f"${ENV}"
        raise ConfigError(f"{where} {value!r}: choose one of {', '.join(NAMES)}")
    return value


def make(name: str | None) -> Tracker | None:
    """The tracker called `name` (None when "none"); one per process and store, reused."""
    value = resolve_name(name)
    if value == "none":
        return None
    key = (value, os.environ.get("MLFLOW_TRACKING_URI", ""), os.environ.get("MLFLOW_EXPERIMENT_NAME", ""),
           os.environ.get("MLFLOW_EXPERIMENT_ID", ""), os.environ.get(TB_ENV, ""))
    if key not in _cache:
        _cache[key] = MLflowTracker() if value == "mlflow" else TensorBoardTracker()
    return _cache[key]


@contextlib.contextmanager
def use(name: str | None) -> Iterator[Tracker | None]:
    """Mirror every record written inside the block to tracker `name`. None keeps the tracker of an
    enclosing block, else takes $SCALELAB_TRACKER; "none" turns tracking off inside the block."""
    tracker = active() if name is None else make(name)
    _stack.append(tracker)  # type: ignore[arg-type]
    try:
        yield tracker
    finally:
        _stack.pop()
        if tracker is not None:
            tracker.flush()


def active() -> Tracker | None:
    if _stack:
        return _stack[-1]
    return make(None) if os.environ.get(ENV) else None


def worker_env() -> dict[str, str]:
    """What a worker process started elsewhere (a Ray task) needs to mirror its records where this
    process does: the active tracker's name and the stores' environment variables."""
    tracker = active()
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", TB_ENV)
    return {ENV: tracker.name if tracker is not None else "none",
            **{k: os.environ[k] for k in keys if os.environ.get(k)}}


# ---- hooks called by records.py --------------------------------------------------------------------
_warned: set[str] = set()


def _guard(tracker: Tracker, what: str, fn: Any, *args: Any) -> None:
    """Trackers mirror the run folder; one that fails warns once and never stops the run."""
    if tracker.name in _warned:
        return
    try:
        fn(*args)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any tracker failure: the record on disk is still complete
        _warned.add(tracker.name)
        msg = " ".join(str(e).split())[:300]
        print(f"warning: {tracker.name} tracker failed to log the {what} ({type(e).__name__}: {msg}); "
              "the run folder is complete, tracking is off for the rest of this process", file=sys.stderr)


def row_written(run_dir: str | Path, row: dict[str, Any]) -> None:
    tracker = active()
    if tracker is not None:
        _guard(tracker, "metrics row", tracker.log_row, Path(run_dir), row)


def record_written(run_dir: str | Path, record: Any) -> None:
    """`record`: a RunRecord (dumped to JSON types here, only when a tracker is on)."""
    tracker = active()
    if tracker is not None:
        data = json.loads(record.model_dump_json()) if hasattr(record, "model_dump_json") else dict(record)
        _guard(tracker, "record", tracker.log_record, Path(run_dir), data)


@contextlib.contextmanager
def trainer_reporting(run_dir: str | Path) -> Iterator[str]:
    """`report_to` for a Hugging Face / TRL trainer, with the environment its callback reads set for
    the block: the same store and experiment, the trainer's own run nested under this run."""
    tracker = active()
    report, env = tracker.trainer_env(Path(run_dir)) if tracker is not None else ("none", {})
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield report
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- shared helpers ------------------------------------------------------------------------------
def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts joined with dots (the column names of `scalelab.tables`); lists left out."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        elif not isinstance(v, (list, tuple)):
            out[key] = v
    return out


def numbers(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def compute_step(row: dict[str, Any], fallback: int) -> int:
    """The FLOPs spent so far (STEP_KEYS), else the row's optimizer step, else `fallback`."""
    for key in (*STEP_KEYS, "step"):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= MAX_STEP:
            return int(v)
    return fallback


def final_values(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers, named as `scalelab.tables` names its columns (config and env left out)."""
    return numbers(flat({k: v for k, v in record.items() if k not in ("config", "env")}))


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"--tracker {extra}: {module} is not installed; pip install 'scalelab[{extra}]'") from None


# ---- MLflow ----------------------------------------------------------------------------------------
class MLflowTracker:
    name = "mlflow"

    def __init__(self) -> None:
        import logging

        mlflow = _need("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # "Creating initial tables" at INFO
            logging.getLogger(noisy).setLevel(logging.WARNING)

        self.uri = mlflow.get_tracking_uri()  # $MLFLOW_TRACKING_URI, else MLflow's own default
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id, self.experiment_name = self._experiment()
        except mlflow.exceptions.MlflowException as e:
            raise ConfigError(f"--tracker mlflow: store {self.uri}: {str(e).splitlines()[0]}") from None
        self.runs: dict[str, str] = {}  # run folder -> MLflow run id
        self.params_done: set[str] = set()

    def _experiment(self) -> tuple[str, str]:
        from mlflow.exceptions import MlflowException

        if os.environ.get("MLFLOW_EXPERIMENT_ID"):
            exp = self.client.get_experiment(os.environ["MLFLOW_EXPERIMENT_ID"])
            return exp.experiment_id, exp.name
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self.client.create_experiment(name, artifact_location=self._artifacts(name)), name
            except MlflowException:  # another process (a sweep worker) created it first
                exp = self.client.get_experiment_by_name(name)
        return exp.experiment_id, exp.name

    def _artifacts(self, name: str) -> str | None:
        """Artifacts of a local SQLite store beside the database, not in the working directory
        (MLflow's default for a new experiment is ./mlruns wherever the command runs)."""
        if not self.uri.startswith("sqlite:///"):
            return None
        db = Path(self.uri[len("sqlite:///"):]).resolve()
        return (db.parent / "mlartifacts" / name).as_uri()

    def _run(self, run_dir: Path, run_id: str) -> str:
        key = str(run_dir.resolve())
        if key in self.runs:
            return self.runs[key]
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`scalelab.run_id` = '{run_id}'",
                                        max_results=1000)
        same = [r for r in found if r.data.tags.get("scalelab.run_dir") == key]
        if same:
            rid = same[0].info.run_id
            if same[0].info.status != "RUNNING":
                self.client.update_run(rid, status="RUNNING")  # resumed
        else:
            rid = self.client.create_run(self.experiment_id, run_name=run_id, tags={
                "scalelab.run_id": run_id, "scalelab.run_dir": key}).info.run_id
        self.runs[key] = rid
        return rid

    def log_row(self, run_dir: Path, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        rid = self._run(run_dir, run_dir.name)
        step, now = compute_step(row, 0), int(time.time() * 1000)
        self.client.log_batch(rid, metrics=[Metric(k, v, now, step) for k, v in numbers(row).items()])

    def log_record(self, run_dir: Path, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        rid = self._run(run_dir, record.get("run_id") or run_dir.name)
        if rid not in self.params_done:
            # MLflow keeps a param value of at most 6,000 characters (mlflow.utils.validation)
            params = [Param(k, (v if isinstance(v, str) else json.dumps(v))[:6000])
                      for k, v in flat(record.get("config") or {}).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(rid, params=params[i:i + 100])
            self.params_done.add(rid)
        tags = {f"scalelab.{k}": str(record[k]) for k in ("phase", "technique", "task", "status", "parent_id")
                if record.get(k) is not None}
        self.client.log_batch(rid, tags=[RunTag(k, v) for k, v in tags.items()])
        if record.get("status") in FINAL:
            flops = sum(v for v in (record.get("flops") or {}).values() if isinstance(v, (int, float)))
            step, now = compute_step({"flops": flops}, 0), int(time.time() * 1000)
            metrics = [Metric(k, v, now, step) for k, v in final_values(record).items()]
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(rid, metrics=metrics[i:i + 1000])
            self.client.log_dict(rid, record, "record.json")
            self.client.set_terminated(rid, "FINISHED" if record["status"] == "complete" else "FAILED")

    def trainer_env(self, run_dir: Path) -> tuple[str, dict[str, str]]:
        rid = self._run(run_dir, run_dir.name)
        return "mlflow", {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_EXPERIMENT_NAME": self.experiment_name,
                          "MLFLOW_TAGS": json.dumps({"mlflow.parentRunId": rid, "scalelab.run_id": run_dir.name,
                                                     "scalelab.source": "trainer"})}

    def flush(self) -> None:
        pass  # every call above is synchronous


# ---- TensorBoard -----------------------------------------------------------------------------------
class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self) -> None:
        _need("tensorboard", "tensorboard")
        self.writers: dict[str, Any] = {}

    @staticmethod
    def logdir(run_dir: Path) -> Path:
        root = os.environ.get(TB_ENV)
        return Path(root) / run_dir.name if root else run_dir / "tensorboard"

    def _writer(self, run_dir: Path) -> Any:
        key = str(run_dir.resolve())
        if key not in self.writers:
            from torch.utils.tensorboard import SummaryWriter

            self.writers[key] = SummaryWriter(log_dir=str(self.logdir(run_dir)), flush_secs=10)
        return self.writers[key]

    def log_row(self, run_dir: Path, row: dict[str, Any]) -> None:
        w, step = self._writer(run_dir), compute_step(row, 0)
        for k, v in numbers(row).items():
            w.add_scalar(k, v, global_step=step)

    def log_record(self, run_dir: Path, record: dict[str, Any]) -> None:
        w = self._writer(run_dir)
        if record.get("status") not in FINAL:
            w.flush()  # a checkpoint: what is logged so far survives a kill
            return
        flops = sum(v for v in (record.get("flops") or {}).values() if isinstance(v, (int, float)))
        step = compute_step({"flops": flops}, 0)
        for k, v in final_values(record).items():
            w.add_scalar(f"final/{k}", v, global_step=step)
        w.add_text("config", "```\n" + json.dumps(record.get("config") or {}, indent=2) + "\n```", global_step=step)
        w.add_text("record", "```\n" + json.dumps(record, indent=2) + "\n```", global_step=step)
        w.close()
        self.writers.pop(str(run_dir.resolve()), None)

    def trainer_env(self, run_dir: Path) -> tuple[str, dict[str, str]]:
        return "tensorboard", {"TENSORBOARD_LOGGING_DIR": str(self.logdir(run_dir) / "trainer")}

    def flush(self) -> None:
        for w in self.writers.values():
            w.flush()
