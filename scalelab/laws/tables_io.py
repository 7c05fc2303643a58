"""Reading a table of runs for a fit, with the one check the loader cannot make: a FIT.json
(a fitted law) given where a table of runs belongs is named as such, not parsed as a CSV."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scalelab.errors import InputError


def load_runs_table(path: str | Path) -> Any:
    """`scalelab.tables.load_table`, after refusing a JSON document (FIT.json or other)."""
    from scalelab.tables import load_table

    p = Path(path)
    if p.is_file():
        with p.open("rb") as fh:
            head = fh.read(4096).lstrip()
        if head.startswith(b"{") or head.startswith(b"["):
            try:
                doc = json.loads(p.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError):
                doc = None
            what = "a FIT.json (a fitted law)" if isinstance(doc, dict) and "law" in doc else "a JSON document"
            raise InputError(f"{p}: is {what}, not a table of runs; give a CSV file or a runs directory "
                             "(a FIT.json is read by predict and optimal)")
    return load_table(path)  # the string as given: a tracking URI (sqlite:///...) is not a path
