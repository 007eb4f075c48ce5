"""A project's secrets. Values go in; they never come back out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli.common import CursorOption, LimitOption, ProjectOption, VersionOption, client
from modelyard.cli.output import OutputFormat, OutputOption, console, emit, emit_message
from modelyard.config import Settings
from modelyard.services.key_rotation import rotate_secret_key
from modelyard.specs.projects import SecretPut
from modelyard.store.db import opened_engine, session_factory

secrets_app = typer.Typer(help="A project's encrypted secrets.", no_args_is_help=True)

SECRET_COLUMNS = ("name", "description", "version", "created_by", "updated_at")


def _read_value(from_file: Path | None, from_stdin: bool) -> str:
    if from_file is not None:
        return from_file.read_text()
    if from_stdin:
        return sys.stdin.read()
    value: str = typer.prompt("value", hide_input=True, confirmation_prompt=True)
    return value


@secrets_app.command("set")
def secrets_set(
    name: str,
    project: ProjectOption,
    from_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the value from stdin.")] = False,
    description: Annotated[str, typer.Option()] = "",
    if_version: VersionOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create or replace a secret. The value is read from a file, stdin or a hidden prompt,
    never from the command line, where it would land in shell history."""
    spec = SecretPut(value=_read_value(from_file, stdin), description=description)
    with client() as api:
        emit(
            api.put_secret(project, name, spec, version=if_version), output, columns=SECRET_COLUMNS
        )


@secrets_app.command("list")
def secrets_list(
    project: ProjectOption,
    cursor: CursorOption = None,
    limit: LimitOption = 50,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List a project's secrets (names and metadata only)."""
    with client() as api:
        page = api.list_secrets(project, cursor=cursor, limit=limit)
    emit(page.items, output, columns=SECRET_COLUMNS, next_cursor=page.next_cursor)


@secrets_app.command("delete")
def secrets_delete(
    name: str,
    project: ProjectOption,
    if_version: VersionOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Delete a secret."""
    with client() as api:
        api.delete_secret(project, name, version=if_version)
    emit_message(f"deleted secret {name} from {project}", output, project=project, secret=name)


@secrets_app.command("rotate-key")
def secrets_rotate_key(output: OutputOption = OutputFormat.table) -> None:
    """Re-encrypt every stored secret under a new key (run where the store and key live)."""
    settings = Settings()
    with opened_engine(settings.resolved_database_url) as engine, console.status("re-encrypting"):
        result = rotate_secret_key(settings, session_factory(engine))
    if result.key_file_written:
        emit_message(
            f"re-encrypted {result.rotated} secrets; new key written to "
            f"{settings.resolved_secret_key_file}",
            output,
            rotated=result.rotated,
        )
        return
    emit_message(
        f"re-encrypted {result.rotated} secrets. Set MODELYARD_SECRET_KEY to the new key "
        "before the next start (until then, set it to 'NEW,OLD'):",
        output,
        rotated=result.rotated,
        new_key=result.new_key,
    )
    if output is OutputFormat.table:
        console.print(result.new_key, highlight=False)
