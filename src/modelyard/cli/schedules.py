"""schedules (on the server, whose scheduler creates their runs) and backfill (here)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelyard.cli.common import ProjectOption, client
from modelyard.cli.output import OutputFormat, OutputOption, console, emit, emit_message
from modelyard.cli.runs import DEFAULT_PROJECT, check_options, engine_here, parse_params
from modelyard.errors import InvalidInputError
from modelyard.pipelines import backfill as backfills
from modelyard.pipelines.loader import load_pipeline
from modelyard.pipelines.scheduling import Intervals
from modelyard.specs.runs import RunState
from modelyard.specs.schedules import ScheduleApply, ScheduleSpec

schedules_app = typer.Typer(
    help="Pipeline schedules (the scheduler in 'modelyard up' creates their runs).",
    no_args_is_help=True,
)

COLUMNS = (
    "pipeline",
    "cron",
    "timezone",
    "paused",
    "catchup",
    "max_active_runs",
    "last_logical_date",
    "next_run_at",
)
ParamOption = Annotated[
    list[str] | None, typer.Option("--param", "-P", help="key=value (JSON values), repeatable.")
]
CronOption = Annotated[
    str | None, typer.Option(help="Cron expression or preset; default: the pipeline's own.")
]


def _schedule(
    declared: ScheduleSpec | None,
    target: str,
    overrides: dict[str, object],
) -> ScheduleSpec:
    """The pipeline's declared schedule with the options given on the command line."""
    given = {key: value for key, value in overrides.items() if value is not None}
    if declared is None and "cron" not in given:
        raise InvalidInputError(
            f"{target} declares no schedule; give --cron (e.g. --cron @daily) or declare "
            "@pipeline(schedule=...)",
            code="schedule/missing_cron",
        )
    base = declared.model_dump(exclude_unset=True) if declared else {}
    try:
        return ScheduleSpec.model_validate({**base, **given})
    except ValidationError as exc:
        raise InvalidInputError(
            "invalid schedule: " + "; ".join(e["msg"] for e in exc.errors(include_input=False)),
            code="schedule/invalid",
        ) from exc


@schedules_app.command("apply")
def apply(
    target: Annotated[str, typer.Argument(help="FILE.py:PIPELINE or MODULE:PIPELINE")],
    project: ProjectOption = DEFAULT_PROJECT,
    cron: CronOption = None,
    timezone: Annotated[str | None, typer.Option(help="e.g. Europe/Paris")] = None,
    start: Annotated[datetime | None, typer.Option(help="First interval starts here.")] = None,
    end: Annotated[datetime | None, typer.Option(help="No interval starts after this.")] = None,
    catchup: Annotated[bool | None, typer.Option(help="Run every missed interval.")] = None,
    max_active_runs: Annotated[int | None, typer.Option(min=1)] = None,
    param: ParamOption = None,
    unpause: Annotated[bool, typer.Option(help="Unpause it now (new ones start paused).")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Register (or update) a pipeline's schedule on the server, from its code."""
    definition = load_pipeline(target)
    spec = definition.spec(target)
    schedule = _schedule(
        definition.schedule,
        target,
        {
            "cron": cron,
            "timezone": timezone,
            "start_date": start,
            "end_date": end,
            "catchup": catchup,
            "max_active_runs": max_active_runs,
            "params": definition.validate_params(parse_params(param)),
        },
    )
    with client() as api:
        applied = api.apply_schedule(project, ScheduleApply(spec=spec, schedule=schedule))
        if unpause:
            applied = api.set_schedule_paused(project, spec.name, False)
    emit(applied, output, columns=COLUMNS, title=f"schedule {spec.name}")


@schedules_app.command("list")
def list_schedules(
    project: ProjectOption = DEFAULT_PROJECT, output: OutputOption = OutputFormat.table
) -> None:
    """A project's schedules, with when each next creates a run."""
    with client() as api:
        rows = api.list_schedules(project)
    emit(rows, output, columns=COLUMNS, title=f"schedules of {project}")


@schedules_app.command("pause")
def pause(
    pipeline: str,
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Stop creating runs (running ones go on)."""
    _set_paused(pipeline, project, output, paused=True)


@schedules_app.command("unpause")
def unpause(
    pipeline: str,
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Start creating runs again (missed intervals only with catchup)."""
    _set_paused(pipeline, project, output, paused=False)


def _set_paused(pipeline: str, project: str, output: OutputFormat, *, paused: bool) -> None:
    with client() as api:
        emit(api.set_schedule_paused(project, pipeline, paused), output, columns=COLUMNS)


@schedules_app.command("trigger")
def trigger(
    pipeline: str,
    project: ProjectOption = DEFAULT_PROJECT,
    logical_date: Annotated[datetime | None, typer.Option(help="Default: now.")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Queue a run of the scheduled pipeline now."""
    with client() as api:
        run = api.trigger_schedule(project, pipeline, logical_date=logical_date)
    emit_message(f"run {run.id} queued", output, run_id=run.id, state=run.state)


@schedules_app.command("delete")
def delete(pipeline: str, project: ProjectOption = DEFAULT_PROJECT) -> None:
    """Remove a schedule (its runs stay)."""
    with client() as api:
        api.delete_schedule(project, pipeline)
    console.print(f"schedule {pipeline} deleted")


def backfill(
    target: Annotated[str, typer.Argument(help="FILE.py:PIPELINE or MODULE:PIPELINE")],
    start: Annotated[datetime, typer.Option(help="First logical date (inclusive).")],
    end: Annotated[datetime, typer.Option(help="Last logical date (inclusive).")],
    project: ProjectOption = DEFAULT_PROJECT,
    cron: CronOption = None,
    timezone: Annotated[str | None, typer.Option(help="Zone of the cron and naive dates.")] = None,
    max_active_runs: Annotated[int | None, typer.Option(min=1)] = None,
    param: ParamOption = None,
    rerun_failed: Annotated[
        bool, typer.Option(help="Run intervals whose run failed or was cancelled again.")
    ] = False,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Run a pipeline once per interval of its schedule between two dates, here, with
    each run's logical date; intervals that already ran are skipped."""
    check_options(project, "local")
    definition = load_pipeline(target)
    spec = definition.spec(target)
    params = definition.validate_params(parse_params(param))
    schedule = _schedule(
        definition.schedule,
        target,
        {"cron": cron, "timezone": timezone, "max_active_runs": max_active_runs},
    )
    zone = ZoneInfo(schedule.timezone)
    first, last = (d if d.tzinfo else d.replace(tzinfo=zone) for d in (start, end))
    if last < first:
        raise InvalidInputError("--end is before --start", code="backfill/invalid_range")
    dates = list(Intervals(schedule.cron, schedule.timezone).between(first, last))
    if not dates:
        raise InvalidInputError(
            f"no interval of {schedule.cron!r} starts between {first} and {last}",
            code="backfill/empty",
        )
    started = time.monotonic()
    with engine_here(project, spec, workers) as (engine, project_id):
        planned = backfills.plan(engine, project_id, spec, params, dates, rerun_failed=rerun_failed)
        with Progress(
            TextColumn(f"backfill {spec.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
            disable=output is not OutputFormat.table,
        ) as progress:
            bar = progress.add_task(
                "runs", total=sum(i.action != "skipped" for i in planned), failed=0
            )
            failures = [0]

            def done(_interval: backfills.Interval, state: RunState) -> None:
                failures[0] += state is not RunState.SUCCEEDED
                progress.update(bar, advance=1, failed=failures[0])

            states = backfills.drive(engine, planned, schedule.max_active_runs, done)
    _report(planned, states, output, time.monotonic() - started)
    if any(state is not RunState.SUCCEEDED for state in states.values()):
        raise typer.Exit(1)


def _report(
    planned: list[backfills.Interval],
    states: dict[str, RunState],
    output: OutputFormat,
    seconds: float,
) -> None:
    rows = [
        {
            "logical_date": i.logical_date.isoformat(),
            "run_id": i.run_id,
            "action": i.action,
            "state": states[i.run_id].value if i.run_id in states else "-",
        }
        for i in planned
    ]
    if output is OutputFormat.json:
        emit_message("backfilled", output, runs=rows, seconds=round(seconds, 2))
        return
    table = Table(title=f"backfill: {len(rows)} interval(s) in {seconds:.1f} s")
    for column in ("logical date", "run", "action", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["logical_date"], row["run_id"], row["action"], row["state"])
    console.print(table)
