"""The caller's API tokens."""

from __future__ import annotations

from fastapi import APIRouter, status

from modelyard.api.deps import API_PREFIX, DEFAULT_PAGE, Ctx, Cursor, Limit, page_out
from modelyard.services.tokens import TokenService
from modelyard.specs.common import PageOut
from modelyard.specs.identity import TokenCreate, TokenCreated, TokenOut

router = APIRouter(prefix=API_PREFIX, tags=["tokens"])


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(spec: TokenCreate, ctx: Ctx) -> TokenCreated:
    issued = TokenService(ctx).create(spec)
    out = TokenOut.model_validate(issued.record)
    return TokenCreated(**out.model_dump(), token=issued.token)


@router.get("/tokens")
def list_tokens(ctx: Ctx, cursor: Cursor = None, limit: Limit = DEFAULT_PAGE) -> PageOut[TokenOut]:
    page = TokenService(ctx).list(cursor=cursor, limit=limit)
    return page_out(page, TokenOut.model_validate)


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: str, ctx: Ctx) -> TokenOut:
    return TokenOut.model_validate(TokenService(ctx).revoke(token_id))
