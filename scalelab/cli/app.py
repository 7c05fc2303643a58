"""The typer application that every verb module registers on, and the options verbs share."""
import typer

app = typer.Typer(
    name="scalelab",
    help="Measure and use the three scaling laws of AI (pretraining, post-training, test-time) in FLOPs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """scalelab: fit, train, post-train, sample, plan and report, all in FLOPs."""


# train, sweep, posttrain and testtime: where rows, config and record are mirrored (scalelab.trackers)
JSON_RECORD = typer.Option(False, "--json", help="print the finished run's record as strict JSON (no tables)")
TRACKER = typer.Option(None, "--tracker", help="none | mlflow | tensorboard (default: $SCALELAB_TRACKER, else none)")
