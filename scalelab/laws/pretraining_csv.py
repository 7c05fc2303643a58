"""Pretraining compute of models that are not scalelab runs, from a CSV the user writes.

    table = PretrainingTable.read("models/pretraining.csv")   # one row per model
    row = table.find(spec="models/medium-qwen2", name="medium-qwen2")

Columns: `model` -- the model directory as it was given to `scalelab testtime --model` --, `N`
(parameters) and `D` (training tokens) or `C` (training FLOPs); any other column is ignored. With D,
C = 6·N·D (Kaplan et al. 2020's convention; the record of a scalelab run counts exactly instead,
`flops.pretrain`); a given C is taken as it is and also stands for its 6ND value. N is the
non-embedding count where the user has it; the exchange law does not use N, the planner's serving
cost does (2·N per token).

A model is found by the directory string exactly as given, else by the same resolved path, else by
its folder name (the policy id of its test-time records), when exactly one row has that folder name.
Every problem is one line naming the file and the line: a missing column, an empty or non-numeric
value, a repeated model.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from scalelab.errors import InputError

CONVENTION = "6ND from --pretraining (Kaplan et al. 2020); C where the file gives it"


@dataclass(frozen=True)
class PretrainingRow:
    model: str
    N: float
    D: float | None
    C: float          # training FLOPs: the file's C, else 6·N·D
    C_6n: float       # 6·N·D when D is known, else C
    line: int


@dataclass
class PretrainingTable:
    path: str
    rows: list[PretrainingRow]

    @classmethod
    def read(cls, path: str | Path) -> "PretrainingTable":
        p = Path(path)
        if not p.is_file():
            raise InputError(f"--pretraining {p}: no such file")
        try:
            with open(p, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                cols = [c.strip() for c in reader.fieldnames or []]
                lines = [(i, {(k or "").strip(): (v or "").strip() for k, v in row.items()})
                         for i, row in enumerate(reader, start=2)]
        except (UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"--pretraining {p}: not a readable CSV ({e})") from None
        missing = [c for c in ("model", "N") if c not in cols]
        if not missing and "D" not in cols and "C" not in cols:
            missing = ["D or C"]
        if missing:
            raise InputError(f"--pretraining {p}: no column {missing[0]!r} (columns found: {', '.join(cols) or 'none'}); "
                             "expected model, N, and D or C")
        rows, seen = [], {}
        for i, r in lines:
            if not any(r.values()):
                continue  # a blank line
            model = r.get("model", "")
            if not model:
                raise InputError(f"--pretraining {p} line {i}: empty 'model'")
            if model in seen:
                raise InputError(f"--pretraining {p} line {i}: model {model!r} repeats line {seen[model]}")
            seen[model] = i
            N = _number(p, i, r, "N")
            D = _number(p, i, r, "D") if r.get("D") else None
            C = _number(p, i, r, "C") if r.get("C") else None
            if D is None and C is None:
                raise InputError(f"--pretraining {p} line {i}: model {model!r} has neither D nor C")
            six_nd = 6.0 * N * D if D is not None else None
            rows.append(PretrainingRow(model, N, D, C if C is not None else six_nd, six_nd if six_nd else C, i))
        if not rows:
            raise InputError(f"--pretraining {p}: no rows")
        return cls(str(p), rows)

    def find(self, spec: str | None, name: str) -> PretrainingRow | None:
        """The row of a model given to --model as `spec` (policy id `name`), or None."""
        if spec:
            for r in self.rows:
                if r.model == spec:
                    return r
            target = _resolved(spec)
            for r in self.rows:
                if _resolved(r.model) == target:
                    return r
        named = [r for r in self.rows if Path(r.model.rstrip("/")).name == name]
        return named[0] if len(named) == 1 else None


def _number(path: Path, i: int, row: dict[str, str], key: str) -> float:
    raw = row.get(key, "")
    try:
        v = float(raw.replace("_", ""))
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"--pretraining {path} line {i}: {key} = {raw!r} is not a positive number")
    return v


def _resolved(s: str) -> str:
    try:
        return str(Path(s).expanduser().resolve())
    except (OSError, RuntimeError):
        return s
