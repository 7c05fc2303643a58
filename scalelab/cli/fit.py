"""`scalelab fit / predict / optimal`: fit a scaling law to a table of runs and use the fit.

Thin: parsing and printing only; the work is in `scalelab.laws` (imported inside the commands so
that other verbs start fast). Bad input raises InputError: one line on stderr, exit code 2.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from scalelab.cli.app import app
from scalelab.records import dumps_json
from scalelab.laws import REGISTRY


@app.command()
def version() -> None:
    """Print scalelab's version."""
    from scalelab import __version__

    print(__version__)


def _consoles():
    """stdout and stderr consoles; piped output gets a wide page instead of rich's 80 columns,
    so that tables and messages are not wrapped into narrow columns."""
    from rich.console import Console

    wide = lambda stream: None if stream.isatty() else 200  # noqa: E731
    return Console(width=wide(sys.stdout)), Console(stderr=True, width=wide(sys.stderr))


@app.command("fit")
def fit_cmd(
    table: str = typer.Argument(..., help="CSV file or runs directory"),
    law: str = typer.Option(..., "--law", help=f"law to fit: {', '.join(REGISTRY)}, or auto (chosen by backtest)"),
    form: Optional[str] = typer.Option(None, "--form", help="chinchilla: free (default), tied (alpha = beta), fixed-e (with --floor)"),
    method: Optional[str] = typer.Option(None, "--method", help="chinchilla: lbfgs (multi-start, default) or vpnls (variable projection)"),
    holdout: Optional[str] = typer.Option(None, "--holdout", help="auto: largest-compute, largest-params, both (default) or K budgets"),
    x: Optional[str] = typer.Option(None, "--x", help="power law: the column it is a law of (default N)"),
    col: list[str] = typer.Option([], "--col", help="use another column as a standard one: N=NAME, D=, C=, loss=, U="),
    n_init: Optional[int] = typer.Option(None, "--n-init", help="optimiser starts (default: Hoffmann's 4,500-point grid)"),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="resamples for 95% intervals (default 1000; 0: none)"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the fit to this FIT.json"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a figure (PNG) of the fit"),
    floor: Optional[str] = typer.Option(None, "--floor", help="chinchilla: a known irreducible loss E, not fitted: "
                                        "a number, or 'auto' for the entropy floor the testbed's runs record"),
    frontier_weight: Optional[float] = typer.Option(None, "--frontier-weight", help="weight runs by (C/C_max)^P "
                                                    "(chinchilla, power; default 0, auto 1)"),
    as_json: bool = typer.Option(False, "--json", help="print the fit document (as --out writes it) instead of tables"),
) -> None:
    """Fit a scaling law to the runs in TABLE and print its parameters with 95% intervals."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scalelab.errors import InputError
    from scalelab.laws import fit_table, make_law, parse_col_map
    from scalelab.laws import render as report
    from scalelab.laws.fitfile import write_fit

    check_outputs(("--out", out))
    check_figures(("--plot", plot))
    if law not in REGISTRY and law != "auto":
        raise InputError(f"--law {law!r}: choose one of {', '.join(REGISTRY)}, auto")
    check_count("--n-init", n_init, 1, MAX_N_INIT)
    check_count("--bootstrap", bootstrap, 0, MAX_BOOTSTRAP)
    from scalelab.laws import LAWS

    for flag, value, hyper in (("--x", x, "x"), ("--n-init", n_init, "n_init"), ("--floor", floor, "E_fixed"),
                               ("--method", method, "method"), ("--frontier-weight", frontier_weight, "frontier_weight")):
        if value is not None and law != "auto" and hyper not in LAWS[law]._hyper_names():
            able = [name for name in REGISTRY if hyper in LAWS[name]._hyper_names()]
            raise InputError(f"{flag} applies to --law {' / '.join(able)}, not {law}")
    # datacon's first stage is Chinchilla's law: --form free|tied reaches its tie_exponents
    if form is not None and law not in ("chinchilla", "datacon", "auto"):
        raise InputError(f"--form applies to --law chinchilla / datacon, not {law}")
    datacon_form = law == "datacon" and form is not None
    check_choice("--form", form, ("free", "tied") if law == "datacon" else ("free", "tied", "fixed-e"))
    check_choice("--method", method, ("lbfgs", "vpnls"))
    if law == "auto" and (form is not None or x is not None):
        raise InputError("--law auto chooses the form itself; --form and --x apply to a named law")
    if holdout is not None and law != "auto":
        raise InputError("--holdout applies to --law auto (or to `scalelab backtest`)")
    E_fixed = _floor(floor, table) if floor is not None else None
    floor_note = None
    if law == "auto" and floor is None and (E_fixed := _recorded_floor(table)) is not None:
        # A known floor is the strongest prior a fit can have: on the testbed's fact band the fixed-E
        # form extrapolated 4x better in compute than the forms that must find E (docs/LOG.md,
        # 2026-12-03), but only when offered. The backtest still decides.
        floor_note = (f"every run records the entropy floor {E_fixed:.6g}: the fixed-E form is a candidate too "
                      "(--floor VALUE to use another)")
    if form == "fixed-e" and E_fixed is None:
        raise InputError("--form fixed-e needs --floor (the known irreducible loss)")
    stdout, stderr = _consoles()
    est = None
    if law != "auto":
        est = make_law(law, x=x, n_init=n_init, bootstrap=bootstrap, seed=seed, E_fixed=E_fixed, form=form,
                       method=method, tie_exponents=(form == "tied") if datacon_form else None,
                       frontier_weight=frontier_weight)
    n_boot = getattr(est, "bootstrap", 0) if est is not None else (1000 if bootstrap is None else bootstrap)
    progress = Progress(TextColumn("bootstrap"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=stderr, transient=True, auto_refresh=False,  # no refresh thread: fits fork
                        disable=not stderr.is_terminal or not n_boot)
    selection = None
    with progress:
        task = progress.add_task("bootstrap", total=n_boot or 1)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)
            progress.refresh()

        if est is None:
            from scalelab.laws.select import fit_auto

            est, prep, selection = fit_auto(table, col_map=parse_col_map(col), floor=E_fixed,
                                            holdout=parse_holdout(holdout or "both"), method=method,
                                            bootstrap=bootstrap, seed=seed, n_init=n_init,
                                            frontier_weight=frontier_weight, progress=tick)
        else:
            est, prep = fit_table(table, est, col_map=parse_col_map(col), x=x, progress=tick)
    for note in prep.notices + ([floor_note] if floor_note else []):
        stderr.print(f"note: {note}", highlight=False, soft_wrap=True)
    if as_json:  # the document --out writes; the tables stay out of stdout, "wrote" lines go to stderr
        from scalelab.laws.fitfile import fit_document

        print(dumps_json(fit_document(est, source=str(table), notices=prep.notices,
                                      columns=parse_col_map(col) or None, extra=selection)))
        stdout = stderr
    else:
        if selection is not None:
            stdout.print(selection["selected_by"]["reason"], highlight=False, soft_wrap=True)
        stdout.print(est.title, highlight=False, soft_wrap=True)
        stdout.print(report.params_table(est))
        budgets = report.budgets_table(est)
        if budgets is not None:
            stdout.print(budgets)
        stdout.print(report.two_columns(report.fit_facts(est), ("", ""), justify="left"))
    for w in getattr(est, "warnings_", []):
        stderr.print(f"warning: {w}", highlight=False, soft_wrap=True)
    if not est.converged_:
        stderr.print(f"warning: the optimiser did not converge ({est.result_.message}); "
                     "the parameters above are where it stopped", highlight=False, soft_wrap=True)
    if out is not None:
        write_fit(out, est, source=str(table), notices=prep.notices, columns=parse_col_map(col) or None,
                  extra=selection)
        stdout.print(f"wrote {out}", highlight=False, soft_wrap=True)
    if plot is not None:
        from scalelab.laws.plot import plot_fit

        plot_fit(est, prep.X, prep.y, plot)
        stdout.print(f"wrote {plot}", highlight=False, soft_wrap=True)


def check_outputs(*pairs: tuple[str, Path | str | None]) -> None:
    """Every file a verb will write can be written: checked before any work starts."""
    from scalelab.records import check_output_file

    for flag, path in pairs:
        if path is not None:
            check_output_file(path, flag)


def check_figures(*pairs: tuple[str, Path | str | None]) -> None:
    """As `check_outputs`, for figures: also a name in an image format matplotlib writes."""
    from scalelab.records import check_figure_file

    for flag, path in pairs:
        if path is not None:
            check_figure_file(path, flag)


# Resamples and optimiser starts beyond these are a typo, not a plan: 1,000-2,000 bootstrap resamples
# suffice for 95% intervals (Efron & Tibshirani 1993, ch. 13), and memory grows as resamples x rows.
MAX_BOOTSTRAP = 100_000
MAX_N_INIT = 100_000


def check_count(flag: str, value: int | None, low: int, high: int) -> None:
    """An integer option within [low, high], named in the message when it is not."""
    from scalelab.errors import InputError

    if value is not None and not low <= value <= high:
        raise InputError(f"{flag} {value}: expected {low} to {high:,}")


def check_choice(flag: str, value: str | None, choices: tuple[str, ...]) -> None:
    from scalelab.errors import InputError

    if value is not None and value not in choices:
        raise InputError(f"{flag} {value!r}: choose one of {', '.join(choices)}")


def parse_holdout(value: str) -> str | int:
    """--holdout: largest-compute, largest-params, both, or a positive number of top budgets."""
    from scalelab.errors import InputError

    if value in ("largest-compute", "largest-params", "both"):
        return value
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise InputError(f"--holdout {value!r}: expected largest-compute, largest-params, both or a positive integer K")
    return k


def _recorded_floor(table: str) -> float | None:
    """The one entropy floor every pretraining run of the table records (`tables.entropy_floor`), else None."""
    from scalelab.errors import ScalelabError
    from scalelab.tables import entropy_floor, load_table

    try:
        return entropy_floor(load_table(table).frame)
    except ScalelabError:  # fit_auto reads the table again and says what is wrong with it
        return None


def _floor(value: str, table: str) -> float:
    """--floor: a positive number, or 'auto': the one entropy floor the table's runs recorded."""
    from scalelab.errors import InputError

    if value != "auto":
        try:
            v = float(value)
        except ValueError:
            raise InputError(f"--floor {value!r}: expected a number or 'auto'") from None
        if not (v > 0 and v < float("inf")):
            raise InputError(f"--floor {value!r}: must be a positive finite number")
        return v
    from scalelab.tables import entropy_floors, load_table

    floors = entropy_floors(load_table(table).frame).dropna().unique()
    if len(floors) != 1:
        raise InputError(f"--floor auto: {table} records {len(floors)} distinct entropy floors "
                         "(metrics.entropy_floor or an entropy_floor column); give the value as a number")
    return float(floors[0])


@app.command("predict")
def predict_cmd(
    fit: Path = typer.Argument(..., help="FIT.json written by `scalelab fit --out`"),
    params: Optional[float] = typer.Option(None, "--params", help="model parameters N"),
    tokens: Optional[float] = typer.Option(None, "--tokens", help="training tokens D"),
    unique_tokens: Optional[float] = typer.Option(None, "--unique-tokens", help="datacon: unique tokens U (default D)"),
    table: Optional[str] = typer.Option(None, "--table", help="CSV or runs directory: predict every row (errors where it has a loss)"),
    col: list[str] = typer.Option([], "--col", help="--table: use another column as a standard one: N=NAME, D=, C=, loss=, U="),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Predict the loss of a model with N parameters trained on D tokens, with the 95% interval of the mean and the 95% prediction interval for a new run."""
    from scalelab.errors import InputError
    from scalelab.laws.fitfile import load_law
    from scalelab.laws.predict import predict_point

    law = load_law(fit, verb="predict")
    stdout, stderr = _consoles()
    if table is not None:
        from scalelab.laws import parse_col_map
        from scalelab.laws import render as report
        from scalelab.laws.batch import predict_table

        if params is not None or tokens is not None or unique_tokens is not None:
            raise InputError("--table predicts the rows of a table; leave out --params, --tokens and --unique-tokens")
        result = predict_table(law, table, col_map=parse_col_map(col))
        if as_json:
            print(dumps_json(result))
        else:
            stdout.print(report.batch_table(result))
            if "summary" in result:
                stdout.print(report.batch_summary(result), highlight=False, soft_wrap=True)
        for w in result["notices"]:
            stderr.print(f"note: {w}", highlight=False, soft_wrap=True)
        for w in result["warnings"]:
            stderr.print(f"warning: {w}", highlight=False, soft_wrap=True)
        return
    if col:
        raise InputError("--col applies to --table")
    result = predict_point(law, N=params, D=tokens, U=unique_tokens)
    if as_json:
        print(dumps_json(result))
    else:
        inputs = ", ".join(f"{k}={v:.4g}" for k, v in result["inputs"].items())
        print(f"predicted loss {result['loss']:.6g}  ({result['law']} fit; {inputs})")
        _print_intervals(result)
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)


def _print_intervals(result: dict) -> None:
    from scalelab.laws.render import fmt

    ci, pi = result.get("ci95_mean"), result.get("pi95_new_run")
    if ci:
        print(f"  95% interval of the mean (bootstrap refits of the law): [{fmt(ci[0])}, {fmt(ci[1])}]")
    if pi:
        print(f"  95% prediction interval for one new run ({result['pi_kind']}): [{fmt(pi[0])}, {fmt(pi[1])}]")


@app.command("optimal")
def optimal_cmd(
    fit: Path = typer.Argument(..., help="FIT.json written by `scalelab fit --out`"),
    compute: float = typer.Option(..., "--compute", help="training compute C in FLOPs (C = 6ND)"),
    inference_tokens: Optional[float] = typer.Option(None, "--inference-tokens",
                                                     help="tokens the model will serve (Sardana et al. 2024)"),
    unique_tokens: Optional[float] = typer.Option(None, "--unique-tokens", help="datacon: unique tokens available"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Compute-optimal N*, D* and tokens per parameter for a compute budget (with --inference-tokens: the cheapest model to train and serve at the same loss)."""
    from scalelab.laws import render as report
    from scalelab.laws.fitfile import load_law
    from scalelab.laws.predict import optimal_point

    law = load_law(fit, verb="optimal")
    result = optimal_point(law, compute=compute, inference_tokens=inference_tokens, U=unique_tokens)
    for w in result.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if as_json:
        print(dumps_json(result))
        return
    console, _ = _consoles()
    if "inference" in result:
        console.print(f"inference-aware optimum (Sardana et al. 2024) at the loss of the compute-optimal "
                      f"model for C = {compute:.4g}, serving {inference_tokens:.4g} tokens:", highlight=False, soft_wrap=True)
        console.print(report.two_columns(report.inference_rows(result["inference"]),
                                         ("", "inference-aware", "Chinchilla-optimal")))
        console.print(f"total FLOPs saved: {100 * result['inference']['saving']:.2f}%", highlight=False, soft_wrap=True)
    else:
        console.print(report.two_columns(report.allocation_rows(result["allocation"]), ("", "")))
        sys.stdout.flush()
        _print_intervals(result)
    sys.stdout.flush()
