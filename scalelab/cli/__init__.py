"""Command line: `scalelab VERB ...`. Thin: each verb parses, calls library functions, prints.

Bad input raises `ScalelabError`; `main` prints it on one line and exits with code 2 (the whole
contract, argument-parser errors and bugs included, is in `scalelab.cli.oneline`).
Verb modules import heavy libraries (torch, transformers) inside their functions, so that
`scalelab fit` starts in a fraction of a second.
"""
from __future__ import annotations

from scalelab.cli.app import app
from scalelab.cli.oneline import run

# Importing a verb module registers its commands on `app`.
from scalelab.cli import fit as _fit  # noqa: F401,E402
from scalelab.cli import train as _train  # noqa: F401,E402
from scalelab.cli import testtime as _testtime  # noqa: F401,E402
from scalelab.cli import posttrain as _posttrain  # noqa: F401,E402
from scalelab.cli import posttrain_rl as _posttrain_rl  # noqa: F401,E402
from scalelab.cli import posttrain_fit as _posttrain_fit  # noqa: F401,E402
from scalelab.cli import demo as _demo  # noqa: F401,E402
from scalelab.cli import curves as _curves  # noqa: F401,E402
from scalelab.cli import report as _report  # noqa: F401,E402
from scalelab.cli import plan as _plan  # noqa: F401,E402
from scalelab.cli import tasks as _tasks  # noqa: F401,E402
from scalelab.cli import backtest as _backtest  # noqa: F401,E402
from scalelab.cli import downstream as _downstream  # noqa: F401,E402
from scalelab.cli import nextrun as _nextrun  # noqa: F401,E402


def main(argv: list[str] | None = None) -> None:
    run(app, argv)
