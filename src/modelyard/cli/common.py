"""Pieces every remote command shares: the client and paging options."""

from __future__ import annotations

from typing import Annotated

import typer

from modelyard.client import ModelyardClient, load_credentials

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
