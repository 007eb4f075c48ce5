"""The servers of the serving benchmark other than modelyard: how each one is installed
and started on the same saved model.

MLflow runs from the project's environment, as before. MLServer and Ray Serve run from
environments of their own, created once with ``uv`` under ``benchmarks/.envs/<peer>``
(git-ignored by the ``.gitignore`` written there) and reused while their pins stay the
same. Each peer's own packages are pinned here; the model's libraries (MLflow,
scikit-learn, skops, numpy, pandas, scipy) are installed at the versions the project's
environment saved the model with. (Not the model's ``requirements.txt``: MLflow infers
it from whatever the saving process had imported, torch and pytest included.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENVS = HERE.parent / ".envs"

# Adaptive batching on every side: at most 64 rows per predict (modelyard's default).
# MLServer and Ray Serve wait up to 1 ms for company (MLServer turns batching off at 0);
# modelyard never waits when idle (--max-latency-ms 0, its default).
MAX_BATCH_SIZE = 64
BATCH_WAIT_SECONDS = 0.001

MLSERVER_PINS = (
    "mlserver==1.7.1",
    "mlserver-mlflow==1.7.1",
    # uvloop 0.23.0 (what resolves unpinned) raises from get_event_loop() without a
    # running loop, which kills MLServer 1.7.1's inference workers as they start.
    "uvloop==0.21.0",
)
RAY_PINS = ("ray[serve]==2.60.0",)
MODEL_LIBRARIES = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")


class PeerFailed(Exception):
    """A peer could not be installed, started or checked; the message says why."""


@dataclass
class Launch:
    """How to start one server and talk to it.

    Attributes:
        label: The server's row in the table, versions included.
        command: The server's command line.
        ready_path: A GET that answers 200 once the model is loaded.
        protocol: ``invocations`` (MLflow's ``dataframe_split``) or ``v2``.
        env: Variables added to the benchmark's own environment.
        cwd: The working folder (MLServer reads its settings from there).
        startup_seconds: How long it may take to become ready.
        versions: The exact versions of what it runs, printed with the results.
    """

    label: str
    command: list[str]
    ready_path: str
    protocol: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    startup_seconds: float = 120
    versions: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def model_pins() -> list[str]:
    """The model's libraries at the versions that saved it (this environment's)."""
    return [f"{name}=={metadata.version(name)}" for name in MODEL_LIBRARIES]


def find_uv() -> str:
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists():
        raise PeerFailed("uv not found (on PATH or beside the project's python)")
    return uv


def ensure_env(name: str, pins: list[str], say: Callable[[str], None]) -> Path:
    """The python of the peer's own environment, created (or re-created when the pins
    changed) with ``uv venv`` and ``uv pip install``."""
    folder = ENVS / name
    python = folder / "bin" / "python"
    stamp = folder / "benchmark-pins.txt"
    wanted = "\n".join(sorted(pins)) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    uv = find_uv()
    ENVS.mkdir(parents=True, exist_ok=True)
    (ENVS / ".gitignore").write_text("# environments of the benchmarks' peers\n*\n")
    if folder.exists():
        shutil.rmtree(folder)
    say(f"creating {name}'s environment in {folder} (once): {' '.join(pins)}")
    steps = (
        [uv, "venv", "--quiet", "--python", sys.executable, str(folder)],
        # Bytecode at install: this machine sets PYTHONDONTWRITEBYTECODE, and Ray's
        # workers would otherwise compile their imports every start.
        [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python), *pins],
    )
    began = time.monotonic()
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise PeerFailed(f"`uv {step[1]}` failed: {tail}")
    stamp.write_text(wanted)
    say(f"{name}'s environment created in {time.monotonic() - began:.0f} s")
    return python


def installed_versions(python: Path, names: list[str]) -> dict[str, str]:
    probe = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(python), "-c", probe, *names], capture_output=True, text=True, check=True
    ).stdout
    versions: dict[str, str] = json.loads(out)
    return versions


def _distribution(requirement: str) -> str:
    return requirement.split("==")[0].split("[")[0]


def mlflow_launch(model: Path, port: int) -> Launch:
    """``mlflow models serve`` from the project's environment (one uvicorn worker)."""
    bin_dir = Path(sys.executable).parent
    python = bin_dir / "python"
    versions = installed_versions(python, ["mlflow", "scikit-learn"])
    return Launch(
        label=f"mlflow models serve {versions['mlflow']}",
        command=[
            str(bin_dir / "mlflow"),
            *("models", "serve", "-m", str(model), "-p", str(port)),
            *("--env-manager", "local"),
        ],
        ready_path="/ping",
        protocol="invocations",
        # mlflow starts `uvicorn` by name: the one of this environment.
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        versions=versions,
    )


def mlserver_launch(model: Path, port: int, folder: Path, say: Callable[[str], None]) -> Launch:
    """MLServer with its MLflow runtime: one inference worker process
    (``parallel_workers: 1``, MLServer's default) holding the one model replica, the
    HTTP front end in the main process, adaptive batching on, V2 protocol."""
    pins = [*MLSERVER_PINS, *model_pins()]
    python = ensure_env("mlserver", pins, say)
    versions = installed_versions(python, [_distribution(p) for p in pins])
    repository = folder / "mlserver"
    repository.mkdir(exist_ok=True)
    settings = {
        "debug": False,  # no access log, like the others
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 1,
    }
    model_settings = {
        "name": "cancer",
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "max_batch_size": MAX_BATCH_SIZE,
        "max_batch_time": BATCH_WAIT_SECONDS,
        "parameters": {"uri": str(model)},
    }
    (repository / "settings.json").write_text(json.dumps(settings))
    (repository / "model-settings.json").write_text(json.dumps(model_settings))
    return Launch(
        label=f"MLServer {versions['mlserver']}",
        command=[str(python.parent / "mlserver"), "start", str(repository)],
        ready_path="/v2/models/cancer/ready",
        protocol="v2",
        cwd=repository,
        versions=versions,
    )


def ray_launch(model: Path, port: int, say: Callable[[str], None]) -> Launch:
    """Ray Serve: a local Ray in a subprocess (``ray_app.py``), one replica with
    ``@serve.batch``, HTTP ingress on loopback."""
    pins = [*RAY_PINS, *model_pins()]
    python = ensure_env("ray", pins, say)
    versions = installed_versions(python, [_distribution(p) for p in pins])
    return Launch(
        label=f"Ray Serve {versions['ray']}",
        command=[
            str(python),
            str(HERE / "ray_app.py"),
            *(str(model), str(port), str(MAX_BATCH_SIZE), str(BATCH_WAIT_SECONDS)),
        ],
        ready_path="/ping",
        protocol="invocations",
        env={
            "RAY_USAGE_STATS_ENABLED": "0",
            # Local-only Ray: the node address stays the loopback one, as on macOS
            # (otherwise Ray advertises and binds the machine's own address).
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        },
        startup_seconds=240,
        versions=versions,
    )
