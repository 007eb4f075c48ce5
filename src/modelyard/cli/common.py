"""Pieces every remote command shares: the client and paging options."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from modelyard.client import ModelyardClient, load_credentials
from modelyard.errors import InvalidInputError

CursorOption = Annotated[str | None, typer.Option(help="Continue from a previous page.")]
LimitOption = Annotated[int, typer.Option(min=1, max=500, help="Items per page.")]
ProjectOption = Annotated[str, typer.Option("--project", "-p", help="The project.")]
VersionOption = Annotated[
    int | None,
    typer.Option("--if-version", help="Only change it if it is still at this version."),
]


def client() -> ModelyardClient:
    credentials = load_credentials()
    return ModelyardClient(credentials.url, credentials.token)


def invalid_spec(what: str, exc: ValidationError, code: str) -> InvalidInputError:
    """A spec's validation errors as one clear error: ``invalid <what>: field: reason; ...``."""
    return InvalidInputError(
        f"invalid {what}: "
        + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or what}: {e['msg']}"
            for e in exc.errors(include_input=False)
        ),
        code=code,
    )
