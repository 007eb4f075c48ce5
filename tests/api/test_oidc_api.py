"""OIDC single sign-on over real HTTP: a test identity provider signs the tokens, the
control plane verifies them against the provider's published JWKS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from modelyard.config import OIDCRoleMapping, Settings
from modelyard.store.db import session_factory
from modelyard.store.models import AuditEvent, User
from tests.auth.idp import (
    AUDIENCE,
    DISCOVERY_PATH,
    JWKS_PATH,
    REFUSED,
    IdentityProvider,
    TokenMaker,
    closed_port_url,
)
from tests.auth.idp import idp as idp
from tests.conftest import LiveServer, Platform, start_platform

pytestmark = pytest.mark.integration

GROUP_PATTERN = r"^modelyard:(?P<project>[a-z0-9-]+):(?P<role>viewer|editor|admin)$"
ROLE_MAPPINGS = [
    OIDCRoleMapping(group="risk-editors", project="risk", role="editor"),
    OIDCRoleMapping(group="platform-admins", role="superuser"),
]

StartPlatform = Callable[..., Platform]


@pytest.fixture
def start_oidc_platform(
    settings: Settings, engine: Engine, idp: IdentityProvider
) -> Iterator[StartPlatform]:
    """Start the control plane trusting ``idp`` (``**update`` overrides settings), with a
    project ``risk`` created by the superuser."""
    servers: list[LiveServer] = []

    def start(**update: Any) -> Platform:
        values: dict[str, Any] = {
            "oidc_issuer": idp.issuer,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_url": idp.jwks_url,
            "oidc_role_mappings": ROLE_MAPPINGS,
            "oidc_group_pattern": GROUP_PATTERN,
        }
        values.update(update)
        server, platform = start_platform(settings.model_copy(update=values), engine)
        servers.append(server)
        with platform.admin() as admin:
            admin.post("/api/v1/projects", json={"name": "risk"}).raise_for_status()
        return platform

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def platform(start_oidc_platform: StartPlatform) -> Platform:
    """Overrides the conftest ``platform``: the control plane with OIDC configured."""
    return start_oidc_platform()


def get(platform: Platform, token: str, path: str) -> httpx.Response:
    with platform.client(token) as client:
        return client.get(path)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


def store(platform: Platform) -> Session:
    return session_factory(platform.engine)()


def users_with_subject(platform: Platform, qualified_subject: str) -> int:
    with store(platform) as session:
        statement = select(func.count()).select_from(User)
        return session.scalar(statement.where(User.oidc_subject == qualified_subject)) or 0


# -- a valid token --------------------------------------------------------------------------


def test_a_valid_token_signs_the_user_in(platform: Platform, idp: IdentityProvider) -> None:
    response = get(platform, idp.token(), "/api/v1/whoami")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "name": "alice",
        "is_superuser": False,
        "via": "oidc",
        "projects": {},
    }


def test_the_user_is_created_on_first_sight_only(platform: Platform, idp: IdentityProvider) -> None:
    subject = f"{idp.issuer}|sub-alice"
    assert users_with_subject(platform, subject) == 0

    assert get(platform, idp.token(), "/api/v1/whoami").status_code == 200
    assert get(platform, idp.token(), "/api/v1/whoami").status_code == 200

    assert users_with_subject(platform, subject) == 1
    with platform.admin() as admin:
        user = admin.get("/api/v1/users/alice")
        audit = admin.get("/api/v1/audit", params={"actor": "alice"})
    assert user.status_code == 200, user.text
    assert user.json()["email"] == "alice@example.com"
    assert user.json()["is_superuser"] is False
    assert user.json()["disabled"] is False
    assert [e["action"] for e in audit.json()["items"]] == ["user.create"]
    own = get(platform, idp.token(), "/api/v1/users/alice")
    assert own.status_code == 200
    assert own.json()["id"] == user.json()["id"]


def test_first_sight_is_audited_as_an_oidc_sign_up(
    platform: Platform, idp: IdentityProvider
) -> None:
    get(platform, idp.token(), "/api/v1/whoami")
    get(platform, idp.token(), "/api/v1/whoami")

    with store(platform) as session:
        events = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "user.create", AuditEvent.resource_name == "alice"
            )
        ).all()
    assert len(events) == 1
    assert events[0].actor == "alice"
    assert events[0].outcome == "success"
    assert events[0].details == {"via": "oidc", "issuer": idp.issuer}
    assert events[0].client_ip == "127.0.0.1"


def test_the_user_is_found_by_subject_even_after_a_rename(
    platform: Platform, idp: IdentityProvider
) -> None:
    get(platform, idp.token(username="alice"), "/api/v1/whoami")

    renamed = get(platform, idp.token(username="alice.smith"), "/api/v1/whoami")

    assert renamed.status_code == 200
    assert renamed.json()["name"] == "alice"
    assert users_with_subject(platform, f"{idp.issuer}|sub-alice") == 1


def test_api_tokens_keep_working_next_to_oidc(platform: Platform) -> None:
    response = get(platform, platform.admin_token, "/api/v1/whoami")

    assert response.status_code == 200
    assert response.json()["via"] == "token"


def test_the_jwks_url_is_discovered_from_the_issuer(
    start_oidc_platform: StartPlatform, idp: IdentityProvider
) -> None:
    platform = start_oidc_platform(oidc_jwks_url=None)

    first = get(platform, idp.token(), "/api/v1/whoami")
    second = get(platform, idp.token(), "/api/v1/whoami")

    assert first.status_code == 200, first.text
    assert second.status_code == 200
    assert idp.hits[DISCOVERY_PATH] == 1
    assert idp.hits[JWKS_PATH] == 1


# -- groups -> roles ------------------------------------------------------------------------


def test_a_mapped_group_makes_the_user_an_editor(platform: Platform, idp: IdentityProvider) -> None:
    token = idp.token(groups=["risk-editors", "unrelated"])

    whoami = get(platform, token, "/api/v1/whoami")
    project = get(platform, token, "/api/v1/projects/risk")
    secrets = get(platform, token, "/api/v1/projects/risk/secrets")
    projects = get(platform, token, "/api/v1/projects")
    with platform.client(token) as client:
        put = client.put("/api/v1/projects/risk/secrets/DB_PASSWORD", json={"value": "s3cret"})

    assert whoami.status_code == 200
    assert whoami.json()["projects"] == {"risk": "editor"}
    assert whoami.json()["is_superuser"] is False
    assert project.status_code == 200
    assert project.json()["name"] == "risk"
    assert secrets.status_code == 200
    assert [p["name"] for p in projects.json()["items"]] == ["risk"]
    assert_error(put, 403, "auth/forbidden")
    assert put.json()["error"]["details"] == {
        "project": "risk",
        "required": "admin",
        "role": "editor",
    }


def test_the_group_pattern_grants_roles(platform: Platform, idp: IdentityProvider) -> None:
    token = idp.token(groups=["modelyard:risk:admin", "modelyard:risk:owner"])

    whoami = get(platform, token, "/api/v1/whoami")
    with platform.client(token) as client:
        put = client.put("/api/v1/projects/risk/secrets/DB_PASSWORD", json={"value": "s3cret"})

    assert whoami.json()["projects"] == {"risk": "admin"}
    assert put.status_code == 201, put.text
    assert put.json()["created_by"] == "alice"


def test_mapping_and_pattern_combine_to_the_highest_role(
    platform: Platform, idp: IdentityProvider
) -> None:
    token = idp.token(groups=["modelyard:risk:viewer", "risk-editors"])

    assert get(platform, token, "/api/v1/whoami").json()["projects"] == {"risk": "editor"}


def test_group_roles_add_to_stored_bindings(platform: Platform, idp: IdentityProvider) -> None:
    get(platform, idp.token(), "/api/v1/whoami")  # first sight creates the user
    with platform.admin() as admin:
        added = admin.post(
            "/api/v1/projects/risk/members", json={"user": "alice", "role": "viewer"}
        )
    assert added.status_code == 201, added.text

    viewer_only = get(platform, idp.token(), "/api/v1/whoami")
    with_group = get(platform, idp.token(groups=["risk-editors"]), "/api/v1/whoami")

    assert viewer_only.json()["projects"] == {"risk": "viewer"}
    assert with_group.json()["projects"] == {"risk": "editor"}


def test_a_superuser_group_makes_the_user_a_superuser(
    platform: Platform, idp: IdentityProvider
) -> None:
    token = idp.token(groups=["platform-admins"])

    whoami = get(platform, token, "/api/v1/whoami")
    users = get(platform, token, "/api/v1/users")

    assert whoami.json()["is_superuser"] is True
    assert users.status_code == 200
    with platform.admin() as admin:
        stored = admin.get("/api/v1/users/alice").json()
    assert stored["is_superuser"] is False  # granted per token, never stored


def test_a_user_without_groups_has_no_role(platform: Platform, idp: IdentityProvider) -> None:
    token = idp.token(groups=[])
    get(platform, token, "/api/v1/whoami")

    project = get(platform, token, "/api/v1/projects/risk")
    users = get(platform, token, "/api/v1/users")
    projects = get(platform, token, "/api/v1/projects")

    assert_error(project, 403, "auth/forbidden")
    assert project.json()["error"]["details"]["role"] == "none"
    assert_error(users, 403, "auth/superuser_required")
    assert projects.json()["items"] == []


def test_roles_follow_the_current_token_only(platform: Platform, idp: IdentityProvider) -> None:
    editor = idp.token(groups=["risk-editors", "platform-admins"])
    assert get(platform, editor, "/api/v1/projects/risk").status_code == 200
    assert get(platform, editor, "/api/v1/users").status_code == 200

    plain = idp.token(groups=[])

    assert get(platform, plain, "/api/v1/whoami").json()["projects"] == {}
    assert get(platform, plain, "/api/v1/whoami").json()["is_superuser"] is False
    assert_error(get(platform, plain, "/api/v1/projects/risk"), 403, "auth/forbidden")
    assert_error(get(platform, plain, "/api/v1/users"), 403, "auth/superuser_required")


# -- refused tokens -------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "code"), REFUSED)
def test_bad_tokens_are_refused(
    platform: Platform, idp: IdentityProvider, make: TokenMaker, code: str
) -> None:
    response = get(platform, make(idp), "/api/v1/whoami")

    assert_error(response, 401, code)
    assert users_with_subject(platform, f"{idp.issuer}|sub-alice") == 0


def test_a_disabled_user_is_refused(platform: Platform, idp: IdentityProvider) -> None:
    assert get(platform, idp.token(), "/api/v1/whoami").status_code == 200
    with platform.admin() as admin:
        disabled = admin.patch("/api/v1/users/alice", json={"disabled": True})
    assert disabled.status_code == 200, disabled.text

    response = get(platform, idp.token(groups=["platform-admins"]), "/api/v1/whoami")

    assert_error(response, 401, "auth/user_disabled")


def test_a_new_subject_cannot_take_a_local_users_name(
    platform: Platform, idp: IdentityProvider
) -> None:
    platform.user("bob")

    response = get(platform, idp.token("sub-bob", username="bob"), "/api/v1/whoami")

    assert_error(response, 401, "auth/user_conflict")
    assert users_with_subject(platform, f"{idp.issuer}|sub-bob") == 0


def test_a_new_subject_cannot_take_another_oidc_users_name(
    platform: Platform, idp: IdentityProvider
) -> None:
    assert get(platform, idp.token("sub-alice"), "/api/v1/whoami").status_code == 200

    response = get(platform, idp.token("sub-impostor", username="alice"), "/api/v1/whoami")

    assert_error(response, 401, "auth/user_conflict")


def test_an_algorithm_that_does_not_fit_the_key_is_refused(
    platform: Platform, idp: IdentityProvider
) -> None:
    token = idp.token()
    _, payload, signature = token.split(".")
    header = jwt.utils.base64url_encode(
        f'{{"alg":"ES256","typ":"JWT","kid":"{idp.kid}"}}'.encode()
    ).decode()

    response = get(platform, f"{header}.{payload}.{signature}", "/api/v1/whoami")

    assert_error(response, 401, "auth/invalid_token")


# -- the provider is unreachable, or OIDC is off --------------------------------------------


def test_an_unreachable_jwks_means_503(
    start_oidc_platform: StartPlatform, idp: IdentityProvider
) -> None:
    platform = start_oidc_platform(oidc_jwks_url=closed_port_url("/certs"))

    response = get(platform, idp.token(), "/api/v1/whoami")

    assert_error(response, 503, "auth/oidc_unavailable")
    assert get(platform, platform.admin_token, "/api/v1/whoami").status_code == 200


def test_an_unreachable_discovery_document_means_503(
    start_oidc_platform: StartPlatform, idp: IdentityProvider
) -> None:
    issuer = closed_port_url("/realms/modelyard")
    platform = start_oidc_platform(oidc_issuer=issuer, oidc_jwks_url=None)

    response = get(platform, idp.token(issuer=issuer), "/api/v1/whoami")

    assert_error(response, 503, "auth/oidc_unavailable")


def test_without_oidc_a_jwt_is_just_an_invalid_token(
    start_oidc_platform: StartPlatform, idp: IdentityProvider
) -> None:
    platform = start_oidc_platform(oidc_issuer=None, oidc_audience=None, oidc_jwks_url=None)

    response = get(platform, idp.token(), "/api/v1/whoami")

    assert_error(response, 401, "auth/invalid_token")
    assert idp.hits.total() == 0


def test_no_credential_at_all_is_a_missing_token(platform: Platform) -> None:
    with platform.client() as client:
        response = client.get("/api/v1/whoami")

    assert_error(response, 401, "auth/missing_token")


@pytest.mark.parametrize("username", ["Alice Smith/../", "x" * 80, "-leading-dash"])
def test_a_username_that_is_not_a_valid_user_name_is_refused(
    platform: Platform, idp: IdentityProvider, username: str
) -> None:
    response = get(platform, idp.token("sub-odd", username=username), "/api/v1/whoami")

    assert_error(response, 401, "auth/invalid_username")
    with platform.admin() as admin:
        names = [u["name"] for u in admin.get("/api/v1/users").json()["items"]]
    assert names == ["admin"]


def test_first_sign_in_keeps_the_user_and_its_audit_event_even_if_the_request_fails(
    platform: Platform, idp: IdentityProvider
) -> None:
    token = idp.token("sub-carol", username="carol")

    response = get(platform, token, "/api/v1/projects/does-not-exist")

    assert_error(response, 404, "project/not_found")
    assert users_with_subject(platform, f"{idp.issuer}|sub-carol") == 1
    with store(platform) as session:
        created = session.scalars(
            select(AuditEvent.resource_name).where(AuditEvent.action == "user.create")
        ).all()
    assert created == ["carol"]
