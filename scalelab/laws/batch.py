"""`scalelab predict FIT.json --table CSV`: a fitted law's prediction for every row of a table,
with the 95% interval of the mean and the prediction interval for a new run; where the table
has a loss column, each row's relative error and a summary (mean and max |error|, bias, and the
share of observed losses inside their prediction interval).

Columns are read as `fit` reads them (standard names, `--col STD=NAME`; D = C/(6N) or C = 6ND
derived and said so; U = D when a data-constrained fit gets no U column, i.e. no repetition).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import InputError
from scalelab.laws.base import Law
from scalelab.laws.intervals import far_outside, predict_intervals


def predict_table(law: Law, table: str | Path, *, col_map: dict[str, str] | None = None) -> dict[str, Any]:
    from scalelab.laws.table import _missing_message, _numeric, _present, _row_names
    from scalelab.laws.tables_io import load_runs_table

    frame = load_runs_table(table).frame
    col_map = dict(col_map or {})
    for std, name in col_map.items():
        if name not in frame.columns:
            raise InputError(_missing_message(std, frame, name))
    src = lambda std: col_map.get(std, std)  # noqa: E731
    has = lambda std: _present(frame, src(std))  # noqa: E731
    take = lambda std: _numeric(frame, src(std), repr(src(std)) if src(std) == std else f"{src(std)!r} (as {std})")  # noqa: E731
    needed = [law.x] if law.name == "power" else list(law.columns)
    notices: list[str] = []
    cols: dict[str, np.ndarray] = {}
    for std in needed:
        if has(std):
            cols[std] = take(std)
        elif std == "D" and has("C") and has("N"):
            cols[std] = take("C") / (6.0 * take("N"))
            notices.append("D not in the table: using D = C/(6N)")
        elif std == "C" and has("N") and has("D"):
            cols[std] = 6.0 * take("N") * take("D")
            notices.append("C not in the table: using C = 6·N·D")
        elif std == "U" and "D" in cols:
            cols[std] = cols["D"]
            notices.append("U not in the table: assuming no repetition (U = D)")
        else:
            raise InputError(_missing_message(std, frame, col_map.get(std)))
    X = np.column_stack([cols[s] for s in needed])
    with np.errstate(all="ignore"):
        iv = predict_intervals(law, X)
    observed = take("loss") if has("loss") else None
    names = _row_names(frame, np.arange(len(frame)))
    rows = []
    for i in range(len(frame)):
        r: dict[str, Any] = {"row": names[i], "inputs": {s: float(cols[s][i]) for s in needed},
                             "loss": float(iv["loss"][i]),
                             "ci95_mean": None if iv["ci"] is None else [float(v) for v in iv["ci"][i]],
                             "pi95_new_run": None if iv["pi"] is None else [float(v) for v in iv["pi"][i]]}
        if observed is not None:
            r["observed"] = float(observed[i])
            r["error"] = float(iv["loss"][i] / observed[i] - 1)
            if iv["pi"] is not None:
                r["in_pi"] = bool(iv["pi"][i][0] <= observed[i] <= iv["pi"][i][1])
        rows.append(r)
    out: dict[str, Any] = {"law": law.name, "pi_kind": iv["pi_kind"], "rows": rows, "notices": notices}
    extremes = {s: float(np.max(cols[s])) for s in needed}
    extremes.update({f"{s}_min": float(np.min(cols[s])) for s in needed})
    out["warnings"] = far_outside(law, {s: extremes[s] for s in needed}) + \
        far_outside(law, {s: extremes[f"{s}_min"] for s in needed})
    if observed is not None:
        e = np.array([r["error"] for r in rows])
        out["summary"] = {"n": len(e), "mean_abs_err": float(np.mean(np.abs(e))),
                          "max_abs_err": float(np.max(np.abs(e))), "bias": float(np.mean(e))}
        if iv["pi"] is not None:
            out["summary"]["inside_pi95"] = float(np.mean([r["in_pi"] for r in rows]))
    return out
