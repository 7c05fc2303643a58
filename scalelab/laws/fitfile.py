"""FIT.json: a fitted law on disk, read back by `scalelab predict` and `scalelab optimal`.

Keys (fixed since the first release): `law`; `params`; `ci95` (same keys, [low, high]); `n_points`; `objective`;
`converged`; `optimal` (a, b where the law defines them). scalelab adds `message` (the stopping
test met), `check` (what scipy's L-BFGS-B made of the optimum), `settings` (the
hyper-parameters), `source`, `columns`,
`notices`, `scalelab` (version) and law-specific blocks (bootstrap, starts, budgets, timing);
`fit --law auto` adds `selected_by` and `backtest`.
Written atomically.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from scalelab import __version__
from scalelab.errors import InputError
from scalelab.records import atomic_write_json
from scalelab.laws.base import Law


def fit_document(law: Law, *, source: str | None = None, notices: list[str] | None = None,
                 columns: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = law.to_dict()
    if extra:
        doc.update(extra)
    doc["scalelab"] = __version__
    if source is not None:
        doc["source"] = source
    if columns:
        doc["columns"] = columns
    if notices:
        doc["notices"] = list(notices)
    return doc


def write_fit(path: str | Path, law: Law, **kw: Any) -> dict[str, Any]:
    doc = fit_document(law, **kw)
    atomic_write_json(path, doc)
    return doc


def read_fit(path: str | Path) -> dict[str, Any]:
    from scalelab.laws import LAWS

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a FIT.json file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))  # a byte-order mark, as CSVs and configs allow
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(doc, dict) or "law" not in doc or "params" not in doc:
        raise InputError(f"{p}: not a FIT.json (expected an object with 'law' and 'params')")
    if not isinstance(doc["law"], str) or doc["law"] not in LAWS:
        raise InputError(f"{p}: unknown law {doc['law']!r} (known: {', '.join(LAWS)})")
    return doc


def load_law(path: str | Path, *, verb: str | None = None) -> Law:
    """The fitted law in FIT.json; with `verb`, refuse laws that cannot do it."""
    from scalelab.laws import LAWS

    doc = read_fit(path)
    cls = LAWS[doc["law"]]
    if verb is not None and verb not in cls.verbs:
        able = [name for name, c in LAWS.items() if verb in c.verbs]
        raise InputError(f"{path}: holds a '{doc['law']}' fit, but `{verb}` needs one of: {', '.join(able)}")
    if not isinstance(doc["params"], dict):
        raise InputError(f"{path}: 'params' must be an object")
    bad = [k for k, v in doc["params"].items() if isinstance(v, bool) or not isinstance(v, (int, float))
           or not math.isfinite(v)]
    if bad:
        raise InputError(f"{path}: params {', '.join(map(repr, bad))}: expected finite numbers")
    for key in ("ci95", "settings", "range", "noise", "draws"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise InputError(f"{path}: {key!r} must be an object")
    try:
        return cls.from_dict(doc)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise InputError(f"{path}: cannot rebuild the '{doc['law']}' fit ({e})") from None
