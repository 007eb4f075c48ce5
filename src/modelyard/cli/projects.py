"""projects, members and audit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from modelyard.cli.common import CursorOption, LimitOption, ProjectOption, VersionOption, client
from modelyard.cli.output import OutputFormat, OutputOption, emit, emit_message
from modelyard.specs.projects import MemberAdd, MemberUpdate, ProjectCreate, ProjectUpdate

projects_app = typer.Typer(help="Projects: the unit of tenancy.", no_args_is_help=True)
members_app = typer.Typer(help="Who may do what in a project.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)

PROJECT_COLUMNS = ("name", "description", "labels", "created_by", "version", "created_at")
MEMBER_COLUMNS = ("user", "role", "version", "created_at")
AUDIT_COLUMNS = ("at", "actor", "action", "outcome", "project", "resource_name", "client_ip")

LabelOption = Annotated[
    list[str] | None, typer.Option("--label", "-l", help="key=value, repeatable.")
]


def _labels(pairs: list[str] | None) -> dict[str, str] | None:
    if pairs is None:
        return None
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--label")
        labels[key] = value
    return labels


@projects_app.command("create")
def projects_create(
    name: str,
    description: Annotated[str, typer.Option()] = "",
    label: LabelOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create a project; you become its admin."""
    spec = ProjectCreate(name=name, description=description, labels=_labels(label) or {})
    with client() as api:
        emit(api.create_project(spec), output, columns=PROJECT_COLUMNS)


@projects_app.command("list")
def projects_list(
    cursor: CursorOption = None, limit: LimitOption = 50, output: OutputOption = OutputFormat.table
) -> None:
    """List the projects you can see."""
    with client() as api:
        page = api.list_projects(cursor=cursor, limit=limit)
    emit(page.items, output, columns=PROJECT_COLUMNS, next_cursor=page.next_cursor)


@projects_app.command("show")
def projects_show(name: str, output: OutputOption = OutputFormat.table) -> None:
    """Show one project."""
    with client() as api:
        emit(api.get_project(name), output, columns=PROJECT_COLUMNS)


@projects_app.command("update")
def projects_update(
    name: str,
    description: Annotated[str | None, typer.Option()] = None,
    label: LabelOption = None,
    if_version: VersionOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Change a project's description or labels."""
    changes = {"description": description, "labels": _labels(label)}
    spec = ProjectUpdate(**{k: v for k, v in changes.items() if v is not None})
    with client() as api:
        emit(api.update_project(name, spec, version=if_version), output, columns=PROJECT_COLUMNS)


@projects_app.command("delete")
def projects_delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    if_version: VersionOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Delete a project and everything in it."""
    if not yes:
        typer.confirm(f"delete project {name!r} and everything in it?", abort=True)
    with client() as api:
        api.delete_project(name, version=if_version)
    emit_message(f"deleted project {name}", output, project=name)


@members_app.command("list")
def members_list(
    project: ProjectOption,
    cursor: CursorOption = None,
    limit: LimitOption = 50,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List a project's members and their roles."""
    with client() as api:
        page = api.list_members(project, cursor=cursor, limit=limit)
    emit(page.items, output, columns=MEMBER_COLUMNS, next_cursor=page.next_cursor)


@members_app.command("add")
def members_add(
    user: str,
    project: ProjectOption,
    role: Annotated[str, typer.Option(help="viewer, editor or admin.")] = "viewer",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Give a user a role in a project."""
    with client() as api:
        emit(
            api.add_member(project, MemberAdd(user=user, role=role)), output, columns=MEMBER_COLUMNS
        )


@members_app.command("set")
def members_set(
    user: str,
    project: ProjectOption,
    role: Annotated[str, typer.Option(help="viewer, editor or admin.")],
    if_version: VersionOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Change a member's role."""
    with client() as api:
        member = api.update_member(project, user, MemberUpdate(role=role), version=if_version)
    emit(member, output, columns=MEMBER_COLUMNS)


@members_app.command("remove")
def members_remove(
    user: str,
    project: ProjectOption,
    if_version: VersionOption = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Take a user out of a project."""
    with client() as api:
        api.remove_member(project, user, version=if_version)
    emit_message(f"removed {user} from {project}", output, project=project, user=user)


@audit_app.command("list")
def audit_list(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    actor: Annotated[str | None, typer.Option()] = None,
    since: Annotated[datetime | None, typer.Option()] = None,
    cursor: CursorOption = None,
    limit: LimitOption = 50,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Audit events, newest first (a project's for its admins, all for superusers)."""
    with client() as api:
        page = api.list_audit(project=project, actor=actor, since=since, cursor=cursor, limit=limit)
    emit(page.items, output, columns=AUDIT_COLUMNS, next_cursor=page.next_cursor)
