"""Tenancy: every resource type of a project is closed to other projects' users, and
each role gets exactly what it should inside its own project."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import MakeProject, Platform

pytestmark = pytest.mark.integration

ROLES = ("viewer", "editor", "admin")
PIPELINE = {
    "name": "daily",
    "source": "daily.py:daily",
    "params_schema": {"type": "object", "properties": {}},
    "nodes": [
        {
            "id": "extract",
            "task": "daily:extract",
            "task_name": "extract",
            "options": {},
            "inputs": {},
        }
    ],
}
SCHEDULE = {"spec": PIPELINE, "schedule": {"cron": "@daily"}}


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    least_role: str  # the lowest role that may make this call
    json: dict[str, Any] | None = None

    def send(self, client: httpx.Client, project: str) -> httpx.Response:
        return client.request(self.method, self.path.format(p=project), json=self.json)


# Every project-scoped endpoint, one entry per (resource type, verb).
CALLS = [
    Call("GET", "/api/v1/projects/{p}", "viewer"),
    Call("PATCH", "/api/v1/projects/{p}", "admin", {"description": "changed"}),
    Call("GET", "/api/v1/projects/{p}/members", "viewer"),
    Call("POST", "/api/v1/projects/{p}/members", "admin", {"user": "mallory", "role": "admin"}),
    Call("PATCH", "/api/v1/projects/{p}/members/carol", "admin", {"role": "admin"}),
    Call("DELETE", "/api/v1/projects/{p}/members/carol", "admin"),
    Call("GET", "/api/v1/projects/{p}/secrets", "viewer"),
    Call("GET", "/api/v1/projects/{p}/secrets/API_KEY", "viewer"),
    Call("PUT", "/api/v1/projects/{p}/secrets/API_KEY", "admin", {"value": "stolen"}),
    Call("PUT", "/api/v1/projects/{p}/secrets/NEW", "admin", {"value": "planted"}),
    Call("DELETE", "/api/v1/projects/{p}/secrets/API_KEY", "admin"),
    Call("GET", "/api/v1/projects/{p}/runs", "viewer"),
    Call("POST", "/api/v1/projects/{p}/runs", "editor", {"spec": PIPELINE}),
    Call("GET", "/api/v1/projects/{p}/schedules", "viewer"),
    Call("GET", "/api/v1/projects/{p}/schedules/daily", "viewer"),
    Call("PUT", "/api/v1/projects/{p}/schedules", "editor", SCHEDULE),
    Call("PATCH", "/api/v1/projects/{p}/schedules/daily", "editor", {"max_active_runs": 2}),
    Call("POST", "/api/v1/projects/{p}/schedules/daily/unpause", "editor"),
    Call("POST", "/api/v1/projects/{p}/schedules/daily/pause", "editor"),
    Call("POST", "/api/v1/projects/{p}/schedules/daily/trigger", "editor"),
    Call("DELETE", "/api/v1/projects/{p}/schedules/daily", "editor"),
    Call("GET", "/api/v1/audit?project={p}", "admin"),
    Call("DELETE", "/api/v1/projects/{p}", "admin"),
]


@pytest.fixture
def target(platform: Platform, make_project: MakeProject) -> str:
    """Project ``bank-b`` with member carol and a secret, owned by bob."""
    platform.user("bob")
    platform.user("carol")
    platform.user("mallory")
    make_project("bank-b", {"bob": "admin", "carol": "viewer"})
    with platform.admin() as admin:
        admin.put("/api/v1/projects/bank-b/secrets/API_KEY", json={"value": "b-secret"})
        admin.put("/api/v1/projects/bank-b/schedules", json=SCHEDULE).raise_for_status()
    return "bank-b"


def _snapshot(platform: Platform, project: str) -> dict[str, Any]:
    with platform.admin() as admin:
        return {
            "project": admin.get(f"/api/v1/projects/{project}").json(),
            "members": admin.get(f"/api/v1/projects/{project}/members").json(),
            "secrets": admin.get(f"/api/v1/projects/{project}/secrets").json(),
            "runs": admin.get(f"/api/v1/projects/{project}/runs").json(),
            "schedules": [
                {k: v for k, v in item.items() if k != "next_run_at"}
                for item in admin.get(f"/api/v1/projects/{project}/schedules").json()
            ],
        }


@pytest.mark.parametrize("own_role", ROLES)
def test_a_member_of_project_a_can_touch_nothing_of_project_b(
    platform: Platform, make_project: MakeProject, target: str, own_role: str
) -> None:
    token = platform.user("alice")
    make_project("bank-a", {"alice": own_role})
    before = _snapshot(platform, target)
    with platform.client(token) as alice:
        for call in CALLS:
            response = call.send(alice, target)
            assert response.status_code == 403, (call, response.text)
            assert response.json()["error"]["code"] == "auth/forbidden"
            assert "b-secret" not in response.text
        listed = [p["name"] for p in alice.get("/api/v1/projects").json()["items"]]
    assert listed == ["bank-a"]
    assert _snapshot(platform, target) == before


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_exactly_its_rights(platform: Platform, target: str, role: str) -> None:
    token = platform.user("alice")
    with platform.admin() as admin:
        admin.post(f"/api/v1/projects/{target}/members", json={"user": "alice", "role": role})
    rank = {r: i for i, r in enumerate(ROLES)}
    with platform.client(token) as alice:
        for call in CALLS:
            response = call.send(alice, target)
            if rank[role] >= rank[call.least_role]:
                assert response.status_code < 300, (role, call, response.text)
            else:
                assert response.status_code == 403, (role, call, response.text)
                details = response.json()["error"]["details"]
                assert details == {"project": target, "required": call.least_role, "role": role}


def test_refused_mutations_are_audited(platform: Platform, target: str) -> None:
    token = platform.user("alice")
    with platform.client(token) as alice:
        alice.put(f"/api/v1/projects/{target}/secrets/X", json={"value": "v"})
        alice.get(f"/api/v1/projects/{target}")  # a refused read is not a mutation
    with platform.admin() as admin:
        events = admin.get("/api/v1/audit", params={"actor": "alice"}).json()["items"]
    assert [(e["action"], e["outcome"], e["project"]) for e in events] == [
        ("PUT /api/v1/projects/{project}/secrets/{name}", "denied", target)
    ]
    assert events[0]["details"]["code"] == "auth/forbidden"
