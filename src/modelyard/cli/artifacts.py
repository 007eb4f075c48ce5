"""artifacts: list, show, trace and clean what runs stored."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from modelyard.artifacts import collect_garbage, from_settings
from modelyard.cli.output import OutputFormat, OutputOption, console, emit_message
from modelyard.cli.runs import store_sessions
from modelyard.config import Settings
from modelyard.errors import NotFoundError
from modelyard.pipelines.lineage import lineage, referenced_digests
from modelyard.store.models import ArtifactLink

artifacts_app = typer.Typer(help="What runs stored, by content digest.", no_args_is_help=True)


@artifacts_app.command("list")
def artifacts_list(
    run: Annotated[str | None, typer.Option(help="Only what this run produced.")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Artifacts in the store (or produced by one run)."""
    settings = Settings()
    store = from_settings(settings)
    if run is None:
        refs = list(store.list())
    else:
        with store_sessions(settings) as sessions, sessions() as session:
            digests = session.scalars(
                select(ArtifactLink.digest).where(
                    ArtifactLink.run_id == run, ArtifactLink.direction == "produced"
                )
            ).all()
        refs = list(store.refs(sorted(set(digests))))
    if output is OutputFormat.json:
        typer.echo(json.dumps([ref.model_dump(mode="json") for ref in refs], indent=2))
        return
    table = Table(title="artifacts")
    for column in ("digest", "kind", "size", "details"):
        table.add_column(column)
    for ref in refs:
        details = ", ".join(f"{k}={v}" for k, v in ref.metadata.items() if k != "schema")
        table.add_row(ref.digest[:19], ref.kind, f"{ref.size:,}", details)
    console.print(table)


@artifacts_app.command("get")
def artifacts_get(
    digest: str,
    out: Annotated[Path | None, typer.Option("--out", help="Write the content here.")] = None,
    rows: Annotated[int, typer.Option(min=1, help="Rows to show of a table.")] = 10,
) -> None:
    """Show an artifact (a table's first rows, a JSON value) or write it to a file."""
    store = from_settings(Settings())
    ref = store.info(digest)
    if out is not None:
        out.write_bytes(store.get_bytes(ref))
        console.print(f"wrote {ref.size:,} bytes to {out}")
    elif ref.kind == "json":
        typer.echo(json.dumps(store.get_json(ref), indent=2))
    elif ref.kind == "table":
        head = store.read_table(ref).slice(0, rows)
        table = Table(title=f"{ref.digest[:19]} · {ref.metadata.get('num_rows', '?')} rows")
        for name in head.column_names:
            table.add_column(name)
        for record in head.to_pylist():
            table.add_row(*(str(value) for value in record.values()))
        console.print(table)
    else:
        sys.stdout.buffer.write(store.get_bytes(ref))


@artifacts_app.command("lineage")
def artifacts_lineage(digest: str, output: OutputOption = OutputFormat.table) -> None:
    """Which task runs produced and consumed an artifact."""
    with store_sessions(Settings()) as sessions, sessions() as session:
        edges = lineage(session, digest)
    if not edges:
        raise NotFoundError(f"no run produced or read {digest!r}", code="artifact/not_found")
    if output is OutputFormat.json:
        typer.echo(
            json.dumps(
                [
                    {
                        "direction": e.direction,
                        "run_id": e.run_id,
                        "pipeline": e.pipeline,
                        "task": e.task,
                        "at": e.at.isoformat(),
                    }
                    for e in edges
                ],
                indent=2,
            )
        )
        return
    table = Table(title=f"lineage of {digest[:19]}")
    for column in ("direction", "pipeline", "run", "task", "at"):
        table.add_column(column)
    for e in edges:
        table.add_row(e.direction, e.pipeline, e.run_id, e.task, e.at.strftime("%Y-%m-%d %H:%M:%S"))
    console.print(table)


@artifacts_app.command("gc")
def artifacts_gc(
    delete: Annotated[
        bool, typer.Option("--delete/--dry-run", help="Delete (default: only report).")
    ] = False,
    min_age_hours: Annotated[
        float, typer.Option(min=0, help="Spare anything younger than this.")
    ] = 1.0,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Remove artifacts no run, cache entry or log references."""
    settings = Settings()
    with store_sessions(settings) as sessions, sessions() as session:
        keep = referenced_digests(session)
    report = collect_garbage(
        from_settings(settings),
        keep,
        dry_run=not delete,
        min_age=timedelta(hours=min_age_hours),
    )
    verb = "deleted" if delete else "would delete"
    emit_message(
        f"{verb} {report.deleted_count} artifact(s), {report.bytes_freed:,} bytes; kept "
        f"{report.kept}, spared {report.too_young} younger than {min_age_hours:g} h",
        output,
        deleted=list(report.deleted),
        kept=report.kept,
        dry_run=report.dry_run,
    )
