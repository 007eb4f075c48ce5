"""API tokens: shown once, stored hashed, expiring, revocable; and the 401 paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from modelyard.auth.tokens import hash_token
from modelyard.store.db import session_factory, transaction
from modelyard.store.models import ApiToken
from tests.conftest import Platform

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "auth/missing_token"),
        ({"Authorization": "Bearer"}, "auth/missing_token"),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, "auth/missing_token"),
        ({"Authorization": "Bearer myd_not-a-real-token"}, "auth/invalid_token"),
        ({"Authorization": "Bearer something-else"}, "auth/invalid_token"),
    ],
)
def test_requests_without_a_valid_token_get_401(
    platform: Platform, headers: dict[str, str], code: str
) -> None:
    with platform.client() as anonymous:
        response = anonymous.get("/api/v1/projects", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["x-request-id"]


def test_a_created_token_is_shown_once_and_stored_only_hashed(platform: Platform) -> None:
    with platform.admin() as admin:
        created = admin.post("/api/v1/tokens", json={"name": "ci", "expires_in_days": 7})
        assert created.status_code == 201
        token = created.json()["token"]
        listed = admin.get("/api/v1/tokens").json()["items"]
    assert token.startswith("myd_")
    assert created.json()["prefix"] == token[:12]
    assert {t["name"] for t in listed} == {"test", "ci"}
    assert all("token" not in t for t in listed)
    assert token not in str(listed)
    with transaction(session_factory(platform.engine)) as session:
        stored = session.scalars(select(ApiToken.token_hash)).all()
    assert hash_token(token) in stored
    assert token not in stored
    with platform.client(token) as ci:
        assert ci.get("/api/v1/whoami").json()["name"] == "admin"


def test_token_expiry_defaults_from_settings_and_zero_means_never(platform: Platform) -> None:
    with platform.admin() as admin:
        default = admin.post("/api/v1/tokens", json={"name": "d"}).json()
        never = admin.post("/api/v1/tokens", json={"name": "n", "expires_in_days": 0}).json()
    expires = datetime.fromisoformat(default["expires_at"])
    expected = datetime.now(UTC) + timedelta(days=platform.settings.token_ttl_days)
    assert abs((expires - expected).total_seconds()) < 60
    assert never["expires_at"] is None


def test_a_revoked_token_gets_401(platform: Platform) -> None:
    token = platform.user("bob")
    with platform.client(token) as bob:
        mine = bob.get("/api/v1/tokens").json()["items"][0]
        revoked = bob.delete(f"/api/v1/tokens/{mine['id']}")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        after = bob.get("/api/v1/whoami")
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "auth/token_revoked"


def test_an_expired_token_gets_401(platform: Platform) -> None:
    token = platform.user("carol")
    with transaction(session_factory(platform.engine)) as session:
        record = session.scalars(
            select(ApiToken).where(ApiToken.token_hash == hash_token(token))
        ).one()
        record.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    with platform.client(token) as carol:
        response = carol.get("/api/v1/whoami")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth/token_expired"


def test_a_disabled_user_gets_401(platform: Platform) -> None:
    token = platform.user("dave")
    with platform.admin() as admin:
        assert admin.patch("/api/v1/users/dave", json={"disabled": True}).status_code == 200
    with platform.client(token) as dave:
        response = dave.get("/api/v1/whoami")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth/user_disabled"


def test_nobody_can_revoke_or_see_another_users_token(platform: Platform) -> None:
    bob = platform.client(platform.user("bob"))
    eve = platform.client(platform.user("eve"))
    with bob, eve:
        bobs = bob.get("/api/v1/tokens").json()["items"][0]["id"]
        assert [t["id"] for t in eve.get("/api/v1/tokens").json()["items"]] != [bobs]
        response = eve.delete(f"/api/v1/tokens/{bobs}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "token/not_found"
        assert bob.get("/api/v1/whoami").status_code == 200


def test_a_superuser_may_revoke_anyones_token(platform: Platform) -> None:
    token = platform.user("mallory")
    with platform.client(token) as mallory:
        token_id = mallory.get("/api/v1/tokens").json()["items"][0]["id"]
    with platform.admin() as admin:
        assert admin.delete(f"/api/v1/tokens/{token_id}").status_code == 200
    with platform.client(token) as mallory:
        assert mallory.get("/api/v1/whoami").status_code == 401


def test_token_requests_are_validated(platform: Platform) -> None:
    with platform.admin() as admin:
        response = admin.post("/api/v1/tokens", json={"name": "", "expires_in_days": -1})
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "request/invalid"
    locs = {tuple(err["loc"]) for err in body["details"]["errors"]}
    assert locs == {("body", "name"), ("body", "expires_in_days")}
