"""A project's secrets: metadata only. No route returns a value."""

from __future__ import annotations

from fastapi import APIRouter, Path, Response, status

from modelyard.api.deps import API_PREFIX, DEFAULT_PAGE, Ctx, Cursor, IfMatch, Limit, page_out
from modelyard.services.secrets import SecretService
from modelyard.specs.common import SECRET_NAME_PATTERN, PageOut
from modelyard.specs.projects import SecretOut, SecretPut

router = APIRouter(prefix=API_PREFIX, tags=["secrets"])


@router.get("/projects/{project}/secrets")
def list_secrets(
    project: str, ctx: Ctx, cursor: Cursor = None, limit: Limit = DEFAULT_PAGE
) -> PageOut[SecretOut]:
    page = SecretService(ctx).list(project, cursor=cursor, limit=limit)
    return page_out(page, SecretOut.model_validate)


@router.get("/projects/{project}/secrets/{name}")
def get_secret(project: str, name: str, ctx: Ctx, response: Response) -> SecretOut:
    secret = SecretService(ctx).get(project, name)
    response.headers["ETag"] = f'"{secret.version}"'
    return SecretOut.model_validate(secret)


@router.put("/projects/{project}/secrets/{name}")
def put_secret(
    project: str,
    spec: SecretPut,
    ctx: Ctx,
    if_match: IfMatch,
    response: Response,
    name: str = Path(pattern=SECRET_NAME_PATTERN),
) -> SecretOut:
    secret, created = SecretService(ctx).put(project, name, spec, expected_version=if_match)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["ETag"] = f'"{secret.version}"'
    return SecretOut.model_validate(secret)


@router.delete("/projects/{project}/secrets/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_secret(project: str, name: str, ctx: Ctx, if_match: IfMatch) -> None:
    SecretService(ctx).delete(project, name, expected_version=if_match)
