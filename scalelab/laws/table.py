"""From a table of runs to the arrays a law fits, with one-line errors for bad input.

Tables come from `scalelab.tables.load_table` (a CSV or a runs directory). Columns named N, D,
C, loss and U are read as they are; `--col N=params` maps another name. When D is missing and C
is present, D = C/(6N) (the 6ND convention of Kaplan et al. 2020 and Hoffmann et al. 2022); when
C is missing and a law needs it, C = 6·N·D. Both are reported as notices, never done silently.

Every problem is an `InputError` naming the column and the rows: rows are counted from 1 below
the header, or named by run_id for a runs directory.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scalelab.errors import InputError
from scalelab.laws.base import Law

STANDARD = ("N", "D", "C", "loss", "U")


@dataclass
class Prepared:
    X: np.ndarray
    y: np.ndarray
    frame: pd.DataFrame               # the columns used, after mapping and derivation
    notices: list[str] = field(default_factory=list)


def parse_col_map(items: list[str] | None) -> dict[str, str]:
    """['N=params', 'loss=val_loss'] -> {'N': 'params', 'loss': 'val_loss'}."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--col {item!r}: expected STANDARD=NAME, e.g. --col N=params")
        key, name = (s.strip() for s in item.split("=", 1))
        if key not in STANDARD:
            raise InputError(f"--col {item!r}: {key!r} is not one of {', '.join(STANDARD)}")
        if not name:
            raise InputError(f"--col {item!r}: empty column name")
        out[key] = name
    return out


def _present(frame: pd.DataFrame, col: str) -> bool:
    return col in frame.columns and not frame[col].isna().all()


def _missing_message(wanted: str, frame: pd.DataFrame, via: str | None) -> str:
    cols = [str(c) for c in frame.columns]
    close = difflib.get_close_matches(via or wanted, cols, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    shown = ", ".join(cols[:30]) + (f", ... ({len(cols)} in all)" if len(cols) > 30 else "")
    what = f"column {via!r} (given for {wanted})" if via else f"column {wanted!r}"
    return f"{what} not found{hint}; columns in the table: {shown}"


def _row_names(frame: pd.DataFrame, idx: np.ndarray) -> list[str]:
    if "run_id" in frame.columns:
        return [str(frame["run_id"].iloc[i]) for i in idx]
    return [str(int(i) + 1) for i in idx]


def _numeric(frame: pd.DataFrame, col: str, label: str) -> np.ndarray:
    raw = frame[col]
    vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    problems = []
    nonnum = np.flatnonzero(np.isnan(vals) & raw.notna().to_numpy())
    if nonnum.size:
        examples = ", ".join(repr(str(raw.iloc[i])) for i in nonnum[:3])
        problems.append(f"non-numeric in {_rows(frame, nonnum)} ({examples})")
    nan = np.flatnonzero(raw.isna().to_numpy())
    if nan.size:
        problems.append(f"empty/NaN in {_rows(frame, nan)}")
    inf = np.flatnonzero(np.isinf(vals))
    if inf.size:
        problems.append(f"infinite in {_rows(frame, inf)}")
    nonpos = np.flatnonzero(np.isfinite(vals) & (vals <= 0))
    if nonpos.size:
        problems.append(f"zero or negative in {_rows(frame, nonpos)}")
    if problems:
        unit = "runs" if "run_id" in frame.columns else "rows (counted from 1 below the header)"
        raise InputError(f"column {label}: " + "; ".join(problems) + f" — {unit}")
    return vals


def _rows(frame: pd.DataFrame, idx: np.ndarray) -> str:
    names = _row_names(frame, idx[:8])
    more = f" and {idx.size - 8} more" if idx.size > 8 else ""
    return ("run " if "run_id" in frame.columns else "row ") + ", ".join(names) + more


def prepare(frame: pd.DataFrame, law: type[Law] | Law, *, col_map: dict[str, str] | None = None,
            x: str | None = None) -> Prepared:
    """Map, derive and check the columns `law` needs; return X (in `law.columns` order) and y."""
    col_map = dict(col_map or {})
    for std, name in col_map.items():
        if name not in frame.columns:
            raise InputError(_missing_message(std, frame, name))
    source = {std: col_map.get(std, std) for std in STANDARD}
    needed = list(law.columns)
    if law.name == "power":
        needed = [x or "N"]
    notices: list[str] = []
    cols: dict[str, np.ndarray] = {}

    def take(std: str) -> np.ndarray:
        col = source.get(std, std)
        label = repr(col) if col == std else f"{col!r} (as {std})"
        return _numeric(frame, col, label)

    def has(std: str) -> bool:
        return _present(frame, source.get(std, std))

    if not has("loss"):
        raise InputError(_missing_message("loss", frame, col_map.get("loss")))
    y = take("loss")
    for std in needed:
        if has(std):
            continue
        if std == "D" and has("C") and has("N"):
            notices.append(f"D not in the table: using D = C/(6N) from columns {source['C']!r} and {source['N']!r}")
            cols["D"] = take("C") / (6.0 * take("N"))
        elif std == "C" and has("D") and has("N"):
            notices.append(f"C not in the table: using C = 6·N·D from columns {source['N']!r} and {source['D']!r}")
            cols["C"] = 6.0 * take("N") * take("D")
        elif std == "U" and law.name == "datacon":
            raise InputError(_missing_message("U", frame, col_map.get("U")) +
                             " (the data-constrained law needs unique tokens U per run)")
        else:
            hint = " (or C, to derive D = C/(6N))" if std == "D" else ""
            raise InputError(_missing_message(std, frame, col_map.get(std)).replace(" not found", f" not found{hint}", 1))
    for std in needed:
        if std not in cols:
            cols[std] = take(std)
    X = np.column_stack([cols[s] for s in needed])
    _check_size(law, X, needed)
    used = pd.DataFrame({s: cols[s] for s in needed})
    used["loss"] = y
    return Prepared(X=X, y=y, frame=used, notices=notices)


def _check_size(law: type[Law] | Law, X: np.ndarray, names: list[str]) -> None:
    n = X.shape[0]
    if n < law.min_points:
        raise InputError(f"law '{law.name}' needs at least {law.min_points} runs to be identified; the table has {n}")
    for std, k in law.min_distinct.items():
        j = names.index(std) if std in names else (0 if std == "x" else None)
        if j is None:
            continue
        distinct = np.unique(X[:, j]).size
        if distinct < k:
            what = "model sizes" if names[j] == "N" else f"distinct values of {names[j]}"
            raise InputError(f"law '{law.name}' needs at least {k} {what}; the table has {distinct}")
