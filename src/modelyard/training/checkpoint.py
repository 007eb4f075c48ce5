"""Checkpoints a training loop saves and resumes from, atomically.

A checkpoint is written to a temporary file, flushed to disk and renamed into place,
so a reader (or a restarted gang) never sees a half-written one; the last ``keep`` are
kept. In a distributed job only rank 0 writes (the others return None), and every rank
reads. The folder defaults to ``MODELYARD_CHECKPOINT_DIR``, which the launcher sets.

    from modelyard.training import checkpoint

    resumed = checkpoint.load()
    start = resumed.step + 1 if resumed else 0
    for epoch in range(start, epochs):
        ...
        checkpoint.save({"model": model.state_dict(), "optim": opt.state_dict()}, step=epoch)
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_DIR = "MODELYARD_CHECKPOINT_DIR"
_NAME = re.compile(r"^checkpoint-(\d{10})\.pt$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    state: Any
    path: Path


def _folder(directory: str | os.PathLike[str] | None) -> Path:
    chosen = directory if directory is not None else os.environ.get(ENV_DIR)
    if not chosen:
        raise ValueError(f"no checkpoint folder: pass one or set {ENV_DIR}")
    return Path(chosen)


def is_primary() -> bool:
    """Whether this process is rank 0 (or not part of a distributed job)."""
    return os.environ.get("RANK", "0") == "0"


def saved(directory: str | os.PathLike[str] | None = None) -> list[tuple[int, Path]]:
    """The checkpoints in the folder, oldest first, as (step, path)."""
    folder = _folder(directory)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save(
    state: Any, *, step: int, directory: str | os.PathLike[str] | None = None, keep: int = 3
) -> Path | None:
    """Save ``state`` (anything ``torch.save`` takes) as the checkpoint of ``step`` and
    keep only the newest ``keep``; returns its path (None on ranks other than 0).

    Raises:
        ValueError: no folder, a negative step or ``keep`` below 1.
    """
    import torch

    if step < 0 or keep < 1:
        raise ValueError("step must be >= 0 and keep >= 1")
    folder = _folder(directory)
    if not is_primary():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"checkpoint-{step:010d}.pt"
    partial = folder / f".partial-{uuid.uuid4().hex}"
    try:
        with partial.open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    _sync_folder(folder)
    for _, old in saved(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def load(
    directory: str | os.PathLike[str] | None = None, *, map_location: str = "cpu"
) -> Checkpoint | None:
    """The newest checkpoint, or None when there is none yet."""
    import torch

    found = saved(directory)
    if not found:
        return None
    step, path = found[-1]
    with path.open("rb") as handle:
        state = torch.load(handle, map_location=map_location, weights_only=False)
    return Checkpoint(step=step, state=state, path=path)


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
