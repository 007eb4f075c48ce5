"""login, logout, whoami, users and tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from modelyard.cli.common import CursorOption, LimitOption, VersionOption, client
from modelyard.cli.output import OutputFormat, OutputOption, console, emit, emit_message
from modelyard.client import Credentials, ModelyardClient, load_credentials, save_credentials
from modelyard.specs.identity import TokenCreate, UserCreate, UserUpdate

users_app = typer.Typer(help="Platform users (superusers only).", no_args_is_help=True)
tokens_app = typer.Typer(help="Your API tokens.", no_args_is_help=True)

USER_COLUMNS = ("name", "display_name", "email", "is_superuser", "disabled", "version")
TOKEN_COLUMNS = ("id", "name", "prefix", "created_at", "expires_at", "revoked_at", "last_used_at")


def login(
    url: Annotated[str | None, typer.Option(help="The server's address.")] = None,
    token: Annotated[
        str | None, typer.Option(help="A token; asked for (hidden) when omitted.")
    ] = None,
) -> None:
    """Check a token against the server and store it (mode 0600) for later commands."""
    server_url = url or load_credentials().url
    secret = token or typer.prompt("token", hide_input=True)
    with ModelyardClient(server_url, secret) as api:
        me = api.whoami()
    path = save_credentials(Credentials(url=server_url, token=secret))
    console.print(f"logged in to {server_url} as [bold]{me.name}[/bold] (stored in {path})")


def logout() -> None:
    """Forget the stored token."""
    current = load_credentials()
    save_credentials(Credentials(url=current.url, token=None))
    console.print("logged out")


def whoami(output: OutputOption = OutputFormat.table) -> None:
    """Who the stored token belongs to, and its roles."""
    with client() as api:
        me = api.whoami()
    emit(me, output, columns=("name", "is_superuser", "via", "projects"))


@users_app.command("create")
def users_create(
    name: str,
    display_name: Annotated[str, typer.Option()] = "",
    email: Annotated[str | None, typer.Option()] = None,
    superuser: Annotated[bool, typer.Option()] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create a user."""
    spec = UserCreate(name=name, display_name=display_name, email=email, is_superuser=superuser)
    with client() as api:
        emit(api.create_user(spec), output, columns=USER_COLUMNS)


@users_app.command("list")
def users_list(
    cursor: CursorOption = None, limit: LimitOption = 50, output: OutputOption = OutputFormat.table
) -> None:
    """List users."""
    with client() as api:
        page = api.list_users(cursor=cursor, limit=limit)
    emit(page.items, output, columns=USER_COLUMNS, next_cursor=page.next_cursor)


@users_app.command("show")
def users_show(name: str, output: OutputOption = OutputFormat.table) -> None:
    """Show one user."""
    with client() as api:
        emit(api.get_user(name), output, columns=USER_COLUMNS)


@users_app.command("update")
def users_update(
    name: str,
    display_name: Annotated[str | None, typer.Option()] = None,
    email: Annotated[str | None, typer.Option()] = None,
    superuser: Annotated[bool | None, typer.Option("--superuser/--no-superuser")] = None,
    disabled: Annotated[bool | None, typer.Option("--disabled/--enabled")] = None,
    if_version: VersionOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Change a user."""
    changes = {
        "display_name": display_name,
        "email": email,
        "is_superuser": superuser,
        "disabled": disabled,
    }
    spec = UserUpdate(**{k: v for k, v in changes.items() if v is not None})
    with client() as api:
        emit(api.update_user(name, spec, version=if_version), output, columns=USER_COLUMNS)


@tokens_app.command("create")
def tokens_create(
    name: str,
    expires_in_days: Annotated[
        int | None, typer.Option(help="Days until it expires; 0 for never.")
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create a token; it is printed once."""
    with client() as api:
        created = api.create_token(TokenCreate(name=name, expires_in_days=expires_in_days))
    if output is OutputFormat.json:
        emit(created, output, columns=())
        return
    emit(created, output, columns=TOKEN_COLUMNS)
    console.print("token (shown once, store it now):")
    console.print(created.token, soft_wrap=True, highlight=False)


@tokens_app.command("list")
def tokens_list(
    cursor: CursorOption = None, limit: LimitOption = 50, output: OutputOption = OutputFormat.table
) -> None:
    """List your tokens (never their values)."""
    with client() as api:
        page = api.list_tokens(cursor=cursor, limit=limit)
    emit(page.items, output, columns=TOKEN_COLUMNS, next_cursor=page.next_cursor)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str, output: OutputOption = OutputFormat.table) -> None:
    """Revoke a token by id."""
    with client() as api:
        revoked = api.revoke_token(token_id)
    emit_message(f"revoked token {revoked.id} ({revoked.name})", output, id=revoked.id)
