"""The report's HTML primitives: numbers as the command line prints them, escaped text, tables
that scroll on narrow screens, notes."""
from __future__ import annotations

import html
from typing import Any


def fmt(v: Any) -> str:
    """A number as the command line prints it (4 significant digits), '-' for none or NaN."""
    from scalelab.laws.render import fmt as _fmt

    return _fmt(v)


def esc(s: Any) -> str:
    return html.escape(str(s))


def table(head: list[str], rows: list[list[Any]]) -> str:
    # numbers (fmt: 11 characters at most) stay whole; longer text (run ids, intervals) may wrap to fit
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(('<td class="w">' if len(str(c)) > 12 else "<td>") + f"{esc(c)}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'
