"""`scalelab report RUNSDIR --out report.html`: one self-contained HTML page of a runs directory."""
from __future__ import annotations

from pathlib import Path

import typer

from scalelab.cli.app import app


@app.command("report")
def report_cmd(
    runs: Path = typer.Argument(..., help="runs directory (searched recursively for run records)"),
    out: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write"),
    bootstrap: int = typer.Option(200, "--bootstrap", help="resamples for the 95% intervals of the fits"),
    fits: Path = typer.Option(None, "--fits", help="folder of fits already made on these runs (chinchilla.json, "
                              "exchange.json, as `scalelab demo` writes them): rendered, not fitted again"),
    as_json: bool = typer.Option(False, "--json", help="print the report's path and size as strict JSON"),
) -> None:
    """Fits, figures and tables of every pretraining, post-training and test-time record in one HTML file."""
    from scalelab.errors import InputError
    from scalelab.pipeline.report import build_report

    from scalelab.cli.fit import MAX_BOOTSTRAP, check_count, check_outputs

    check_outputs(("--out", out))
    check_count("--bootstrap", bootstrap, 0, MAX_BOOTSTRAP)
    if fits is not None and not fits.is_dir():
        raise InputError(f"--fits {fits}: not a folder")
    path = build_report(runs, out, bootstrap=bootstrap, fits_dir=fits)
    if as_json:
        from scalelab.records import dumps_json

        print(dumps_json({"report": str(path), "bytes": path.stat().st_size}))
        return
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
