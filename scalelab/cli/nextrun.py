"""`scalelab next TABLE --budget C`: the run(s) that most narrow the prediction at a target compute.
Thin: parsing and printing; the work is `scalelab.laws.nextrun.next_runs`."""
from __future__ import annotations

from typing import Optional

import typer

from scalelab.cli.app import app
from scalelab.records import dumps_json


@app.command("next")
def next_cmd(
    table: str = typer.Argument(..., help="CSV file or runs directory"),
    budget: float = typer.Option(..., "--budget", help="FLOPs to spend on the new run(s) (C = 6ND)"),
    k: int = typer.Option(1, "--k", help="number of runs to propose (each gets budget/K)"),
    at: Optional[float] = typer.Option(None, "--at", help="target compute (default 10x the largest run)"),
    form: str = typer.Option("free", "--form", help="chinchilla form: free or tied"),
    col: list[str] = typer.Option([], "--col", help="use another column as a standard one: N=NAME, D=, C=, loss="),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Propose the next training run(s) and show the interval at the target before and after."""
    from scalelab.cli.fit import check_choice
    from scalelab.laws import fit_table, parse_col_map
    from scalelab.laws.chinchilla import ChinchillaLaw
    from scalelab.laws.nextrun import next_runs
    from scalelab.laws.render import fmt

    check_choice("--form", form, ("free", "tied"))
    law, prep = fit_table(table, ChinchillaLaw(form=form, method="vpnls", bootstrap=0), col_map=parse_col_map(col))
    res = next_runs(law, prep.X, budget=budget, k=k, at=at)
    if as_json:
        print(dumps_json(res))
        return
    t = res["target"]
    print(f"target: the compute-optimal model at C = {fmt(t['compute'])} (N = {fmt(t['N'])}, D = {fmt(t['D'])}), "
          f"predicted loss {t['loss']:.4f} ({form} fit)")
    for i, r in enumerate(res["runs"], 1):
        print(f"run {i}: N = {fmt(r['N'])}, D = {fmt(r['D'])} ({r['tokens_per_param']:.0f} tokens per parameter, "
              f"C = {fmt(r['compute'])}), expected loss {r['loss']:.4f}")
    for k_, label in (("ci95_mean", "95% interval of the mean"), ("pi95_new_run", "95% prediction interval, one run")):
        b, a = res["before"][k_], res["after"][k_]
        print(f"{label}: before [{b[0]:.4f}, {b[1]:.4f}], expected after [{a[0]:.4f}, {a[1]:.4f}]")
    print("(first-order estimate: delta method; the scatter of single runs stays in the prediction interval)")
