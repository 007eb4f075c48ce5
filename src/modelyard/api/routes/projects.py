"""Projects and their members."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from modelyard.api.deps import API_PREFIX, DEFAULT_PAGE, Ctx, Cursor, IfMatch, Limit, page_out
from modelyard.services.projects import MemberService, ProjectService
from modelyard.specs.common import PageOut
from modelyard.specs.projects import (
    MemberAdd,
    MemberOut,
    MemberUpdate,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
)
from modelyard.store.models import RoleBinding

router = APIRouter(prefix=API_PREFIX, tags=["projects"])


def _member(binding: RoleBinding) -> MemberOut:
    return MemberOut(
        user=binding.user.name,
        role=binding.role,
        version=binding.version,
        created_at=binding.created_at,
        updated_at=binding.updated_at,
    )


@router.post("/projects", status_code=status.HTTP_201_CREATED)
def create_project(spec: ProjectCreate, ctx: Ctx) -> ProjectOut:
    return ProjectOut.model_validate(ProjectService(ctx).create(spec))


@router.get("/projects")
def list_projects(
    ctx: Ctx, cursor: Cursor = None, limit: Limit = DEFAULT_PAGE
) -> PageOut[ProjectOut]:
    page = ProjectService(ctx).list(cursor=cursor, limit=limit)
    return page_out(page, ProjectOut.model_validate)


@router.get("/projects/{project}")
def get_project(project: str, ctx: Ctx, response: Response) -> ProjectOut:
    record = ProjectService(ctx).get(project)
    response.headers["ETag"] = f'"{record.version}"'
    return ProjectOut.model_validate(record)


@router.patch("/projects/{project}")
def update_project(
    project: str, spec: ProjectUpdate, ctx: Ctx, if_match: IfMatch, response: Response
) -> ProjectOut:
    record = ProjectService(ctx).update(project, spec, expected_version=if_match)
    response.headers["ETag"] = f'"{record.version}"'
    return ProjectOut.model_validate(record)


@router.delete("/projects/{project}", status_code=status.HTTP_204_NO_CONTENT)
def delete_project(project: str, ctx: Ctx, if_match: IfMatch) -> None:
    ProjectService(ctx).delete(project, expected_version=if_match)


@router.get("/projects/{project}/members")
def list_members(
    project: str, ctx: Ctx, cursor: Cursor = None, limit: Limit = DEFAULT_PAGE
) -> PageOut[MemberOut]:
    page = MemberService(ctx).list(project, cursor=cursor, limit=limit)
    return page_out(page, _member)


@router.post("/projects/{project}/members", status_code=status.HTTP_201_CREATED)
def add_member(project: str, spec: MemberAdd, ctx: Ctx) -> MemberOut:
    return _member(MemberService(ctx).add(project, spec))


@router.patch("/projects/{project}/members/{user}")
def update_member(
    project: str, user: str, spec: MemberUpdate, ctx: Ctx, if_match: IfMatch
) -> MemberOut:
    return _member(MemberService(ctx).update(project, user, spec, expected_version=if_match))


@router.delete("/projects/{project}/members/{user}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(project: str, user: str, ctx: Ctx, if_match: IfMatch) -> None:
    MemberService(ctx).remove(project, user, expected_version=if_match)
