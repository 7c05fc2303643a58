"""`scalelab downstream RUNS`: fit loss -> downstream accuracy in two steps and predict a model's
accuracy from (N, D). Thin: parsing and printing; the work is `scalelab.laws.downstream`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scalelab.cli.app import app
from scalelab.records import dumps_json


@app.command("downstream")
def downstream_cmd(
    runs: str = typer.Argument(..., help="CSV or runs directory: one row per final checkpoint with N, D and the task loss"),
    checkpoints: Optional[str] = typer.Option(None, "--checkpoints", help="CSV of (task loss, accuracy) checkpoints for step 2 (default: RUNS)"),
    loss_col: str = typer.Option("task_loss", "--loss-col", help="column of the task loss (e.g. bits per byte)"),
    acc_col: str = typer.Option("accuracy", "--acc-col", help="column of the accuracy, a fraction in [0, 1]"),
    chance: Optional[float] = typer.Option(None, "--chance", help="hold the sigmoid's floor at this chance accuracy"),
    ceiling: Optional[float] = typer.Option(None, "--ceiling", help="hold the sigmoid's top (e.g. 1)"),
    form: str = typer.Option("free", "--form", help="step 1: free or tied (alpha = beta)"),
    frontier_weight: float = typer.Option(0.0, "--frontier-weight", help="step 1: weight runs by (C/C_max)^P "
                                          "(as `fit --law auto` does with 1; default 0)"),
    params: Optional[float] = typer.Option(None, "--params", help="predict for a model with N parameters"),
    tokens: Optional[float] = typer.Option(None, "--tokens", help="... trained on D tokens"),
    out: Optional[Path] = typer.Option(None, "--out", help="write both steps to this JSON file"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a figure (PNG) of both steps"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Two-step downstream law (Bhagia et al. 2024): (N, D) -> task loss -> accuracy."""
    import numpy as np

    from scalelab.cli.fit import check_choice
    from scalelab.errors import InputError
    from scalelab.laws.downstream import TwoStepLaw
    from scalelab.laws.table import _missing_message, _numeric
    from scalelab.laws.tables_io import load_runs_table
    from scalelab.records import atomic_write_json

    from scalelab.cli.fit import check_figures, check_outputs

    check_outputs(("--out", out))
    check_figures(("--plot", plot))
    check_choice("--form", form, ("free", "tied"))
    if not (np.isfinite(frontier_weight) and frontier_weight >= 0):
        raise InputError(f"--frontier-weight must be a number >= 0, got {frontier_weight!r}")
    if (params is None) != (tokens is None):
        raise InputError("give both --params and --tokens to predict, or neither")
    frame = load_runs_table(runs).frame
    for c in ("N", "D", loss_col):
        if c not in frame.columns:
            raise InputError(_missing_message(c, frame, None))
    X = np.column_stack([_numeric(frame, "N", "'N'"), _numeric(frame, "D", "'D'")])
    ck = load_runs_table(checkpoints).frame if checkpoints else frame
    for c in (loss_col, acc_col):
        if c not in ck.columns:
            raise InputError(_missing_message(c, ck, None))
    task_loss, ck_loss, ck_acc = _numeric(frame, loss_col, repr(loss_col)), _numeric(ck, loss_col, repr(loss_col)), \
        pd_fraction(ck, acc_col)
    law = TwoStepLaw(form=form, chance=chance, ceiling=ceiling, frontier_weight=frontier_weight).fit(
        X, task_loss, ck_loss, ck_acc)
    doc = law.to_dict()
    if params is not None:
        p = law.predict([[params, tokens]])
        doc["prediction"] = {"N": params, "D": tokens, "task_loss": float(p["task_loss"][0]),
                             "accuracy": float(p["accuracy"][0])}
    if out is not None:
        atomic_write_json(out, doc)
    if as_json:
        print(dumps_json(doc))
        return
    s1, s2 = law.step1_.params_, law.step2_.params_
    weighted = f", weighted by (C/C_max)^{frontier_weight:g}" if frontier_weight else ""
    print(f"step 1 ({form}): task loss = {s1['E']:.4g} + {s1['A']:.4g}/N^{s1['alpha']:.4g} + {s1['B']:.4g}/D^{s1['beta']:.4g}"
          f"  ({law.step1_.n_points_} runs{weighted}, converged: {'yes' if law.step1_.converged_ else 'NO'})")
    print(f"step 2: accuracy = {s2['floor']:.4g} + ({s2['ceiling']:.4g} - {s2['floor']:.4g}) / (1 + exp({s2['k']:.4g}·(L - {s2['L0']:.4g})))"
          f"  ({law.step2_.n_points_} points, converged: {'yes' if law.step2_.converged_ else 'NO'})")
    if "prediction" in doc:
        pr = doc["prediction"]
        print(f"N = {params:.4g}, D = {tokens:.4g}: task loss {pr['task_loss']:.4f}, accuracy {pr['accuracy']:.4f}")
    if out is not None:
        print(f"wrote {out}")
    if plot is not None:
        from scalelab.laws.downstream import plot_two_step

        plot_two_step(law, X, task_loss, ck_loss, ck_acc, plot,
                      targets=None if params is None else np.array([[params, tokens]]))
        print(f"wrote {plot}")


def pd_fraction(frame, col):
    """The accuracy column as fractions; anything else (percent, text, empty) is one error."""
    import numpy as np
    import pandas as pd

    from scalelab.errors import InputError

    v = pd.to_numeric(frame[col], errors="coerce").to_numpy(float)
    if not np.all(np.isfinite(v) & (v >= 0) & (v <= 1)):
        raise InputError(f"column {col!r}: accuracies must be numbers in [0, 1] (fractions, not percent)")
    return v
