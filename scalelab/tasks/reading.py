"""Reading a task file into rows: (line number, dict) pairs, whatever shape the file ships in.

    rows, columns = read_rows("test.jsonl.gz")

- JSON Lines (`.jsonl`, `.ndjson`, and a `.json` that holds one object a line, as
  `datasets.Dataset.to_json` writes it); a `.json` document that is one array of objects, or an
  object whose one list of objects holds the records (`{"version": ..., "data": [...]}`).
- CSV and TSV with a header line; a CSV without one whose last column is the answer letter
  (MMLU's original release: question, A, B, C, D, answer) gets the columns
  question, A, B, ..., answer.
- Parquet.
- Any of these compressed: `.gz`, `.bz2`, `.xz`. A UTF-8 byte-order mark and CRLF line ends are read
  as plain UTF-8.

A cell of a CSV may hold a list or a record written by `datasets`/pandas (`['a' 'b']`,
`{'text': array(['a', 'b'], dtype=object), ...}`); `parse_cell` reads those with a small parser of
Python literals (bounded, never `eval`).
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import re
from pathlib import Path
from typing import Any

from scalelab.errors import InputError
from scalelab.tables import json_lines

TYPES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# A CSV header made of these names is a header (case-insensitive); see `_headerless`.
KNOWN_COLUMNS = {"question", "problem", "prompt", "answer", "solution", "choices", "options", "id", "split",
                 "difficulty", "level", "label", "input", "target", "output", "instruction"}
MAX_CELL = 100_000      # characters of a cell `parse_cell` reads
MAX_DEPTH = 20          # nesting in one cell


def kind(path: str | Path) -> tuple[str, str]:
    """(file type, compression) from the name: 'x.jsonl.gz' -> ('.jsonl', '.gz')."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    comp = suffixes[-1] if suffixes and suffixes[-1] in _OPENERS else ""
    inner = suffixes[-2] if comp and len(suffixes) > 1 else (suffixes[-1] if suffixes and not comp else "")
    return inner, comp


def _text(p: Path, comp: str) -> str:
    try:
        if comp:
            with _OPENERS[comp](p, "rb") as f:
                data = f.read()
        else:
            data = p.read_bytes()
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise InputError(f"{p}: cannot decompress it as {comp[1:]} ({e})") from None
    try:
        return data.decode("utf-8-sig")  # strips a byte-order mark
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _json_lines(p: Path, text: str) -> list[tuple[int, dict]]:
    return list(json_lines(p, text.splitlines()))


def _records(p: Path, doc: Any, text: str) -> list[tuple[int, dict]]:
    """The records of a whole JSON document, each with the line its object starts on."""
    items, key = doc, None
    if isinstance(doc, dict):
        lists = [k for k, v in doc.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(lists) != 1:
            raise InputError(f"{p}: a JSON object with {len(lists)} lists of records (keys "
                             f"{', '.join(map(str, doc)) or 'none'}); expected one list, or one object a line")
        key = lists[0]
        items = doc[key]
    if not isinstance(items, list):
        raise InputError(f"{p}: expected JSON objects, found one {type(doc).__name__}")
    bad = next((i for i, x in enumerate(items) if not isinstance(x, dict)), None)
    if bad is not None:
        raise InputError(f"{p}: item {bad + 1}{f' of {key!r}' if key else ''} is a {type(items[bad]).__name__}, "
                         "expected a JSON object")
    starts = _object_lines(text, len(items))
    if starts is None or len(set(starts)) < len(starts):
        starts = list(range(1, len(items) + 1))  # records sharing a line are numbered by position
    return list(zip(starts, items))


def _object_lines(text: str, n: int) -> list[int] | None:
    """Line numbers where the n records begin: the n '{' that open an object one level inside the
    array of records (depth counted outside strings); None if the count does not come out at n."""
    depth, in_str, esc, line, out = 0, False, False, 1, []
    target = 1 if text.lstrip().startswith("[") else 2
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            esc, in_str = (False, True) if esc else (ch == "\\", ch != '"')
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            if ch == "{" and depth == target:
                out.append(line)
            depth += 1
        elif ch in "]}":
            depth -= 1
    return out if len(out) == n else None


def _read_json(p: Path, text: str, suffix: str) -> list[tuple[int, dict]]:
    if suffix == ".json" and text.lstrip()[:1] in ("[", "{"):
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            doc = None  # one object a line (datasets' to_json writes .json files that way)
        if isinstance(doc, list) or (isinstance(doc, dict) and any(isinstance(v, list) for v in doc.values())):
            return _records(p, doc, text)
    return _json_lines(p, text)


def _headerless(frame: Any) -> bool:
    """A CSV whose header line is a problem: no known column name, 3+ columns, and the last column,
    header included, one answer letter a line (MMLU's question,A,B,C,D,answer without a header)."""
    cols = [str(c) for c in frame.columns]
    if len(cols) < 3 or any(c.strip().lower() in KNOWN_COLUMNS for c in cols):
        return False
    last = [cols[-1], *frame.iloc[:, -1].tolist()]
    return all(isinstance(v, str) and len(v.strip()) == 1 and v.strip().upper() in "ABCDEFGHIJ" for v in last)


def _read_table(p: Path, comp: str, suffix: str) -> list[tuple[int, dict]]:
    import pandas as pd

    try:
        if suffix in (".parquet", ".pq"):
            source: Any = io.BytesIO(_OPENERS[comp](p, "rb").read()) if comp else p
            frame, first = pd.read_parquet(source), 1
        else:
            sep = "\t" if suffix == ".tsv" else ","
            text = _text(p, comp)
            frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
            first = 2  # line 1 is the header
            if _headerless(frame):
                frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, header=None)
                k = frame.shape[1] - 2
                frame.columns = ["question", *[chr(65 + i) for i in range(k)], "answer"]
                first = 1
    except InputError:
        raise
    except Exception as e:  # pandas and pyarrow raise many types for an unreadable file
        raise InputError(f"{p}: cannot read it as {suffix[1:]} ({' '.join(str(e).split())[:160]})") from None
    # CSV line numbers assume one line a row (a quoted cell with newlines shifts them)
    return [(first + i, rec) for i, rec in enumerate(frame.to_dict("records"))]


def read_rows(path: str | Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """(line number, row) pairs and the columns in order of first appearance."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: " + ("a folder, not a task file" if p.is_dir() else "no such file"))
    suffix, comp = kind(p)
    if suffix not in TYPES:
        raise InputError(f"{path}: unknown file type {suffix + comp or '(none)'}; use .jsonl, .json, .csv, .tsv "
                         "or .parquet (optionally .gz, .bz2 or .xz)")
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = _read_json(p, _text(p, comp), suffix)
    else:
        rows = _read_table(p, comp, suffix)
    if not rows:
        raise InputError(f"{path}: no problems in the file")
    columns = list(dict.fromkeys(k for _, r in rows for k in r))
    return rows, columns


# ---- cells written by datasets / pandas ---------------------------------------------------------------
_CELL_TOKEN = re.compile(r"""\s*(?:('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"""
                         r"""|([A-Za-z_][A-Za-z_0-9.]*)|([\[\](){}:,=]))""", re.DOTALL)


class _Bad(Exception):
    pass


def _cell_tokens(text: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(text):
        if text[i:].strip() == "":
            break
        m = _CELL_TOKEN.match(text, i)
        if m is None:
            raise _Bad(text[i:i + 20])
        s, num, name, punct = m.groups()
        out.append(("s", s) if s is not None else ("n", num) if num is not None else
                   ("w", name) if name is not None else ("p", punct))
        i = m.end()
    return out


def _unquote(tok: str) -> str:
    import ast

    return ast.literal_eval(tok)  # one string literal only (checked by the tokenizer): no code runs


def _cell_value(toks: list[tuple[str, str]], i: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH or i >= len(toks):
        raise _Bad("nesting")
    kind_, tok = toks[i]
    if kind_ == "s":
        return _unquote(tok), i + 1
    if kind_ == "n":
        return (float(tok) if any(c in tok for c in ".eE") else int(tok)), i + 1
    if kind_ == "w":
        if tok in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[tok], i + 1
        if tok == "array" and i + 1 < len(toks) and toks[i + 1] == ("p", "("):  # numpy's repr
            value, i = _cell_value(toks, i + 2, depth + 1)
            if toks[i:i + 2] == [("p", ","), ("w", "dtype")]:
                i += 4  # , dtype = NAME
            if toks[i:i + 1] != [("p", ")")]:
                raise _Bad("array(")
            return value, i + 1
        raise _Bad(tok)
    if tok in ("[", "("):
        close, items, i = "]" if tok == "[" else ")", [], i + 1
        while toks[i:i + 1] != [("p", close)]:
            item, i = _cell_value(toks, i, depth + 1)
            items.append(item)
            if toks[i:i + 1] == [("p", ",")]:
                i += 1  # numpy separates items with spaces only
        return items, i + 1
    if tok == "{":
        out: dict = {}
        i += 1
        while toks[i:i + 1] != [("p", "}")]:
            key, i = _cell_value(toks, i, depth + 1)
            if toks[i:i + 1] != [("p", ":")]:
                raise _Bad(":")
            out[str(key)], i = _cell_value(toks, i + 1, depth + 1)
            if toks[i:i + 1] == [("p", ",")]:
                i += 1
        return out, i + 1
    raise _Bad(tok)


def parse_cell(text: str) -> Any:
    """A list or record written into a CSV cell: JSON, or Python/numpy repr (`['a' 'b']`,
    `{'text': array([...], dtype=object)}`); None when the text is neither."""
    text = text.strip()
    if not text or text[0] not in "[{(" or len(text) > MAX_CELL:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        toks = _cell_tokens(text)
        value, end = _cell_value(toks, 0, 0)
    except (_Bad, IndexError, ValueError, SyntaxError, RecursionError):
        return None
    return value if end == len(toks) else None
