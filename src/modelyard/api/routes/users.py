"""Users and the caller's own identity."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from modelyard.api.deps import API_PREFIX, DEFAULT_PAGE, Ctx, Cursor, IfMatch, Limit, page_out
from modelyard.services.identity import whoami
from modelyard.services.users import UserService
from modelyard.specs.common import PageOut
from modelyard.specs.identity import UserCreate, UserOut, UserUpdate, WhoAmI

router = APIRouter(prefix=API_PREFIX, tags=["users"])


@router.get("/whoami")
def get_whoami(ctx: Ctx) -> WhoAmI:
    return whoami(ctx)


@router.post("/users", status_code=status.HTTP_201_CREATED)
def create_user(spec: UserCreate, ctx: Ctx) -> UserOut:
    return UserOut.model_validate(UserService(ctx).create(spec))


@router.get("/users")
def list_users(ctx: Ctx, cursor: Cursor = None, limit: Limit = DEFAULT_PAGE) -> PageOut[UserOut]:
    page = UserService(ctx).list(cursor=cursor, limit=limit)
    return page_out(page, UserOut.model_validate)


@router.get("/users/{name}")
def get_user(name: str, ctx: Ctx, response: Response) -> UserOut:
    user = UserService(ctx).get(name)
    response.headers["ETag"] = f'"{user.version}"'
    return UserOut.model_validate(user)


@router.patch("/users/{name}")
def update_user(
    name: str, spec: UserUpdate, ctx: Ctx, if_match: IfMatch, response: Response
) -> UserOut:
    user = UserService(ctx).update(name, spec, expected_version=if_match)
    response.headers["ETag"] = f'"{user.version}"'
    return UserOut.model_validate(user)
