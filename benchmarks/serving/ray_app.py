"""Ray Serve's side of the serving benchmark: run in Ray's own environment (not the
project's), it starts a local Ray (loopback, no dashboard, a small object store), serves
one replica of the MLflow model over HTTP and stops everything on SIGTERM.

    python ray_app.py MODEL_FOLDER PORT MAX_BATCH_SIZE BATCH_WAIT_SECONDS

The replica loads the model's scikit-learn flavour (what ``modelyard serve`` predicts
with too) and batches concurrent requests with ``@serve.batch``. Requests are MLflow's
``/invocations`` body (``dataframe_split``) with one row; any GET answers ``ok`` once
the application is up, which is the readiness probe. Once serving it prints a JSON line
with Ray's version and its log folder.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

# No access log, like the other servers; warnings and errors still go to the log files.
QUIET = {"enable_access_log": False, "log_level": "WARNING"}


def build(model_folder: str, max_batch_size: int, batch_wait_seconds: float) -> Any:
    """The application: one replica with up to ``max_batch_size`` requests in flight
    (Ray's default of 5 would keep batches from forming)."""

    @serve.deployment(
        num_replicas=1,
        max_ongoing_requests=max_batch_size,
        logging_config=QUIET,
    )
    class Classifier:
        def __init__(self) -> None:
            self.model = mlflow.sklearn.load_model(model_folder)
            self.columns = list(self.model.feature_names_in_)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_seconds)
        async def predict(self, rows: list[np.ndarray]) -> list[int]:
            # A frame with the training columns, as MLflow's own predict would pass it
            # (and scikit-learn expects: named).
            frame = pd.DataFrame(np.vstack(rows), columns=self.columns)
            return [int(v) for v in self.model.predict(frame)]

        async def __call__(self, request: Request) -> Response:
            if request.method == "GET":
                return PlainTextResponse("ok")
            split = (await request.json())["dataframe_split"]
            order = [split["columns"].index(c) for c in self.columns]
            (row,) = split["data"]  # one row per request: @serve.batch batches requests
            features = np.asarray(row, dtype=np.float64)[order]
            return JSONResponse({"predictions": [await self.predict(features)]})

    return Classifier.bind()  # type: ignore[attr-defined]


def main() -> None:
    folder, port, max_batch_size, wait = sys.argv[1:5]
    logs = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=128 * 1024 * 1024,
        _node_ip_address="127.0.0.1",
        _temp_dir=logs,
        configure_logging=False,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": int(port)}, logging_config=QUIET)
        serve.run(
            build(str(Path(folder)), int(max_batch_size), float(wait)),
            name="cancer",
            route_prefix="/",
        )
        # After ray.init, whose own handlers would otherwise take SIGTERM.
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        print(json.dumps({"ray": ray.__version__, "logs": logs}), flush=True)
        while not stop.wait(1):
            pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
