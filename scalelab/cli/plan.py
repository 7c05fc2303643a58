"""`scalelab exchange RUNS` (exchange rates between the laws) and `scalelab plan` (the budget
planner). Parsing and printing only; the work is in `scalelab.laws.exchange_tables` and
`scalelab.pipeline.plan`. `plan` exits with code 1 when the budget cannot reach the target (2: bad input)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scalelab.cli.app import app
from scalelab.records import dumps_json


@app.command("exchange")
def exchange_cmd(
    runs: Path = typer.Argument(..., help="runs directory with test-time records of 2+ pretrained models"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the exchange fit (JSON) here, e.g. FITS/exchange.json"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write the iso-accuracy frontier figure (PNG)"),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="strategy drawn in --plot (default: the most measured)"),
    frontier: bool = typer.Option(True, "--frontier/--all-models",
                                  help="leave out models below the compute frontier (by greedy accuracy), or keep all"),
    bootstrap: int = typer.Option(200, "--bootstrap", help="resamples of the problems for the 95% intervals"),
    seed: int = typer.Option(0, "--seed"),
    pretraining: Optional[Path] = typer.Option(None, "--pretraining", help="CSV of model, N, and D or C: pretraining "
                                               "compute of models that are not scalelab runs (model = the --model "
                                               "directory as given to testtime)"),
    task: Optional[str] = typer.Option(None, "--task", help="the task whose records to use, when RUNS holds several"),
    as_json: bool = typer.Option(False, "--json", help="print the document as JSON"),
) -> None:
    """Test-time FLOPs worth 10x pretraining, where test time cannot replace it, and what post-training is worth."""
    from scalelab.laws.exchange_tables import measure_exchange, summary_lines, testtime_table
    from scalelab.records import atomic_write_json

    from scalelab.cli.fit import MAX_BOOTSTRAP, check_count, check_figures, check_outputs

    check_outputs(("--out", out))
    check_figures(("--plot", plot))
    check_count("--bootstrap", bootstrap, 0, MAX_BOOTSTRAP)
    doc = measure_exchange(runs, bootstrap=bootstrap, seed=seed, on_frontier=frontier, pretraining=pretraining,
                           task=task)
    print(dumps_json(doc) if as_json else "\n".join(summary_lines(doc)))
    written = []
    if out is not None:
        atomic_write_json(out, doc)
        written.append(out)
    if plot is not None:
        from scalelab.laws.exchange_plot import plot_frontier

        plot_frontier(testtime_table(runs, pretraining=pretraining, task=task)[0], doc, plot, strategy=strategy)
        written.append(plot)
    for path in written if not as_json else []:  # --json keeps stdout one JSON document
        print(f"wrote {path}")


@app.command("plan")
def plan_cmd(
    budget: float = typer.Option(..., "--budget", help="total FLOPs: training + post-training + serving"),
    queries: float = typer.Option(..., "--queries", help="queries to serve"),
    tokens_per_query: Optional[float] = typer.Option(None, "--tokens-per-query", help="default: a testbed question's"),
    target_accuracy: Optional[float] = typer.Option(None, "--target-accuracy", help="accuracy to reach (0-1)"),
    target_loss: Optional[float] = typer.Option(None, "--target-loss", help="pretraining loss to reach (nats/token)"),
    difficulty: Optional[int] = typer.Option(None, "--difficulty", help="accuracy at this difficulty (default: the mean)"),
    fits: Path = typer.Option(Path("fits"), "--fits", help="folder of fits: chinchilla.json, exchange.json and any "
                              "post-training laws (scalelab posttrain fit --out FITS/posttrain-T.json)"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
) -> None:
    """Recommend model size, tokens, post-training, test-time strategy and n for a budget and a target."""
    from scalelab.errors import InputError
    from scalelab.pipeline.plan import PlanConfig, explain, load_fits, make_plan

    if (target_accuracy is None) == (target_loss is None):
        raise InputError("give exactly one of --target-accuracy and --target-loss")
    if not queries > 0:  # the library takes 0 (training alone); on the command line it is a slip
        raise InputError(f"--queries {queries:g}: expected a positive number of queries to serve; for training "
                         "alone, `scalelab optimal FIT --compute C` gives the compute-optimal model")
    cfg = PlanConfig.build(budget=budget, queries=queries, tokens_per_query=tokens_per_query,
                           target_accuracy=target_accuracy, target_loss=target_loss, difficulty=difficulty)
    plan = make_plan(cfg, load_fits(fits, need_exchange=target_accuracy is not None))
    print(dumps_json(plan.as_dict()) if as_json else "\n".join(explain(plan)))
    if not plan.reachable:
        raise typer.Exit(1)
