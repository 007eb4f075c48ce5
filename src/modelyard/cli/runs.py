"""run and runs: pipelines on this machine's embedded store, with a live view."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelyard.artifacts import from_settings
from modelyard.cli.admin import prepare_home
from modelyard.cli.common import ProjectOption, client
from modelyard.cli.output import (
    OutputFormat,
    OutputOption,
    console,
    emit_message,
    err_console,
)
from modelyard.cli.run_view import run_view
from modelyard.cli.run_view import watch as watch_run
from modelyard.client import ModelyardClient
from modelyard.config import Settings
from modelyard.errors import NotFoundError, ServiceUnavailableError
from modelyard.pipelines.engine import RunEngine
from modelyard.pipelines.loader import load_pipeline
from modelyard.pipelines.local import local_engine
from modelyard.pipelines.logs import attempts_of, read_log
from modelyard.pipelines.runs import check_secrets, request_cancel
from modelyard.runtimes import check_runtime
from modelyard.specs.pipelines import PipelineSpec
from modelyard.specs.runs import RunCreate, RunDetail, RunOut, RunState, TaskRunOut
from modelyard.store import migrate
from modelyard.store.db import opened_engine, session_factory, transaction
from modelyard.store.models import PipelineRun, Project, TaskRun

runs_app = typer.Typer(help="Pipeline runs on this machine.", no_args_is_help=True)

DEFAULT_PROJECT = "default"


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw  # a bare string
    return values


def project_id_for(sessions: sessionmaker[Session], name: str, *, create: bool) -> str:
    with transaction(sessions) as session:
        project = session.scalar(select(Project).where(Project.name == name))
        if project is None:
            if not create:
                raise NotFoundError(f"project {name!r} does not exist", code="project/not_found")
            project = Project(name=name, created_by="local")
            session.add(project)
            session.flush()
        return project.id


def _local_view(sessions: sessionmaker[Session], run_id: str) -> Group:
    run, tasks = _local_state(sessions, run_id)
    return run_view(run, tasks)


def _local_state(sessions: sessionmaker[Session], run_id: str) -> tuple[PipelineRun, list[TaskRun]]:
    with sessions() as session:
        run = session.get(PipelineRun, run_id)
        if run is None:
            raise NotFoundError(f"run {run_id!r} does not exist", code="run/not_found")
        tasks = list(
            session.scalars(select(TaskRun).where(TaskRun.run_id == run_id).order_by(TaskRun.id))
        )
    return run, tasks


def remote_client() -> ModelyardClient | None:
    """The server's client when ``MODELYARD_URL`` names one; None: use this machine."""
    return client() if os.environ.get("MODELYARD_URL") else None


def run(
    target: Annotated[str, typer.Argument(help="FILE.py:PIPELINE or MODULE:PIPELINE")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-P", help="key=value (JSON values), repeatable.")
    ] = None,
    project: ProjectOption = DEFAULT_PROJECT,
    logical_date: Annotated[datetime | None, typer.Option(help="The run's logical date.")] = None,
    max_parallelism: Annotated[int | None, typer.Option(min=1)] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
    runtime: Annotated[str, typer.Option(help="Where tasks run.")] = "local",
    watch: Annotated[
        bool, typer.Option(help="Show live task states and wait for the run to finish.")
    ] = True,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Run a pipeline: here, on the embedded store, or on the server MODELYARD_URL names
    (queued there, driven by its run executor)."""
    check_options(project, runtime)
    definition = load_pipeline(target)
    spec = definition.spec(target)
    params = definition.validate_params(parse_params(param))
    when = logical_date.astimezone() if logical_date else None
    started = time.monotonic()
    api = remote_client()
    if api is not None:
        with api:
            created = api.create_run(
                project,
                RunCreate(
                    spec=spec,
                    params=params,
                    logical_date=when,
                    max_parallelism=max_parallelism,
                    runtime=runtime,
                ),
            )
            run_id = created.id
            if not watch:
                emit_message(f"run {run_id} queued", output, run_id=run_id, state=created.state)
                return

            def fetch() -> tuple[RunDetail, list[TaskRunOut]]:
                detail = api.get_run(project, run_id)
                return detail, detail.tasks

            state = _follow(fetch, output)
    else:
        state, run_id = _run_here(
            spec, params, project, when, max_parallelism, workers, runtime, watch, output
        )
    emit_message(
        f"run {run_id} {state} in {time.monotonic() - started:.2f} s",
        output,
        run_id=run_id,
        state=state.value,
    )
    if state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


def check_options(project: str, runtime: str) -> None:
    if "=" in project:
        raise typer.BadParameter(
            f"{project!r} is not a project name; parameters are given with -P key=value",
            param_hint="--project",
        )
    check_runtime(runtime)


QUEUED_HINT_SECONDS = 10.0


def _follow(
    fetch: Callable[[], tuple[RunDetail, list[TaskRunOut]]], output: OutputFormat
) -> RunState:
    fetch = _hinting(fetch)
    if output is OutputFormat.table:
        state = watch_run(fetch)
        console.print()
        return state
    while True:
        detail, _ = fetch()
        if RunState(detail.state).finished:
            return RunState(detail.state)
        time.sleep(0.25)


def _hinting(
    fetch: Callable[[], tuple[RunDetail, list[TaskRunOut]]],
) -> Callable[[], tuple[RunDetail, list[TaskRunOut]]]:
    """``fetch``, saying once why a run may stay queued: a server started with
    ``modelyard server`` has no run executor."""
    since = time.monotonic()
    said = False

    def fetch_and_hint() -> tuple[RunDetail, list[TaskRunOut]]:
        nonlocal said
        detail, tasks = fetch()
        waited = time.monotonic() - since
        if detail.state == RunState.QUEUED and not said and waited > QUEUED_HINT_SECONDS:
            said = True
            err_console.print(
                f"run {detail.id} is still queued after {waited:.0f} s: runs on a server are "
                "driven by the run executor of 'modelyard up' ('modelyard server' has none)"
            )
        return detail, tasks

    return fetch_and_hint


def _run_here(
    spec: PipelineSpec,
    params: dict[str, Any],
    project: str,
    logical_date: datetime | None,
    max_parallelism: int | None,
    workers: int | None,
    runtime: str,
    watch: bool,
    output: OutputFormat,
) -> tuple[RunState, str]:
    with engine_here(project, spec, workers) as (engine, project_id):
        sessions = engine.sessions
        run_id = engine.create_run(
            project_id,
            spec,
            params,
            logical_date=logical_date,
            created_by="local",
            max_parallelism=max_parallelism,
            runtime=runtime,
        )
        if not (watch and output is OutputFormat.table):
            return engine.execute(run_id), run_id
        with Live(_local_view(sessions, run_id), console=console, refresh_per_second=8) as live:
            last = [0.0]

            def refresh(_run_id: str) -> None:
                if time.monotonic() - last[0] > 0.12:
                    last[0] = time.monotonic()
                    live.update(_local_view(sessions, run_id))

            state = engine.execute(run_id, on_change=refresh)
            live.update(_local_view(sessions, run_id))
        console.print()
        return state, run_id


@runs_app.command("list")
def runs_list(
    project: ProjectOption = DEFAULT_PROJECT,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    output: OutputOption = OutputFormat.table,
) -> None:
    """The newest runs of a project."""
    api = remote_client()
    if api is not None:
        with api:
            rows: Sequence[RunOut | PipelineRun] = api.list_runs(project, limit=limit).items
    else:
        with store_sessions(Settings()) as sessions:
            project_id = project_id_for(sessions, project, create=project == DEFAULT_PROJECT)
            with sessions() as session:
                rows = list(
                    session.scalars(
                        select(PipelineRun)
                        .where(PipelineRun.project_id == project_id)
                        .order_by(PipelineRun.id.desc())
                        .limit(limit)
                    )
                )
    if output is OutputFormat.json:
        typer.echo(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "pipeline": r.pipeline,
                        "state": r.state,
                        "trigger": r.trigger,
                        "logical_date": r.logical_date.isoformat() if r.logical_date else None,
                        "created_at": r.created_at.isoformat(),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    table = Table(title="runs")
    for column in ("id", "pipeline", "state", "trigger", "logical date", "created", "seconds"):
        table.add_column(column)
    for r in rows:
        seconds = (
            f"{(r.finished_at - r.started_at).total_seconds():.2f}"
            if r.started_at and r.finished_at
            else "-"
        )
        table.add_row(
            r.id,
            r.pipeline,
            r.state,
            r.trigger,
            r.logical_date.strftime("%Y-%m-%d %H:%M") if r.logical_date else "-",
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            seconds,
        )
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: str, project: ProjectOption = DEFAULT_PROJECT) -> None:
    """A run's tasks and their states."""
    api = remote_client()
    if api is not None:
        with api:
            detail = api.get_run(project, run_id)
        console.print(run_view(detail, detail.tasks))
        return
    with store_sessions(Settings()) as sessions:
        console.print(_local_view(sessions, run_id))


@runs_app.command("logs")
def runs_logs(
    run_id: str,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    project: ProjectOption = DEFAULT_PROJECT,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run finishes.")
    ] = False,
) -> None:
    """Print what every attempt (or one task's) printed and logged, live with --follow."""
    offsets: dict[str, int] = {}
    api = remote_client()
    if api is not None:
        with api:
            while True:
                finished = RunState(api.get_run(project, run_id).state).finished
                for attempt in api.list_attempts(project, run_id, task=task):
                    offset = offsets.get(attempt.id, 0)
                    data = api.attempt_log(project, run_id, attempt.id, offset=offset)
                    _print_new_output(attempt.id, attempt.task, attempt.number, data, offsets)
                if not follow or finished:
                    break
                time.sleep(0.2)
    else:
        settings = Settings()
        store = from_settings(settings)
        with store_sessions(settings) as sessions:
            _require_run(sessions, run_id)
            while True:
                finished = _run_finished(sessions, run_id)
                with sessions() as session:
                    attempts = attempts_of(session, run_id, task)
                for name, row in attempts:
                    data = read_log(store, row, offsets.get(row.id, 0))
                    _print_new_output(row.id, name, row.number, data, offsets)
                if not follow or finished:
                    break
                time.sleep(0.2)
    if not offsets:
        console.print("[dim](no attempts yet)[/dim]")


def _print_new_output(
    attempt_id: str, name: str, number: int, data: bytes, offsets: dict[str, int]
) -> None:
    """Print what an attempt wrote since last time, under a rule naming it once."""
    if attempt_id not in offsets:
        console.rule(f"{name} · attempt {number}")
        offsets[attempt_id] = 0
    if data:
        offsets[attempt_id] += len(data)
        text = data.decode(errors="replace").rstrip("\n")
        console.print(text, highlight=False, markup=False, soft_wrap=True)


def _run_finished(sessions: sessionmaker[Session], run_id: str) -> bool:
    with sessions() as session:
        state = session.scalar(select(PipelineRun.state).where(PipelineRun.id == run_id))
    return state is None or RunState(state).finished


@runs_app.command("retry")
def runs_retry(
    run_id: str,
    project: ProjectOption = DEFAULT_PROJECT,
    workers: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Run the failed tasks of a run again (and what follows them), reusing the rest."""
    api = remote_client()
    if api is not None:
        with api:
            retried = api.retry_run(project, run_id)

            def fetch() -> tuple[RunDetail, list[TaskRunOut]]:
                detail = api.get_run(project, run_id)
                return detail, detail.tasks

            reset, state = retried.reset_tasks, _follow(fetch, OutputFormat.table)
    else:
        settings = Settings()
        with store_sessions(settings) as sessions:
            _require_run(sessions, run_id)
            with local_engine(settings, sessions, workers) as engine:
                reset = engine.retry(run_id)
                state = engine.execute(run_id)
            console.print(_local_view(sessions, run_id))
    console.print(f"run {run_id}: {reset} task(s) ran again; {state}")
    if state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


@runs_app.command("drive")
def runs_drive(
    run_id: str,
    owner: Annotated[
        str | None,
        typer.Option(
            help="Drive the run as this lease holder: the one the controllers handed it to "
            "(a RayJob's driver)."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Drive a queued or interrupted run to its end here, on the runtime it names (what
    the driver of a run's RayJob runs)."""
    settings = Settings()
    with store_sessions(settings) as sessions:
        _require_run(sessions, run_id)
        with local_engine(settings, sessions, workers) as engine:
            if owner is not None:
                engine.owner = owner
            state = engine.execute(run_id)
    console.print(f"run {run_id}: {state}")
    if state is not RunState.SUCCEEDED:
        raise typer.Exit(1)


@runs_app.command("cancel")
def runs_cancel(run_id: str, project: ProjectOption = DEFAULT_PROJECT) -> None:
    """Stop a run: its running tasks get SIGTERM, then SIGKILL after a grace period."""
    api = remote_client()
    if api is not None:
        with api:
            running = not RunState(api.cancel_run(project, run_id).state).finished
    else:
        with store_sessions(Settings()) as sessions:
            _require_run(sessions, run_id)
            running = request_cancel(sessions, run_id)
    console.print(
        f"cancellation requested for run {run_id}" if running else f"run {run_id} is not running"
    )


@contextmanager
def engine_here(
    project: str, spec: PipelineSpec, workers: int | None
) -> Iterator[tuple[RunEngine, str]]:
    """This machine's store (prepared) and a warm engine, to run ``spec`` in ``project``
    (created if it is the default one); yields the engine and the project's id.

    Raises:
        PipelineDefinitionError: a task needs a secret the project does not have.
    """
    settings = Settings()
    prepare_home(settings)
    with opened_engine(settings.resolved_database_url) as store_engine:
        sessions = session_factory(store_engine)
        project_id = project_id_for(sessions, project, create=project == DEFAULT_PROJECT)
        with sessions() as session:
            check_secrets(session, project_id, project, spec)
        with local_engine(settings, sessions, workers) as engine:
            yield engine, project_id


@contextmanager
def store_sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """The embedded store, refusing clearly when it was never initialised."""
    with opened_engine(settings.resolved_database_url) as store_engine:
        if not migrate.is_current(store_engine):
            raise ServiceUnavailableError(
                f"the metadata store at {settings.resolved_database_url} is not ready: run "
                "'modelyard init' (or 'modelyard db upgrade')",
                code="store/not_ready",
            )
        yield session_factory(store_engine)


def _require_run(sessions: sessionmaker[Session], run_id: str) -> None:
    with sessions() as session:
        if session.get(PipelineRun, run_id) is None:
            raise NotFoundError(f"run {run_id!r} does not exist", code="run/not_found")
