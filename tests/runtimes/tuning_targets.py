"""Objectives the tuning tests search, on every runtime (importable by name)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def bowl(x: float, folder: str, epochs: int = 3) -> dict[str, Any]:
    """Its minimum is at x=2; reports a falling loss per epoch. The second call (in
    ``folder``) fails, whatever its values."""
    from modelyard.training import tuning

    if _number_this_call(Path(folder)) == 1:
        raise ValueError("this trial diverges")
    loss = (x - 2.0) ** 2
    for epoch in range(epochs):
        tuning.report(loss * (epochs - epoch), epoch)
    return {"loss": loss}


def late_trials_trail(x: float, folder: str, epochs: int = 4) -> dict[str, Any]:
    """The first two calls (in ``folder``) report a loss of 1 per epoch, later ones a
    loss of 100: a pruner stops them once two trials have completed. ``x`` is unused
    (the search needs a space)."""
    from modelyard.training import tuning

    call = _number_this_call(Path(folder))
    loss = 1.0 if call < 2 else 100.0
    for epoch in range(epochs):
        tuning.report(loss, epoch)
    return {"loss": loss, "x": x}


def forgets_the_metric(x: float) -> dict[str, Any]:
    return {"accuracy": x}


def _number_this_call(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    number = 0
    while True:
        try:
            os.close(os.open(folder / f"call-{number}", os.O_CREAT | os.O_EXCL))
            return number
        except FileExistsError:
            number += 1
