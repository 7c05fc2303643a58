"""`scalelab fit / predict / optimal`: placeholder until the laws land."""
from scalelab.cli.app import app


@app.command()
def version() -> None:
    """Print scalelab's version."""
    from scalelab import __version__

    print(__version__)
