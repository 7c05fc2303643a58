"""Runs kept in experiment trackers, read as tables (`scalelab.tables.load_table` dispatches here):

    sqlite:///mlflow.db#sweep      an MLflow tracking store (any tracking URI MLflow takes: sqlite:,
    mlflow.db#sweep                file:, http(s):), or a SQLite file or a file-store folder (mlruns/);
    mlruns#3                       after "#", the experiment's name or id (default:
                                   $MLFLOW_EXPERIMENT_NAME / $MLFLOW_EXPERIMENT_ID, else the one
                                   experiment that holds runs)
    wandb-runs.csv                 a W&B runs export: the web table's "Export CSV" (Name, State, ...
                                   one column per config key and summary metric), or the public API's
                                   documented export (columns summary, config, name holding dicts)

An MLflow run logged by scalelab (`scalelab.trackers`) carries its whole record.json as an artifact,
read back as the record itself, so a fit on the store is the fit on the runs folder. Any other
finished MLflow run becomes one row of its params and latest metrics, mapped with `--col` as a CSV
is. Runs that are not finished, and trainer logs nested under a scalelab run, are reported, never
dropped silently.
"""
from __future__ import annotations

import ast
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from scalelab.errors import InputError
from scalelab.records import RunRecord

URI_SCHEMES = ("sqlite:", "file:", "http://", "https://", "databricks")
Problem = tuple[str, str]  # (where, why): the table loader turns these into Skipped


# ---- MLflow --------------------------------------------------------------------------------------
def is_mlflow(spec: str) -> bool:
    """A tracking URI, a SQLite file, or an MLflow file store (experiment folders with meta.yaml)."""
    base = spec.split("#", 1)[0]
    if base.startswith(URI_SCHEMES):
        return True
    p = Path(base)
    if p.is_file():
        with p.open("rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    if p.is_dir() and not (p / "record.json").exists():
        return any((d / "meta.yaml").is_file() for d in p.iterdir() if d.is_dir() and d.name not in (".trash",))
    return False


def _uri(base: str) -> str:
    if base.startswith(URI_SCHEMES):
        return base
    p = Path(base).resolve()
    if p.is_file():
        return f"sqlite:///{p}"
    # The file store is in maintenance mode in MLflow 3 and refused unless opted in; a user who
    # names a folder of old runs has opted in for this read.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return p.as_uri()


def load_mlflow(spec: str, *, status: str | None = "complete") -> tuple[list[RunRecord], list[dict[str, Any]], list[Problem]]:
    """(scalelab records, rows of other runs, problems) of one experiment of an MLflow store."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InputError(f"{spec}: reading an MLflow store needs mlflow; pip install 'scalelab[mlflow]'") from None
    base, _, wanted = spec.partition("#")
    uri = _uri(base)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per record.json otherwise
    try:
        client = MlflowClient(tracking_uri=uri)
        exp = _experiment(client, spec, wanted)
        runs = _all_runs(client, exp.experiment_id)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - MLflow, SQLAlchemy and HTTP errors alike: one line
        raise InputError(f"{spec}: cannot read the MLflow store ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    records, rows, problems = [], [], []
    ours = {r.info.run_id for r in runs if "scalelab.run_id" in r.data.tags}
    # scalelab's runs in the order a runs folder lists them (by path), so that a fit sees the rows
    # in the same order and gives the same digits; other runs by start time
    runs.sort(key=lambda r: (r.data.tags.get("scalelab.run_dir", "~"), r.info.start_time or 0))
    for r in runs:
        tags, name = r.data.tags, r.info.run_name or r.info.run_id
        where = f"{spec} run {name}"
        if tags.get("scalelab.source") == "trainer" or tags.get("mlflow.parentRunId") in ours:
            problems.append((where, "a trainer's own log, nested under a scalelab run"))
            continue
        if "scalelab.run_id" in tags:
            rec = _record(client, r.info.run_id)
            if rec is None:
                problems.append((where, f"no record.json artifact (MLflow status {r.info.status})"))
            elif status is None or rec.status == status:
                records.append(rec)
            elif rec.status == "failed":
                problems.append((where, f"run failed: {rec.error}"))
            continue
        if status is not None and r.info.status != "FINISHED":
            problems.append((where, f"MLflow status {r.info.status}"))
            continue
        row: dict[str, Any] = {"run_id": name}
        row.update({k: _number(v) for k, v in r.data.params.items()})
        row.update(r.data.metrics)  # the latest value of each metric
        rows.append(row)
    if not records and not rows and not problems:
        raise InputError(f"{spec}: experiment {exp.name!r} holds no runs")
    return records, rows, problems


def _experiment(client: Any, spec: str, wanted: str) -> Any:
    wanted = wanted or os.environ.get("MLFLOW_EXPERIMENT_NAME") or os.environ.get("MLFLOW_EXPERIMENT_ID") or ""
    exps = client.search_experiments()
    if wanted:
        for e in exps:
            if wanted in (e.name, e.experiment_id):
                return e
        raise InputError(f"{spec}: no experiment named or numbered {wanted!r}; experiments: "
                         f"{', '.join(repr(e.name) for e in exps) or 'none'}")
    with_runs = [e for e in exps if client.search_runs([e.experiment_id], max_results=1)]
    if len(with_runs) == 1:
        return with_runs[0]
    raise InputError(f"{spec}: {len(with_runs)} experiments hold runs ({', '.join(repr(e.name) for e in with_runs)}); "
                     "name one after '#', e.g. sqlite:///mlflow.db#NAME")


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    out, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token, order_by=["attributes.start_time ASC"])
        out.extend(page)
        token = page.token
        if not token:
            return out


def _record(client: Any, run_id: str) -> RunRecord | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "record.json", tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            return None
        try:
            return RunRecord.model_validate(json.loads(Path(path).read_text()))
        except (ValueError, TypeError) as e:
            raise InputError(f"run {run_id}: record.json artifact is not a valid record ({str(e).splitlines()[0]})") from None


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


# ---- W&B -------------------------------------------------------------------------------------------
def wandb_frame(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, list[Problem]]:
    """A W&B runs export as a plain table (one row per finished run); other CSVs unchanged."""
    cols = set(frame.columns)
    if {"summary", "config"} <= cols:
        return _api_export(frame, source), []
    if {"Name", "State"} <= cols and cols & {"Runtime", "Created", "User"}:
        done = frame["State"].astype(str).str.lower() == "finished"
        problems = [(f"{source} run {n}", f"W&B state {s}") for n, s in zip(frame["Name"][~done], frame["State"][~done])]
        out = frame[done].reset_index(drop=True)
        if "run_id" not in cols:
            out = out.rename(columns={"Name": "run_id"})
        return out, problems
    return frame, []


def _api_export(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Columns summary and config hold one dict per run (pandas writes them with repr, W&B's own
    example writes `run.summary._json_dict`); keys starting with "_" are W&B's bookkeeping."""
    rows = []
    for i, r in frame.iterrows():
        summary, config = _dict(r["summary"], source, i), _dict(r["config"], source, i)
        row: dict[str, Any] = {"run_id": r.get("name", i + 1)}
        row.update({k: v for k, v in _flat(summary).items() if not k.startswith("_")})
        for k, v in _flat(config).items():
            if not k.startswith("_"):
                row[f"config.{k}" if k in row else k] = v
        rows.append(row)
    return pd.DataFrame(rows)


def _dict(cell: Any, source: str, i: Any) -> dict[str, Any]:
    if not isinstance(cell, str) or not cell.strip():
        return {}
    for parse in (json.loads, ast.literal_eval):  # literal_eval only reads literals, never runs code
        try:
            value = parse(cell)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    raise InputError(f"{source} row {int(i) + 1}: a W&B summary/config cell that is not a dict ({cell[:60]!r})")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif not isinstance(v, (list, tuple)):
            out[f"{prefix}{k}"] = v
    return out
