"""mlflow: MLflow's own UI on the tracking store modelyard uses."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import typer

from modelyard.cli.admin import prepare_home
from modelyard.cli.output import console
from modelyard.config import Settings
from modelyard.training import tracking
from modelyard.training.tracking import TrackingConfig

mlflow_app = typer.Typer(help="MLflow, as modelyard uses it.", no_args_is_help=True)


def ui_command(config: TrackingConfig, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line for the UI on ``config``'s store."""
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        config.tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if config.artifact_root:
        command += ["--default-artifact-root", config.artifact_root, "--no-serve-artifacts"]
    return command


@mlflow_app.command("ui")
def ui(
    host: Annotated[str, typer.Option(help="Loopback unless you mean to share it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
) -> None:
    """Open MLflow's UI on the embedded tracking store (or MLFLOW_TRACKING_URI's, when it
    is a database); runs until interrupted."""
    tracking.require_mlflow()
    settings = Settings()
    prepare_home(settings)
    config = TrackingConfig.from_settings(settings)
    if config.tracking_uri.startswith(("http://", "https://")):
        console.print(f"MLflow already has a UI: {config.tracking_uri}")
        return
    console.print(f"MLflow UI on http://{host}:{port} ({config.tracking_uri}); Ctrl-C stops it")
    with subprocess.Popen(ui_command(config, host, port)) as server:  # noqa: S603
        try:
            code = server.wait()
        except KeyboardInterrupt:
            server.terminate()
            code = server.wait()
    if code not in (0, -15):
        raise typer.Exit(code)
