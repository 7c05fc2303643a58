"""`scalelab backtest TABLE`: refit candidate laws below the held-out frontier, score them on it.

Thin: parsing and printing; the work is `scalelab.laws.backtest.backtest`.
"""
from __future__ import annotations

from typing import Optional

import typer

from scalelab.cli.app import app
from scalelab.records import dumps_json


@app.command("backtest")
def backtest_cmd(
    table: str = typer.Argument(..., help="CSV file or runs directory"),
    law: list[str] = typer.Option([], "--law", help="candidate (repeatable): free, tied, fixed-e, kaplan, datacon; "
                                  "default: those `fit --law auto` compares"),
    holdout: str = typer.Option("largest-compute", "--holdout", help="largest-compute, largest-params, both, or K (top K budgets)"),
    method: str = typer.Option("vpnls", "--method", help="chinchilla refits: vpnls (default) or lbfgs"),
    floor: Optional[str] = typer.Option(None, "--floor", help="known irreducible loss for the fixed-e candidate (a number or auto)"),
    frontier_weight: float = typer.Option(0.0, "--frontier-weight", help="weight runs by (C/C_max)^P in every refit "
                                          "(`fit --law auto` uses 1)"),
    col: list[str] = typer.Option([], "--col", help="use another column as a standard one: N=NAME, D=, C=, loss=, U="),
    as_json: bool = typer.Option(False, "--json", help="print JSON (errors as fractions)"),
) -> None:
    """Backtest law forms: fit each below the largest budget (or model), predict the held-out runs."""
    from scalelab.cli.fit import _consoles, _floor, check_choice, parse_holdout
    from scalelab.laws import parse_col_map
    from scalelab.laws.backtest import backtest, candidate, default_candidates, reason, runs_frame
    from scalelab.laws.render import backtest_table

    ho = parse_holdout(holdout)
    check_choice("--method", method, ("lbfgs", "vpnls"))
    for name in law:
        candidate(name)
    E = _floor(floor, table) if floor is not None else None
    runs = runs_frame(table, parse_col_map(col))
    bt = backtest(runs, list(dict.fromkeys(law)) or default_candidates(runs.frame, E), holdout=ho, method=method,
                  floor=E, frontier_weight=frontier_weight)
    if as_json:
        print(dumps_json(bt))
        return
    stdout, stderr = _consoles()
    for note in runs.notices:
        stderr.print(f"note: {note}", highlight=False, soft_wrap=True)
    stdout.print(backtest_table(bt))
    stdout.print(reason(bt).replace("chose", "best:", 1), highlight=False, soft_wrap=True)
