"""One registry mechanism for laws, post-training techniques and test-time strategies.

    LAWS = Registry("law", {"chinchilla": "scalelab.laws.chinchilla:ChinchillaLaw", ...})
    LAWS["chinchilla"]        # imports the module on first use, then returns the class
    LAWS.get("chinchila")     # InputError: unknown law 'chinchila'; choose one of: power, chinchilla, ...

An entry is an object, or a "module:attribute" string imported on first use, so that importing a
registry (and the command line's start-up) stays cheap. Unknown names are a one-line error that
lists the known ones.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from scalelab.errors import InputError


class Registry(Mapping):
    """Read-only name -> entry mapping; "module:attr" entries are imported when first asked for."""

    def __init__(self, kind: str, entries: Mapping[str, Any], *, plural: str | None = None):
        self.kind = kind
        self.plural = plural  # "unknown strategy 'x'; known strategies: ..." where given
        self._entries = dict(entries)
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._entries:
            raise KeyError(name)
        if name not in self._loaded:
            entry = self._entries[name]
            if isinstance(entry, str) and ":" in entry:
                module, attr = entry.split(":")
                entry = importlib.import_module(module)
                for part in attr.split("."):  # "module:TABLE.key" reaches into a dict
                    entry = entry[part] if isinstance(entry, dict) else getattr(entry, part)
            self._loaded[name] = entry
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def spec(self, name: str) -> Any:
        """The entry as registered (a "module:attr" string stays a string)."""
        return self._entries[name]

    def get(self, name: str, default: Any = None) -> Any:  # noqa: D102 (Mapping.get, with a better error)
        """The entry, or a one-line `InputError` naming the known entries."""
        if name not in self._entries:
            known = f"known {self.plural}:" if self.plural else "choose one of:"
            raise InputError(f"unknown {self.kind} {name!r}; {known} {', '.join(self._entries)}")
        return self[name]
