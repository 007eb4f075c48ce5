"""``modelyard task run``: the entrypoint of a task attempt in a container."""

from __future__ import annotations

import typer

from modelyard.runtimes.container import run_from_environment

task_app = typer.Typer(help="What runtimes start in containers.", no_args_is_help=True)


@task_app.command("run")
def run() -> None:
    """Run the job in $MODELYARD_TASK_JOB and write its outcome to the termination message."""
    raise typer.Exit(run_from_environment())
