"""Odd inputs and races that must not break tenancy, secrets or the error shape."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from modelyard.api import create_app
from modelyard.auth.principal import Origin, Principal
from modelyard.config import Settings
from modelyard.services.context import ServiceContext
from modelyard.services.key_rotation import rotate_secret_key
from modelyard.services.secrets import SecretService
from modelyard.specs.projects import SecretPut
from modelyard.store.db import session_factory, transaction
from modelyard.store.models import User
from tests.conftest import MakeProject, Platform

pytestmark = pytest.mark.integration


def test_a_reused_project_name_does_not_inherit_the_old_audit_history(
    platform: Platform,
) -> None:
    alice = platform.client(platform.user("alice"))
    bob = platform.client(platform.user("bob"))
    with alice, bob:
        alice.post("/api/v1/projects", json={"name": "shared"})
        alice.put("/api/v1/projects/shared/secrets/ALICE_DB", json={"value": "x"})
        alice.delete("/api/v1/projects/shared")
        bob.post("/api/v1/projects", json={"name": "shared"})
        seen = bob.get("/api/v1/audit", params={"project": "shared"}).json()["items"]
    assert [(e["actor"], e["action"]) for e in seen] == [("bob", "project.create")]
    with platform.admin() as admin:
        everything = admin.get("/api/v1/audit", params={"project": "shared"}).json()["items"]
    assert [e["actor"] for e in everything] == ["bob"]  # the live project's history only


def test_a_secret_written_during_key_rotation_stays_readable(
    platform: Platform, make_project: MakeProject
) -> None:
    make_project("rot")
    old_key = platform.settings.secret_key
    assert old_key is not None
    (platform.settings.home / "secret.key").write_text(old_key.get_secret_value() + "\n")
    settings = platform.settings.model_copy(update={"secret_key": None})
    factory = session_factory(platform.engine)

    writer = factory()
    writer.begin()
    admin = writer.scalars(select(User).where(User.name == "admin")).one()
    principal = Principal(user_id=admin.id, name="admin", is_superuser=True, via="token")
    context = ServiceContext(writer, principal, Origin(), settings)
    SecretService(context).put("rot", "INFLIGHT", SecretPut(value="v1"), expected_version=None)

    rotation = threading.Thread(target=rotate_secret_key, args=(settings, factory))
    rotation.start()
    time.sleep(0.5)
    assert rotation.is_alive(), "the rotation must wait for the in-flight write"
    writer.commit()
    writer.close()
    rotation.join(timeout=30)

    with transaction(factory) as session:
        reader = ServiceContext(session, principal, Origin(), settings)
        assert SecretService(reader).reveal("rot", "INFLIGHT") == "v1"


def test_concurrent_demotions_never_leave_a_project_without_an_admin(
    platform: Platform,
) -> None:
    alice, bob = platform.user("alice"), platform.user("bob")
    for round_ in range(6):
        name = f"race-{round_}"
        with platform.client(alice) as a:
            a.post("/api/v1/projects", json={"name": name})
            a.post(f"/api/v1/projects/{name}/members", json={"user": "bob", "role": "admin"})
        barrier = threading.Barrier(2)
        codes: dict[str, int] = {}

        def demote(
            token: str,
            who: str,
            project: str = name,
            barrier: threading.Barrier = barrier,
            codes: dict[str, int] = codes,
        ) -> None:
            with platform.client(token) as client:
                barrier.wait()
                url = f"/api/v1/projects/{project}/members/{who}"
                codes[who] = client.patch(url, json={"role": "viewer"}).status_code

        threads = [
            threading.Thread(target=demote, args=(alice, "alice")),
            threading.Thread(target=demote, args=(bob, "bob")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with platform.admin() as admin:
            members = admin.get(f"/api/v1/projects/{name}/members").json()["items"]
        assert "admin" in [m["role"] for m in members], (round_, codes)
        assert sorted(codes.values()) == [200, 409], codes


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/api/v1/projects/a%00b", None),
        ("GET", "/api/v1/users/a%00b", None),
        ("DELETE", "/api/v1/tokens/a%00b", None),
        ("GET", "/api/v1/audit?actor=a%00b", None),
        ("PATCH", "/api/v1/projects/p", {"description": "a\u0000b"}),
        ("PUT", "/api/v1/projects/p/secrets/S", {"value": "x", "description": "a\u0000"}),
        ("POST", "/api/v1/users", {"name": "zed", "display_name": "a\u0000"}),
        ("POST", "/api/v1/tokens", {"name": "a\u0000"}),
        ("POST", "/api/v1/projects", {"name": "q", "labels": {"k\u0000": "v"}}),
    ],
)
def test_nul_characters_are_refused_not_a_500(
    platform: Platform, make_project: MakeProject, method: str, url: str, body: object
) -> None:
    make_project("p")
    with platform.admin() as admin:
        response = admin.request(method, url, json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "request/invalid"


def test_odd_headers_and_parameters_are_client_errors(
    platform: Platform, make_project: MakeProject
) -> None:
    make_project("p")
    deep_cursor = base64.urlsafe_b64encode(b"[" * 3000).decode()
    with platform.admin() as admin:
        superscript = admin.patch(
            "/api/v1/projects/p", json={}, headers={"If-Match": '"\u00b2"'.encode("latin-1")}
        )
        cursor = admin.get("/api/v1/projects", params={"cursor": deep_cursor})
        naive = admin.get("/api/v1/audit", params={"since": "2024-01-01T00:00:00"})
        aware = admin.get("/api/v1/audit", params={"since": "2024-01-01T00:00:00+00:00"})
    assert superscript.status_code == 422
    assert superscript.json()["error"]["code"] == "request/invalid_if_match"
    assert cursor.status_code == 422
    assert cursor.json()["error"]["code"] == "request/invalid_cursor"
    assert naive.status_code == 422
    assert "timezone" in naive.json()["error"]["message"]
    assert aware.status_code == 200


def test_a_forwarded_for_header_does_not_set_the_audited_address(platform: Platform) -> None:
    with platform.admin() as admin:
        admin.post("/api/v1/projects", json={"name": "xff"}, headers={"X-Forwarded-For": "6.6.6.6"})
        events = admin.get("/api/v1/audit", params={"project": "xff"}).json()["items"]
    assert [e["client_ip"] for e in events] == ["127.0.0.1"]


def test_building_an_app_touches_no_files(tmp_path: Path) -> None:
    home = tmp_path / "untouched"
    create_app(Settings(home=home))
    assert not home.exists()
