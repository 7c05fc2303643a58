"""Tables of runs: a runs directory, a user's CSV or an experiment tracker's runs read into one
pandas frame.

Fitters never parse logs: `load_table` reads a runs directory (every `record.json` below it) or a
CSV into one table with the standard columns N, D, C and loss (`records.STANDARD_COLUMNS`), so
scalelab's own sweeps and a spreadsheet of somebody else's runs go through the same code. Records
that cannot be read are reported as `Skipped`, never dropped silently.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from scalelab.errors import InputError
from scalelab.records import RECORD_FILE, STANDARD_COLUMNS, RunRecord, Status, read_record


@dataclass
class Skipped:
    """A record that could not be read; loaders report these, never drop them silently."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class RunSet:
    records: list[RunRecord] = field(default_factory=list)
    problems: list[Skipped] = field(default_factory=list)


def iter_run_dirs(runs_dir: str | Path) -> Iterable[Path]:
    root = Path(runs_dir)
    for rec in sorted(root.rglob(RECORD_FILE)):
        yield rec.parent


def load_runs(runs_dir: str | Path, *, status: Status | None = "complete") -> RunSet:
    """Every record under `runs_dir` (recursively). Corrupt or partial ones land in `problems`."""
    root = Path(runs_dir)
    if not root.exists():
        raise InputError(f"{root}: no such runs directory")
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    out = RunSet()
    for d in iter_run_dirs(root):
        try:
            rec = read_record(d)
        except InputError as e:
            out.problems.append(Skipped(str(d), str(e).split(": ", 1)[-1]))
            continue
        if status is not None and rec.status != status:
            if rec.status == "failed":
                out.problems.append(Skipped(str(d), f"run failed: {rec.error}"))
            continue
        out.records.append(rec)
    return out


def records_to_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per record: the standard columns, then every nested field flattened with dots."""
    rows = []
    for r in records:
        d = r.model_dump()
        row: dict[str, Any] = {}
        for k, v in d.items():
            if k in ("config", "env"):
                continue
            if isinstance(v, dict):
                for kk, vv in _flatten(v, k).items():
                    row[kk] = vv
            else:
                row[k] = v
        n_active = r.n_params_active if r.n_params_active is not None else r.n_params_nonembedding
        row["N"] = n_active
        row["N_total"] = r.n_params
        row["D"] = r.tokens
        row["C"] = r.flops.get("pretrain")
        row["C_6N"] = r.flops_6n.get("pretrain")
        row["loss"] = r.metrics.get("loss")
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in STANDARD_COLUMNS:
        if col not in df.columns:
            df[col] = math.nan
    return df


def entropy_floors(frame: pd.DataFrame) -> pd.Series:
    """The entropy floor each pretraining run of a table records, NaN where it records none: a run
    record's `metrics.entropy_floor` (testbed runs know theirs exactly), or a CSV's `entropy_floor`
    column. Post-training rows carry none and are no pretraining points: left out."""
    if "phase" in frame:
        frame = frame[frame["phase"].isna() | (frame["phase"] == "pretrain")]
    for col in ("metrics.entropy_floor", "entropy_floor"):
        if col in frame:
            return pd.to_numeric(frame[col], errors="coerce")
    return pd.Series([math.nan] * len(frame), dtype=float)


def entropy_floor(frame: pd.DataFrame) -> float | None:
    """The one entropy floor every pretraining run of the table records, else None."""
    floors = entropy_floors(frame)
    return float(floors.iloc[0]) if len(floors) and floors.notna().all() and floors.nunique() == 1 else None


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        elif isinstance(v, (list, tuple)):
            continue  # curves and per-item lists stay in the record; tables hold scalars
        else:
            out[key] = v
    return out


@dataclass
class Table:
    """A table of runs from a runs directory or a CSV, with the problems met while reading."""

    frame: pd.DataFrame
    source: str
    problems: list[Skipped] = field(default_factory=list)


def load_table(path: str | Path, *, status: Status | None = "complete") -> Table:
    """Read a runs directory, a CSV file (a W&B runs export included) or an MLflow tracking store
    (`scalelab.trackerstores`) into one table (see module docstring)."""
    from scalelab import trackerstores

    if trackerstores.is_mlflow(str(path)):
        recs, rows, problems = trackerstores.load_mlflow(str(path), status=status)
        frame = records_to_frame(recs)
        if rows:  # runs logged by other tools: their params and metrics, mapped with --col
            frame = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True) if recs else pd.DataFrame(rows)
        if frame.empty:
            raise InputError(f"{path}: no finished runs to read ({len(problems)} left out, first: {problems[0][1]})")
        return Table(frame, str(path), [Skipped(w, why) for w, why in problems])
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if p.is_dir():
        runs = load_runs(p, status=status)
        frame = records_to_frame(runs.records)
        if frame.empty and not runs.problems:
            raise InputError(f"{p}: no run records found (expected */{RECORD_FILE})")
        return Table(frame, str(p), runs.problems)
    try:
        frame = pd.read_csv(p)
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text CSV file") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{p}: empty file") from None
    except pd.errors.ParserError as e:
        raise InputError(f"{p}: not a valid CSV ({str(e).splitlines()[0]})") from None
    if frame.empty:
        raise InputError(f"{p}: the table has a header but no rows")
    frame, problems = trackerstores.wandb_frame(frame, str(p))
    return Table(frame, str(p), [Skipped(w, why) for w, why in problems])


def posttrain_table(runs_dir: str | Path) -> Any:
    """A pandas table: run_id, parent_id, technique, difficulty ("mean" for the average), accuracy,
    accuracy_se, parent_accuracy, chance, posttrain_flops, stage_flops, pretrain_flops, n_params,
    train_examples, train_steps."""
    rows = []
    for r in load_runs(runs_dir).records:
        m = r.metrics
        if r.phase != "posttrain" or "accuracy_by_difficulty" not in m:
            continue
        base = {"run_id": r.run_id, "parent_id": r.parent_id, "technique": r.technique, "task": r.task or "testbed",
                "posttrain_flops": float(r.flops.get("posttrain", 0.0)),
                "stage_flops": float(sum((getattr(r, "posttrain_ledger", None) or {}).values())),
                "pretrain_flops": (getattr(r, "parent_flops", None) or {}).get("pretrain", math.nan),
                "n_params": r.n_params_nonembedding,
                # the budgets a post-training law can be drawn against (laws.posttrain_fit)
                "train_examples": m.get("train_examples", math.nan), "train_steps": m.get("train_steps", math.nan)}
        parent = m.get("parent_accuracy_by_difficulty") or {}
        for d, acc in m["accuracy_by_difficulty"].items():
            rows.append({**base, "difficulty": str(d), "accuracy": acc,
                         "accuracy_se": (m.get("accuracy_se_by_difficulty") or {}).get(d, math.nan),
                         "parent_accuracy": parent.get(d, math.nan),
                         "chance": (m.get("chance_by_difficulty") or {}).get(d, math.nan)})
        rows.append({**base, "difficulty": "mean", "accuracy": m["accuracy"], "accuracy_se": math.nan,
                     "parent_accuracy": m.get("parent_accuracy", math.nan),
                     "chance": float(sum((m.get("chance_by_difficulty") or {0: math.nan}).values())
                                     / max(1, len(m.get("chance_by_difficulty") or {})))})
    if not rows:
        raise InputError(f"{runs_dir}: no complete post-training records with accuracy")
    return pd.DataFrame(rows)


def jsonl_objects(path: str | Path, *, what: str = "file") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a user's JSONL file. A line that is not a
    JSON object, or text that is not UTF-8, is a one-line error naming the file and the line;
    `what` names the file's kind in the not-found message."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such {what}")
    with open(p, encoding="utf-8", errors="strict") as f:
        try:
            yield from json_lines(p, f)
        except UnicodeDecodeError as e:
            raise InputError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def json_lines(p: str | Path, lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line; a line that is not a JSON object (or nests
    too deeply for the parser) is a one-line error naming `p` and the line."""
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{p} line {i}: not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise InputError(f"{p} line {i}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise InputError(f"{p} line {i}: expected a JSON object, found {type(obj).__name__}")
        yield i, obj
