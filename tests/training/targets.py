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


def fit_linear(rows: int, noise: float, reference: str) -> dict[str, Any]:
    """Fits a linear regression on generated data, logs its error and the model, and
    writes the training features to ``reference`` (Parquet) for registration."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.linear_model import LinearRegression

    from modelyard.training import registry, tracking

    generator = np.random.default_rng(7)
    features = generator.normal(size=(rows, 2))
    target = features @ np.array([2.0, -1.0]) + generator.normal(scale=noise, size=rows)
    model = LinearRegression().fit(features, target)
    rmse = float(np.sqrt(np.mean((model.predict(features) - target) ** 2)))
    tracking.log_params({"noise": noise})
    tracking.log_metrics({"rmse": rmse})
    tracking.flush()
    pq.write_table(pa.table({"a": features[:, 0], "b": features[:, 1]}), reference)
    return {"model_uri": registry.log_model(model, input_example=features[:3]), "rmse": rmse}


def quadratic(x: float, y: int, kind: str, epochs: int = 3) -> dict[str, Any]:
    """An objective with its minimum at x=2: reports a falling loss per epoch (prunable),
    fails for kind="broken", and logs a small model for the best to be registered."""
    import numpy as np
    from sklearn.linear_model import LinearRegression

    from modelyard.training import registry, tuning

    if kind == "broken":
        raise ValueError("this kind of model diverges")
    loss = (x - 2.0) ** 2 + 0.01 * y
    for epoch in range(epochs):
        tuning.report(loss * (epochs - epoch), epoch)
    features = np.arange(6, dtype=float).reshape(3, 2)
    model = LinearRegression().fit(features, features.sum(axis=1) * x)
    registry.log_model(model, input_example=features[:2])
    return {"loss": loss, "x": x}


def never_logs(x: float) -> dict[str, Any]:
    """An objective that forgets the metric the search asks for."""
    return {"accuracy": x}


def diverging(x: float) -> dict[str, Any]:
    """An objective whose loss is not a number."""
    return {"loss": float("nan") * x}


def hang_noting_pid(folder: str, seconds: float) -> None:
    """Writes its pid to ``folder/rank-N.pid``, then sleeps."""
    from pathlib import Path

    Path(folder, f"rank-{os.environ.get('RANK', '0')}.pid").write_text(str(os.getpid()))
    time.sleep(seconds)
