"""Reading a corpus from disk for `scalelab.data.corpus`: which files a spec names (a folder, a
glob, a JSONL file, or `stdlib`), their text, and the units the held-out split assigns whole.
Every file problem is a one-line `InputError` naming the file (or skipped with a note when
`lenient`)."""
from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from scalelab.errors import InputError


# Not part of a Python library's own source: installed packages, bytecode, and files generated
# at build time (`_sysconfigdata_*.py` is a dict of one machine's compiler flags and paths).
STDLIB_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
# Test suites are left out by default: at 3.11 they are larger than the library (~19 MB against
# ~12 MB), full of generated data tables and deliberately malformed files, and their style would
# weigh more than the library's own code in what the model learns.
STDLIB_TEST_DIRS = {"test", "tests", "idle_test"}


@dataclass
class Unit:
    """What the held-out split assigns as a whole: a file, or one record of a single JSONL."""

    key: str  # relative path (plus ":line" for a record); the split hashes it
    file: str
    docs: list[str]
    kind: str = "file"  # or "record"

    @property
    def nbytes(self) -> int:
        return sum(len(d.encode("utf-8")) for d in self.docs)


# ---- finding and reading the input ------------------------------------------------------------
def resolve(spec: str, include_tests: bool) -> tuple[str, list[tuple[str, Path]]]:
    """(kind, [(relative path, path)]) sorted by relative path, for determinism."""
    if spec == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        members = []
        for p in root.rglob("*.py"):
            rel = p.relative_to(root)
            dirs = set(rel.parts[:-1])
            if (dirs & STDLIB_SKIP_DIRS or rel.parts[0].startswith("config-")
                    or rel.name.startswith("_sysconfigdata") or (not include_tests and dirs & STDLIB_TEST_DIRS)):
                continue
            members.append((rel.as_posix(), p))
        return "stdlib", sorted(members)
    if re.search(r"[*?[]", spec) and not Path(spec).exists():  # a real "data[1].txt" is a path
        matches = [Path(m) for m in sorted(globlib.glob(spec, recursive=True))]
        paths = [f for m in matches for f in ([m] if m.is_file() else walk(m))]
        if not paths:
            raise InputError(f"{spec}: the glob matched no files")
        root = Path(os.path.commonpath([p.parent for p in paths]))
        return "glob", sorted((p.relative_to(root).as_posix(), p) for p in paths)
    p = Path(spec)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if p.is_dir():
        paths = walk(p)
        if not paths:
            raise InputError(f"{p}: the directory holds no files")
        return "directory", sorted((f.relative_to(p).as_posix(), f) for f in paths)
    return ("jsonl" if p.suffix == ".jsonl" else "file"), [(p.name, p)]


def walk(d: Path) -> list[Path]:
    """Files under d, skipping hidden names (.git, .DS_Store) and __pycache__."""
    out = []
    for base, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if not x.startswith(".") and x != "__pycache__"]
        out += [Path(base) / f for f in files if not f.startswith(".")]
    return out


def read_units(members: list[tuple[str, Path]], text_field: str, *, lenient: bool, where: str
                ) -> tuple[list[Unit], list[str], str]:
    """Units, skipped files ("path: why"), and a digest of the relative paths and bytes read.

    Empty files are skipped (a package's empty __init__.py is not an error) unless the corpus is
    one file. `lenient` (the stdlib) also skips undecodable files: the user cannot fix those.
    """
    units, skipped, digest = [], [], hashlib.sha256()
    single = len(members) == 1
    for rel, path in members:
        data = read_bytes(path)
        label = f"stdlib/{rel}" if lenient else str(path)  # no machine paths in stdlib records
        digest.update(f"{rel}\0{len(data)}\0".encode() + hashlib.sha256(data).digest())
        try:
            if path.suffix == ".jsonl":
                records = parse_jsonl(label, data, text_field)
                if single:
                    units += [Unit(f"{rel}:{line}", rel, [t], "record") for line, t in records]
                elif records:
                    units.append(Unit(rel, rel, [t for _, t in records]))
                else:
                    skipped.append(f"{label}: no non-empty {text_field!r} records")
            elif data:
                units.append(Unit(rel, rel, [decode(label, data)]))
            elif single:
                raise InputError(f"{label}: empty file")
            else:
                skipped.append(f"{label}: empty file")
        except InputError as e:
            if not lenient:
                raise
            skipped.append(str(e))
    if not units:
        raise InputError(f"{where}: no text found"
                         + (f" ({len(skipped)} files skipped, e.g. {skipped[0]})" if skipped else ""))
    return units, skipped, digest.hexdigest()


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def decode(path: str, data: bytes) -> str:
    nul = data.find(b"\0")
    if nul >= 0:  # text files do not hold NUL bytes; images, archives and bytecode do
        raise InputError(f"{path}: binary file (NUL byte at offset {nul}); point the corpus at text files only")
    try:
        return data.decode("utf-8")  # strict, and no newline translation: byte counts stay exact
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at line {line}, offset {e.start})") from None


def parse_jsonl(path: str, data: bytes, field: str) -> list[tuple[int, str]]:
    """(line number, text) for each record with a non-empty text; blank lines are skipped."""
    out = []
    for line, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        where = f"{path}:{line}"
        try:
            obj = json.loads(decode(where, raw))
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if field not in obj:
            have = ", ".join(map(str, list(obj)[:8])) or "none"
            raise InputError(f"{where}: no {field!r} field (fields: {have}); choose one with --text-field")
        text = obj[field]
        if not isinstance(text, str):
            raise InputError(f"{where}: field {field!r} is {type(text).__name__}, expected a string")
        if text:
            out.append((line, text))
    return out
