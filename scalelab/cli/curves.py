"""`scalelab curves RUNSDIR --out FIG.png`: a sweep's learning curves against FLOPs and its frontier."""
from __future__ import annotations

from pathlib import Path

import typer

from scalelab.cli.app import app


@app.command("curves")
def curves_cmd(
    runs: Path = typer.Argument(..., help="runs directory of a sweep"),
    out: Path = typer.Option(Path("curves.png"), "--out", help="figure to write (PNG)"),
) -> None:
    """Plot every member's loss against training FLOPs and fit a power law to the best loss per budget."""
    from scalelab.cli.fit import check_outputs
    from scalelab.pretrain.curves import plot_curves

    check_outputs(("--out", out))
    path, front = plot_curves(runs, out)
    print("\n".join(front.lines()))
    print(f"wrote {path}")
