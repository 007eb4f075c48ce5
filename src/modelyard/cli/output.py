"""Human tables by default, JSON for scripts (``--output json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts")
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def emit(
    data: BaseModel | Sequence[BaseModel],
    fmt: OutputFormat,
    *,
    columns: Sequence[str],
    title: str | None = None,
    next_cursor: str | None = None,
) -> None:
    """Print one resource (as a two-column table) or a list of them."""
    if fmt is OutputFormat.json:
        if isinstance(data, BaseModel):
            payload: Any = data.model_dump(mode="json")
        else:
            payload = {
                "items": [item.model_dump(mode="json") for item in data],
                "next_cursor": next_cursor,
            }
        typer.echo(json.dumps(payload, indent=2))
        return
    if isinstance(data, BaseModel):
        table = Table(title=title, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        values = data.model_dump()
        for column in columns:
            table.add_row(column, _cell(values.get(column)))
    else:
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for item in data:
            values = item.model_dump()
            table.add_row(*(_cell(values.get(c)) for c in columns))
    console.print(table)
    if next_cursor:
        console.print(f"[dim]more: --cursor {next_cursor}[/dim]")


def emit_message(message: str, fmt: OutputFormat, **fields: Any) -> None:
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({"message": message, **fields}, default=str))
    else:
        console.print(message)
