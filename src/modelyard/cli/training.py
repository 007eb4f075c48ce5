"""train: training jobs on this machine (submit runs the gang here and waits)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table
from sqlalchemy import select

from modelyard.cli.admin import prepare_home
from modelyard.cli.common import ProjectOption
from modelyard.cli.output import OutputFormat, OutputOption, console, emit_message
from modelyard.cli.runs import DEFAULT_PROJECT, parse_params, project_id_for, store_sessions
from modelyard.config import Settings
from modelyard.errors import InvalidInputError
from modelyard.pipelines.local import secret_lookup
from modelyard.pipelines.runs import missing_secrets
from modelyard.specs.training import FailurePolicy, TrainingJobSpec
from modelyard.store.db import opened_engine, session_factory, transaction
from modelyard.store.models import TrainingJob
from modelyard.training import jobs
from modelyard.training.launch import GangAttempt, GangOutcome

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
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Run a training job here: the gang starts, is restarted per the failure policy,
    and this waits for the end."""
    try:
        spec = TrainingJobSpec(
            name=name or _default_name(entrypoint),
            entrypoint=entrypoint,
            params=parse_params(param),
            args=tuple(arg or ()),
            workers=workers,
            timeout=timedelta(seconds=timeout) if timeout else None,
            secrets=tuple(secret or ()),
            failure_policy=FailurePolicy(
                backoff_limit=backoff_limit,
                retry_on_exit_codes=tuple(retry_on_exit_code or ()),
                retry_on_exceptions=tuple(retry_on_exception or ()),
            ),
        )
    except ValidationError as exc:
        raise InvalidInputError(
            "invalid training job: "
            + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'job'}: {e['msg']}"
                for e in exc.errors(include_input=False)
            ),
            code="job/invalid",
        ) from exc
    settings = Settings()
    prepare_home(settings)
    started = time.monotonic()
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
            result = jobs.run_here(sessions, job_id, env=env, on_attempt=show)
    emit_message(
        f"job {job_id} {result.outcome} in {time.monotonic() - started:.1f} s: {result.reason}",
        output,
        job_id=job_id,
        state=result.outcome.value,
        reason=result.reason,
        attempts=len(result.attempts),
        result=result.result,
    )
    if result.outcome is not GangOutcome.SUCCEEDED:
        raise typer.Exit(1)


def _default_name(entrypoint: str) -> str:
    base = entrypoint.rpartition(":")[2] if ":" in entrypoint else Path(entrypoint).stem
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in base)[:128] or "job"


@train_app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    output: OutputOption = OutputFormat.table,
) -> None:
    """The newest training jobs on this machine's store."""
    with store_sessions(Settings()) as sessions, sessions() as session:
        rows = list(
            session.scalars(select(TrainingJob).order_by(TrainingJob.id.desc()).limit(limit))
        )
    if output is OutputFormat.json:
        typer.echo(
            json.dumps(
                [{"id": r.id, "name": r.name, "state": r.state, "reason": r.reason} for r in rows],
                indent=2,
            )
        )
        return
    table = Table(title="training jobs")
    for column in ("id", "name", "state", "workers", "reason"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.id, r.name, r.state, str(r.spec.get("workers", 1)), r.reason)
    console.print(table)


@train_app.command("status")
def status(job_id: str, output: OutputOption = OutputFormat.table) -> None:
    """A job's state and every start of its gang, with the reason it ended."""
    with store_sessions(Settings()) as sessions, sessions() as session:
        job = jobs.find(session, job_id)
        attempts = jobs.attempts_of(session, job_id)
    if output is OutputFormat.json:
        typer.echo(
            json.dumps(
                {
                    "id": job.id,
                    "name": job.name,
                    "state": job.state,
                    "reason": job.reason,
                    "result": job.result,
                    "attempts": [
                        {
                            "number": a.number,
                            "outcome": a.outcome,
                            "reason": a.reason,
                            "retried": a.retried,
                            "exits": a.exits,
                        }
                        for a in attempts
                    ],
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"job {job.id} · {job.name} · {job.state}", title_justify="left")
    for column in ("attempt", "outcome", "reason", "exit codes", "then"):
        table.add_column(column)
    for a in attempts:
        codes = ", ".join(f"{e['rank']}:{e['exit_code']}" for e in a.exits) or "-"
        table.add_row(str(a.number), a.outcome, a.reason, codes, "restart" if a.retried else "")
    console.print(table)


@train_app.command("logs")
def logs(
    job_id: str,
    rank: Annotated[int | None, typer.Option(help="Only this rank.")] = None,
    attempt: Annotated[int | None, typer.Option(help="Only this attempt.")] = None,
) -> None:
    """What each worker printed, attempt by attempt."""
    with store_sessions(Settings()) as sessions, sessions() as session:
        job = jobs.find(session, job_id)
    folder = Path(job.workdir)
    found = False
    for attempt_dir in sorted(folder.glob("attempt-*"), key=lambda p: int(p.name.split("-")[1])):
        if attempt is not None and attempt_dir.name != f"attempt-{attempt}":
            continue
        for log in sorted(attempt_dir.glob("rank-*.log")):
            if rank is not None and log.name != f"rank-{rank}.log":
                continue
            found = True
            console.rule(f"{attempt_dir.name} · {log.stem}")
            text = log.read_text(errors="replace").rstrip("\n")
            console.print(text, highlight=False, markup=False, soft_wrap=True)
    if not found:
        console.print("[dim](no logs)[/dim]")


@train_app.command("cancel")
def cancel(job_id: str) -> None:
    """Stop a running job (its workers get SIGTERM, then SIGKILL)."""
    with store_sessions(Settings()) as sessions:
        running = jobs.request_cancel(sessions, job_id)
    console.print(
        f"cancellation requested for job {job_id}" if running else f"job {job_id} has ended"
    )
