"""train: training jobs, on this machine (submit runs the gang here and waits) or on a
server (MODELYARD_URL)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table
from sqlalchemy import select

from modelyard.cli.admin import prepare_home
from modelyard.cli.common import ProjectOption, invalid_spec
from modelyard.cli.output import OutputFormat, OutputOption, console, emit, emit_message
from modelyard.cli.runs import (
    DEFAULT_PROJECT,
    parse_params,
    project_id_for,
    remote_client,
    store_sessions,
)
from modelyard.client import ModelyardClient
from modelyard.config import Settings
from modelyard.errors import InvalidInputError
from modelyard.pipelines.local import secret_lookup
from modelyard.pipelines.runs import missing_secrets
from modelyard.specs.training import FailurePolicy, TrainingJobDetail, TrainingJobSpec
from modelyard.store.db import opened_engine, session_factory, transaction
from modelyard.store.models import TrainingJob
from modelyard.training import jobs
from modelyard.training.launch import GangAttempt, GangOutcome
from modelyard.training.launchers import launcher_for
from modelyard.training.tracking import TrackingConfig

train_app = typer.Typer(help="Training jobs: gangs of worker processes.", no_args_is_help=True)


@train_app.command("submit")
def submit(
    entrypoint: Annotated[
        str, typer.Argument(help="module:function, file.py:function or a script.py")
    ],
    name: Annotated[str | None, typer.Option(help="The job's name.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="World size.")] = 1,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-P", help="key=value for a function.")
    ] = None,
    arg: Annotated[list[str] | None, typer.Option("--arg", help="An argument of a script.")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.001, help="Seconds.")] = None,
    backoff_limit: Annotated[int, typer.Option(min=0)] = 3,
    retry_on_exit_code: Annotated[list[int] | None, typer.Option()] = None,
    retry_on_exception: Annotated[list[str] | None, typer.Option()] = None,
    secret: Annotated[list[str] | None, typer.Option(help="A project secret to inject.")] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="local (processes), ray (Ray Train; MODELYARD_RAY_ADDRESS) or kubernetes "
            "(a TrainJob or PyTorchJob; MODELYARD_KUBERNETES_VALUES)"
        ),
    ] = "local",
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Run a training job here, or on the server MODELYARD_URL names: the gang starts, is
    restarted per the failure policy, and this waits for the end. With --runtime ray its
    workers are Ray Train workers (a local Ray, or the cluster MODELYARD_RAY_ADDRESS
    names); with --runtime kubernetes, a Kubeflow TrainJob or PyTorchJob."""
    try:
        spec = TrainingJobSpec(
            name=name or _default_name(entrypoint),
            entrypoint=entrypoint,
            params=parse_params(param),
            args=tuple(arg or ()),
            workers=workers,
            timeout=timedelta(seconds=timeout) if timeout else None,
            secrets=tuple(secret or ()),
            runtime=runtime,
            failure_policy=FailurePolicy(
                backoff_limit=backoff_limit,
                retry_on_exit_codes=tuple(retry_on_exit_code or ()),
                retry_on_exceptions=tuple(retry_on_exception or ()),
            ),
        )
    except ValidationError as exc:
        raise invalid_spec("training job", exc, "job/invalid") from exc
    started = time.monotonic()
    api = remote_client()
    if api is not None:
        with api:
            job_id = api.submit_job(project, spec).id
            with console.status(f"job {job_id}: queued on the server"):
                detail = api.get_job(project, job_id)
                while detail.state in (jobs.QUEUED, jobs.RUNNING):
                    time.sleep(0.5)
                    detail = api.get_job(project, job_id)
        _finish(
            job_id,
            detail.state,
            detail.reason,
            len(detail.attempts),
            detail.result,
            started,
            output,
        )
        return
    settings = Settings()
    prepare_home(settings)
    with opened_engine(settings.resolved_database_url) as store_engine:
        sessions = session_factory(store_engine)
        project_id = project_id_for(sessions, project, create=project == DEFAULT_PROJECT)
        with sessions() as session:
            missing = missing_secrets(session, project_id, spec.secrets)
        if missing:
            raise InvalidInputError(
                f"job {spec.name!r} needs secret(s) {missing}, which project {project!r} "
                "does not have; set them with 'modelyard secrets set'",
                code="job/missing_secret",
            )
        with transaction(sessions) as session:
            job_id = jobs.submit(session, project_id, spec, settings.home / "jobs", "local").id
        env = secret_lookup(settings, sessions)(project_id, spec.secrets)

        def show(attempt: GangAttempt) -> None:
            if output is OutputFormat.table:
                verb = "restarting" if attempt.retried else "ended"
                console.print(f"attempt {attempt.number}: {attempt.reason} ({verb})")

        with console.status(f"job {job_id}: {spec.workers} worker(s) running"):
            result = jobs.run_here(
                sessions,
                job_id,
                env=env,
                on_attempt=show,
                tracking_config=TrackingConfig.from_settings(settings),
                launcher=launcher_for(spec.runtime, settings, project),
            )
    _finish(
        job_id,
        result.outcome.value,
        result.reason,
        len(result.attempts),
        result.result,
        started,
        output,
    )


def _finish(
    job_id: str,
    state: str,
    reason: str,
    attempts: int,
    result: object,
    started: float,
    output: OutputFormat,
) -> None:
    emit_message(
        f"job {job_id} {state} in {time.monotonic() - started:.1f} s: {reason}",
        output,
        job_id=job_id,
        state=state,
        reason=reason,
        attempts=attempts,
        result=result,
    )
    if state != GangOutcome.SUCCEEDED:
        raise typer.Exit(1)


def _default_name(entrypoint: str) -> str:
    base = entrypoint.rpartition(":")[2] if ":" in entrypoint else Path(entrypoint).stem
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in base)[:128] or "job"


@train_app.command("list")
def list_jobs(
    project: ProjectOption = DEFAULT_PROJECT,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    output: OutputOption = OutputFormat.table,
) -> None:
    """The newest training jobs of a project."""
    api = remote_client()
    if api is not None:
        with api:
            rows = api.list_jobs(project, limit=limit)
    else:
        with store_sessions(Settings()) as sessions:
            project_id = project_id_for(sessions, project, create=project == DEFAULT_PROJECT)
            query = (
                select(TrainingJob)
                .where(TrainingJob.project_id == project_id)
                .order_by(TrainingJob.id.desc())
                .limit(limit)
            )
            with sessions() as session:
                rows = [jobs.job_out(job) for job in session.scalars(query)]
    emit(rows, output, columns=("id", "name", "state", "workers", "reason"), title="jobs")


@train_app.command("status")
def status(
    job_id: str, project: ProjectOption = DEFAULT_PROJECT, output: OutputOption = OutputFormat.table
) -> None:
    """A job's state and every start of its gang, with the reason it ended."""
    api = remote_client()
    with api or contextlib.nullcontext():
        detail = _detail(job_id, project, api)
    if output is OutputFormat.json:
        typer.echo(detail.model_dump_json(indent=2))
        return
    table = Table(title=f"job {detail.id} · {detail.name} · {detail.state}", title_justify="left")
    for column in ("attempt", "outcome", "reason", "exit codes", "then"):
        table.add_column(column)
    for a in detail.attempts:
        codes = ", ".join(f"{e['rank']}:{e['exit_code']}" for e in a.exits) or "-"
        table.add_row(str(a.number), a.outcome, a.reason, codes, "restart" if a.retried else "")
    console.print(table)


def _detail(job_id: str, project: str, api: ModelyardClient | None) -> TrainingJobDetail:
    if api is not None:
        return api.get_job(project, job_id)
    with store_sessions(Settings()) as sessions, sessions() as session:
        return jobs.job_detail(jobs.find(session, job_id), jobs.attempts_of(session, job_id))


@train_app.command("logs")
def logs(
    job_id: str,
    project: ProjectOption = DEFAULT_PROJECT,
    rank: Annotated[int | None, typer.Option(help="Only this rank.")] = None,
    attempt: Annotated[int | None, typer.Option(help="Only this attempt.")] = None,
) -> None:
    """What each worker printed, attempt by attempt."""
    api = remote_client()
    with api or contextlib.nullcontext():
        detail = _detail(job_id, project, api)
        read = _log_reader(job_id, project, api)
        found = False
        for number in (a.number for a in detail.attempts):
            if attempt is not None and number != attempt:
                continue
            for worker in range(detail.workers):
                if rank is not None and worker != rank:
                    continue
                found = True
                console.rule(f"attempt-{number} · rank-{worker}")
                text = read(number, worker).decode(errors="replace").rstrip("\n")
                console.print(text, highlight=False, markup=False, soft_wrap=True)
    if not found:
        console.print("[dim](no logs)[/dim]")


def _log_reader(
    job_id: str, project: str, api: ModelyardClient | None
) -> Callable[[int, int], bytes]:
    """Reads one worker's log of one attempt: from the server, or from the job's folder."""
    if api is not None:
        return lambda number, worker: api.job_log(project, job_id, attempt=number, rank=worker)
    with store_sessions(Settings()) as sessions, sessions() as session:
        folder = Path(jobs.find(session, job_id).workdir)

    def read(number: int, worker: int) -> bytes:
        path = folder / f"attempt-{number}" / f"rank-{worker}.log"
        return path.read_bytes() if path.is_file() else b""

    return read


@train_app.command("cancel")
def cancel(job_id: str, project: ProjectOption = DEFAULT_PROJECT) -> None:
    """Stop a job (its workers get SIGTERM, then SIGKILL)."""
    api = remote_client()
    if api is not None:
        with api:
            state = api.cancel_job(project, job_id).state
    else:
        settings = Settings()
        with store_sessions(settings) as sessions:
            state = jobs.request_cancel(sessions, job_id, TrackingConfig.from_settings(settings))
    console.print(
        f"cancellation requested for job {job_id}"
        if state == jobs.RUNNING
        else f"job {job_id} has ended ({state})"
    )
