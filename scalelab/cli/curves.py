"""`scalelab curves RUNSDIR --out FIG.png`: a sweep's learning curves against FLOPs and its frontier."""
from __future__ import annotations

from pathlib import Path

import typer

from scalelab.cli.app import app


@app.command("curves")
def curves_cmd(
    runs: Path = typer.Argument(..., help="runs directory of a sweep"),
    out: Path = typer.Option(Path("curves.png"), "--out", help="figure to write (PNG)"),
    as_json: bool = typer.Option(False, "--json", help="print the frontier and its power law as strict JSON"),
) -> None:
    """Plot every member's loss against training FLOPs and fit a power law to the best loss per budget."""
    from scalelab.cli.fit import check_figures
    from scalelab.pretrain.curves import plot_curves

    check_figures(("--out", out))
    path, front = plot_curves(runs, out)
    if as_json:
        import sys

        from scalelab.records import dumps_json

        print(dumps_json({"law": "L - floor = k * C^-g", **front.as_dict(), "figure": str(path)}))
        print(f"wrote {path}", file=sys.stderr)
        return
    print("\n".join(front.lines()))
    print(f"wrote {path}")
