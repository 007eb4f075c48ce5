"""Every mutation lands in the audit log: who, what, when, from where."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Platform

pytestmark = pytest.mark.integration


def test_every_mutation_is_audited_with_who_what_when_where(platform: Platform) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    platform.user("alice")
    headers = {"X-Request-ID": "audit-1", "User-Agent": "audit-test/1.0"}
    with platform.admin() as admin:
        steps = [
            admin.post("/api/v1/projects", json={"name": "risk"}, headers=headers),
            admin.patch("/api/v1/projects/risk", json={"description": "d"}),
            admin.post("/api/v1/users", json={"name": "bob"}),
            admin.patch("/api/v1/users/bob", json={"display_name": "Bob"}),
            admin.post("/api/v1/projects/risk/members", json={"user": "bob", "role": "viewer"}),
            admin.patch("/api/v1/projects/risk/members/bob", json={"role": "editor"}),
            admin.put("/api/v1/projects/risk/secrets/K", json={"value": "v1"}),
            admin.put("/api/v1/projects/risk/secrets/K", json={"value": "v2"}),
            admin.delete("/api/v1/projects/risk/secrets/K"),
            admin.delete("/api/v1/projects/risk/members/bob"),
            admin.post("/api/v1/tokens", json={"name": "t"}),
        ]
        token_id = steps[-1].json()["id"]
        steps.append(admin.delete(f"/api/v1/tokens/{token_id}"))
        steps.append(admin.delete("/api/v1/projects/risk"))
        assert all(r.status_code < 300 for r in steps), [r.text for r in steps]
        events = admin.get("/api/v1/audit", params={"actor": "admin", "limit": 100}).json()
    actions = [e["action"] for e in reversed(events["items"])]
    assert actions == [
        "project.create",
        "project.update",
        "user.create",
        "user.update",
        "member.add",
        "member.update",
        "secret.create",
        "secret.update",
        "secret.delete",
        "member.remove",
        "token.create",
        "token.revoke",
        "project.delete",
    ]
    first = events["items"][-1]
    assert first["actor"] == "admin"
    assert first["outcome"] == "success"
    assert first["project"] == "risk"
    assert first["client_ip"] == "127.0.0.1"
    assert first["user_agent"] == "audit-test/1.0"
    assert first["request_id"] == "audit-1"
    assert datetime.fromisoformat(first["at"]) >= started


def test_a_failed_mutation_leaves_no_success_event(platform: Platform) -> None:
    with platform.admin() as admin:
        admin.post("/api/v1/projects", json={"name": "risk"})
        assert admin.post("/api/v1/projects", json={"name": "risk"}).status_code == 409
        events = admin.get("/api/v1/audit").json()["items"]
    assert [e["action"] for e in events] == ["project.create"]


def test_project_admins_read_their_projects_audit_only(platform: Platform) -> None:
    token = platform.user("alice")
    with platform.client(token) as alice:
        alice.post("/api/v1/projects", json={"name": "mine"})
        own = alice.get("/api/v1/audit", params={"project": "mine"})
        everything = alice.get("/api/v1/audit")
    assert own.status_code == 200
    assert [e["action"] for e in own.json()["items"]] == ["project.create"]
    assert everything.status_code == 403
    assert everything.json()["error"]["code"] == "auth/superuser_required"


def test_audit_filters_by_time(platform: Platform) -> None:
    with platform.admin() as admin:
        admin.post("/api/v1/projects", json={"name": "old"})
        cutoff = datetime.now(UTC)
        admin.post("/api/v1/projects", json={"name": "new"})
        recent = admin.get("/api/v1/audit", params={"since": cutoff.isoformat()}).json()
    assert [e["resource_name"] for e in recent["items"]] == ["new"]
