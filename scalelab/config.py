"""Typed configs: validated on construction, serialised to JSON, overridable with `key=value`.

Every stage's config is a keyword-only pydantic model derived from `Config`. Validation errors
become one-line `ConfigError`s that name the field and the allowed range, and `--set key=value`
overrides suggest the close names when a key does not exist.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from scalelab.errors import ConfigError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def build(cls: type[C], data: dict[str, Any] | None = None, **kw: Any) -> C:
        """Construct from a dict, turning validation errors into one-line `ConfigError`s."""
        merged = {**(data or {}), **kw}
        unknown = [k for k in merged if k not in cls.model_fields]
        if unknown:
            raise ConfigError(_unknown_message(cls, unknown[0]))
        try:
            return cls(**merged)
        except ValidationError as e:
            raise ConfigError(_format_validation(cls, e)) from None

    @classmethod
    def from_json(cls: type[C], path: str | Path) -> C:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}" + (" (it is a folder)" if p.is_dir() else ""))
        try:  # utf-8-sig: a byte-order mark, as some Windows editors write, is no error
            data = json.loads(p.read_bytes().decode("utf-8-sig"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not a JSON text file (byte {e.start} is not UTF-8)") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a JSON object of config fields")
        return cls.build(data)

    def override(self: C, assignments: list[str]) -> C:
        """Apply `key=value` strings (values parsed as JSON when they can be)."""
        data = self.model_dump()
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected key=value")
            key, raw = item.split("=", 1)
            key = key.strip()
            if key not in type(self).model_fields:
                raise ConfigError(_unknown_message(type(self), key, flag="--set "))
            data[key] = _parse_value(raw)
        return type(self).build(data)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _unknown_message(cls: type[BaseModel], key: str, flag: str = "") -> str:
    names = list(cls.model_fields)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(names)}"
    return f"{flag}{key}: no such {cls.__name__} field{hint}"


def _format_validation(cls: type[BaseModel], err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or cls.__name__
    value = first.get("input")
    # pydantic's messages already state the bound ("Input should be greater than 0").
    msg = first["msg"]
    shown = f"={value!r}" if not isinstance(value, dict) else ""
    if isinstance(value, int) and not isinstance(value, bool) and len(shown) > 24:
        shown = f"={float(value):.3g}"  # a 300-digit integer (e.g. tokens of a 1e300 budget) as 1.8e+299
    elif len(shown) > 200:
        shown = shown[:200] + "..."
    extra = f" ({len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"invalid {cls.__name__}: {field}{shown}: {msg}{extra}"
