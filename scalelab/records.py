"""Run records: the one interface between stages.

Every stage (pretraining, post-training, test-time evaluation) writes one run directory::

    RUNS_DIR/<run_id>/record.json    the RunRecord below, rewritten atomically as the run goes
                     config.json     the full config that made the run
                     metrics.jsonl   one row per logged step: step, tokens, flops, wall_s, loss, lr
                     checkpoint/     (where a model was made) a Hugging Face save_pretrained dir

Writes go to a temporary file in the same directory and are renamed into place, so a run that
is killed never leaves half a record and parallel workers never corrupt each other's files.

Tables of many records (and of users' CSVs) are read by `scalelab.tables`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scalelab import __version__, trackers
from scalelab.errors import InputError

SCHEMA_VERSION = 1
RECORD_FILE = "record.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"

Phase = Literal["pretrain", "posttrain", "testtime"]
Status = Literal["running", "complete", "failed"]

# The exact convention, stated once; records name it so that a reader knows what was counted.
EXACT_CONVENTION = (
    "exact: matmul FLOPs of every forward (2 per multiply-add) and backward (2x forward) pass, "
    "attention scores and values included, embeddings lookups excluded, logits included"
)
SIXN_CONVENTION = "6N: 6 x non-embedding parameters x tokens (Kaplan et al. 2020; Hoffmann et al. 2022)"

# Column aliases that every table carries (NaN where a record has no such value).
STANDARD_COLUMNS = {
    "N": "non-embedding parameters (active parameters for mixture-of-experts models)",
    "N_total": "all parameters, embeddings included",
    "D": "training tokens seen",
    "C": "pretraining FLOPs, exact count",
    "C_6N": "pretraining FLOPs by the 6ND convention",
    "loss": "final held-out loss (nats per token)",
}


class RunRecord(BaseModel):
    """What one run produced; see DESIGN.md, "The run record"."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    run_id: str
    parent_id: str | None = None
    phase: Phase
    technique: str
    task: str
    status: Status = "running"
    error: str | None = None
    n_params: int | None = None
    n_params_nonembedding: int | None = None
    n_params_embedding: int | None = None
    n_params_active: int | None = None  # mixture-of-experts: non-embedding params used per token
    tokens: int | None = None
    # Compute ledger by phase: pretrain, posttrain, inference, verifier. A child run carries its
    # parent's ledger forward, so each record states all the compute its artefact embodies.
    flops: dict[str, float] = Field(default_factory=dict)
    flops_6n: dict[str, float] = Field(default_factory=dict)
    flops_convention: str = EXACT_CONVENTION
    wall_s: float = 0.0
    metrics: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, Any] = Field(default_factory=lambda: environment_stamp())
    created_at: str = Field(default_factory=lambda: _now())
    finished_at: str | None = None

    # ---- convenience -------------------------------------------------------------------
    def total_flops(self) -> float:
        return float(sum(v for v in self.flops.values() if isinstance(v, (int, float))))

    def complete(self, **metrics: Any) -> "RunRecord":
        self.metrics.update(metrics)
        self.status = "complete"
        self.error = None
        self.finished_at = _now()
        return self

    def fail(self, error: BaseException | str) -> "RunRecord":
        self.status = "failed"
        self.error = " ".join(str(error).split()) or type(error).__name__
        self.finished_at = _now()
        return self


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def environment_stamp() -> dict[str, Any]:
    """Versions and device, so a number can be traced to what produced it."""
    import importlib.metadata as md

    stamp: dict[str, Any] = {
        "scalelab": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "cpu_count": os.cpu_count(),
    }
    for pkg in ("torch", "transformers", "numpy", "scipy"):
        try:
            stamp[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return stamp


# ---- atomic files ---------------------------------------------------------------------------
def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (setting it, even back,
    would race with files other threads create meanwhile)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never half. The file
    gets the mode any new file gets (0666 less the user's umask), not mkstemp's private 0600."""
    path = Path(path)
    check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def check_output_dir(path: str | Path, what: str = "") -> Path:
    """Refuse, before any work, a folder that cannot be made or written: under a regular file, a
    file itself, or in a read-only place. `what` names the option (`--runs-dir`) in the message."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{label}: is a file, not a directory")
    _check_ancestors(path, label)
    return path


def check_output_file(path: str | Path, what: str = "") -> Path:
    """As `check_output_dir`, for a file to be written: its folder must be makeable and writable,
    and the path itself must not be a folder."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if path.is_dir():
        raise InputError(f"{label}: is a folder; give a file name")
    _check_ancestors(path.parent, label)
    return path


# The formats matplotlib's savefig writes (`FigureCanvasBase.get_supported_filetypes()`, matplotlib 3.9 with
# Pillow): a figure path is checked against them before any work, not after a long fit.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".pgf", ".tif", ".tiff",
                   ".webp", ".gif", ".avif", ".raw", ".rgba")


def check_figure_file(path: str | Path, what: str = "") -> Path:
    """As `check_output_file`, for a figure: its name must end in a format matplotlib writes (without
    one, savefig would write NAME.png, not the file asked for)."""
    path = check_output_file(path, what)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        label = f"{what} {path}" if what else str(path)
        found = f"{path.suffix!r} is not an image format" if path.suffix else "no file extension"
        raise InputError(f"{label}: {found}; end the name in .png, .pdf or .svg")
    return path


def _check_ancestors(folder: Path, label: str) -> None:
    """The nearest existing ancestor of `folder` (itself included) must be a writable directory."""
    p = folder.absolute()
    while not p.exists() and p != p.parent:
        if p.is_symlink():  # a dangling link: mkdir would fail on it
            raise InputError(f"{label}: {p} is a broken link")
        p = p.parent
    if not p.is_dir():
        raise InputError(f"{label}: {p} is a file, not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{label}: {p} is not writable")


def fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj, indent=2) + "\n")


def dumps_json(obj: Any, **kw: Any) -> str:
    """Strict JSON (RFC 8259: no NaN or Infinity, which strict readers reject) for every file and
    every `--json`: NaN becomes null (no value), infinity the string "inf" (or "-inf"), as the
    exchange documents have always written them; `float("inf")` reads the string back."""
    return json.dumps(strict_json(obj), allow_nan=False, default=_json_default, **kw)


def strict_json(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None if o != o else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: strict_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [strict_json(v) for v in o]
    if isinstance(o, (str, int, bool)) or o is None:
        return o
    if hasattr(o, "item") and getattr(o, "ndim", 0) == 0:  # numpy / torch scalars
        return strict_json(o.item())
    if hasattr(o, "tolist"):
        return strict_json(o.tolist())
    return o


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---- records ----------------------------------------------------------------------------------
def config_hash(config: dict[str, Any], length: int = 8) -> str:
    """A short stable hash of a config, so the same config always maps to the same run id."""
    blob = json.dumps(config, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def write_record(run_dir: str | Path, record: RunRecord) -> Path:
    run_dir = Path(run_dir)
    path = run_dir / RECORD_FILE
    atomic_write_text(path, record.model_dump_json(indent=2) + "\n")
    trackers.record_written(run_dir, record)  # MLflow / TensorBoard, when one is on
    return path


def read_record(run_dir: str | Path) -> RunRecord:
    """Read one run's record; raise InputError naming the file when it is missing or corrupt."""
    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        raise InputError(f"{path}: no run record here")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: corrupt record ({e})") from None
    try:
        return RunRecord.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{path}: invalid record: {loc}: {first['msg']}") from None


def append_metrics(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Append one row to metrics.jsonl (a torn last line from a kill is skipped on read)."""
    with open(Path(run_dir) / METRICS_FILE, "a") as f:
        f.write(dumps_json(row) + "\n")
    trackers.row_written(run_dir, row)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill; every complete line before it is kept
    return rows
