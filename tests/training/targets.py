"""Entrypoints the training tests run as gang workers (importable by name)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any


def all_reduce() -> dict[str, Any]:
    """Every rank contributes rank + 1; the sum proves the gang is wired together."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    value = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    wiring = {
        name: os.environ[name]
        for name in (
            "WORLD_SIZE",
            "RANK",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "LOCAL_WORLD_SIZE",
            "OMP_NUM_THREADS",
        )
    }
    world = dist.get_world_size()
    dist.destroy_process_group()
    return {"sum": value.item(), "world": world, **wiring}


def count_with_checkpoints(steps: int, kill_at: int) -> dict[str, Any]:
    """A loop that checkpoints every step; on the first start, rank 1 is killed at
    ``kill_at`` (as an out-of-memory kill would)."""
    import torch
    import torch.distributed as dist

    from modelyard.training import checkpoint

    dist.init_process_group("gloo")
    resumed = checkpoint.load()
    start = resumed.step + 1 if resumed else 0
    total = torch.tensor([resumed.state["total"] if resumed else 0.0])
    restarts = int(os.environ["MODELYARD_RESTART_COUNT"])
    for step in range(start, steps):
        if restarts == 0 and step == kill_at and dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        increment = torch.tensor([1.0])
        dist.all_reduce(increment, op=dist.ReduceOp.SUM)
        total += increment
        checkpoint.save({"total": total.item()}, step=step, keep=2)
        dist.barrier()
    dist.destroy_process_group()
    return {"resumed_from": start, "total": total.item(), "restarts": restarts}


def fail(message: str) -> None:
    raise ValueError(message)


def hang(seconds: float) -> None:
    time.sleep(seconds)


def tracked(epochs: int) -> dict[str, Any]:
    """Logs a loss per epoch through modelyard's helpers and a parameter through MLflow
    itself; every rank logs, only rank 0's points are kept."""
    import mlflow

    from modelyard.training import tracking

    tracking.log_params({"epochs": epochs})
    for epoch in range(epochs):
        tracking.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
    if os.environ.get("RANK", "0") != "0":
        return {"run": None}
    mlflow.set_tag("written_by", "rank 0")
    run = mlflow.active_run()
    return {"run": run.info.run_id if run else None}
