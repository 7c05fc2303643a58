"""`scalelab posttrain fit TABLE --technique T`: a post-training law (accuracy against post-training
compute) fitted on the smaller budgets and checked on the largest. Parsing and printing only; the
work is `scalelab.laws.posttrain_fit.fit_posttrain_law`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scalelab.cli.posttrain import pt


@pt.command("fit")
def fit_cmd(table: str = typer.Argument(..., help="runs directory, CSV or MLflow store with post-training runs"),
            technique: str = typer.Option(..., "--technique", help="e.g. sft, distill, rlvr (variants such as sft-lora match sft)"),
            x: str = typer.Option("flops", "--x", help="budget axis: flops (this stage's), examples, steps, samples or a column"),
            law: str = typer.Option("auto", "--law", help="auto (RL family: scalerl; others: posttrain-power), scalerl, posttrain-power"),
            parent: Optional[str] = typer.Option(None, "--parent", help="the parent run, when the table holds several"),
            bootstrap: int = typer.Option(200, "--bootstrap", min=0, help="resamples for 95% intervals (0: none)"),
            seed: int = typer.Option(0, "--seed"),
            as_json: bool = typer.Option(False, "--json", help="print strict JSON (no NaN: null)"),
            out: Optional[Path] = typer.Option(None, "--out", help="write the law (strict JSON) here, e.g. "
                                               "FITS/posttrain-T.json, where `scalelab plan --fits FITS` reads it")) -> None:
    """Fit accuracy against post-training compute (ScaleRL's sigmoid and a saturating power law), hold out the largest budget, report the asymptote, the efficiency and the extrapolation error."""
    from scalelab.cli.fit import MAX_BOOTSTRAP, check_count, check_outputs
    from scalelab.laws.posttrain_fit import fit_posttrain_law
    from scalelab.records import atomic_write_json, dumps_json

    check_outputs(("--out", out))
    check_count("--bootstrap", bootstrap, 0, MAX_BOOTSTRAP)
    res = fit_posttrain_law(table, technique, x=x, law=law, parent=parent, bootstrap=bootstrap, seed=seed)
    if out is not None:
        atomic_write_json(out, res)
    if as_json:
        print(dumps_json(res))
        return
    print(f"{technique}: {res['n_points']} points of accuracy against {res['x']} ({res['x_column']}), "
          f"parent {res['parent_id']}; R0 {_f(res['R0'])} ({res['R0_from']})")
    for name, e in res["laws"].items():
        mark = "*" if name == res["law"] else " "
        ci = e["ci95"] or {}
        params = ", ".join(f"{k} {_f(v)}" + (f" [{_f(ci[k][0])}, {_f(ci[k][1])}]" if ci.get(k) else "")
                           for k, v in e["params"].items())
        print(f"{mark} {name:<16} {params}; rmse {_f(e['rmse'])}{'' if e['converged'] else ' (did not converge)'}")
        ext = e["extrapolation"]
        if ext:
            print(f"  {'':<16} fitted on {ext['fit_budgets']} smaller budgets, predicts {_f(ext['predicted'])} at "
                  f"{ext['held_out_x']:.4g}, measured {_f(ext['actual'])} (error {ext['error']:+.3f})")
    for note in res["notices"]:
        print(f"note: {note}")
    if out is not None:
        print(f"wrote {out}")


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"
