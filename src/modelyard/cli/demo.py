"""demo: the end-to-end tour on embedded defaults (what ``make demo`` runs)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Annotated

import typer

from modelyard.errors import NotFoundError

# The tour drives the examples of a source checkout (the taxi pipeline and model).
QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart.py"


def demo(
    keep: Annotated[
        bool,
        typer.Option(help="Leave the server and the deployment running (in ./modelyard-demo)."),
    ] = False,
) -> None:
    """Initialise a throw-away platform, run the taxi pipeline, train, tune and register
    the model, deploy it, roll a challenger out by canary, watch a broken release roll
    back, and print where everything is."""
    if not QUICKSTART.is_file():
        raise NotFoundError(
            f"the demo runs the examples of a source checkout, and {QUICKSTART} is missing; "
            "run it from a clone of the repository (make demo)",
            code="demo/not_found",
        )
    sys.argv = [str(QUICKSTART), *(["--keep"] if keep else [])]
    runpy.run_path(str(QUICKSTART), run_name="__main__")
