"""Projects and members: CRUD, validation, pagination, optimistic concurrency."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import MakeProject, Platform

pytestmark = pytest.mark.integration


def test_project_lifecycle(platform: Platform) -> None:
    with platform.admin() as admin:
        created = admin.post(
            "/api/v1/projects",
            json={"name": "risk", "description": "Credit risk", "labels": {"team": "risk"}},
        )
        assert created.status_code == 201
        body = created.json()
        assert (body["name"], body["version"], body["created_by"]) == ("risk", 1, "admin")

        shown = admin.get("/api/v1/projects/risk")
        assert shown.headers["etag"] == '"1"'

        updated = admin.patch("/api/v1/projects/risk", json={"description": "Retail credit"})
        assert updated.status_code == 200
        assert updated.json()["description"] == "Retail credit"
        assert updated.json()["labels"] == {"team": "risk"}
        assert updated.json()["version"] == 2

        assert admin.delete("/api/v1/projects/risk").status_code == 204
        gone = admin.get("/api/v1/projects/risk")
    assert gone.status_code == 404
    assert gone.json()["error"] == {
        "code": "project/not_found",
        "message": "project 'risk' does not exist",
        "details": {"project": "risk"},
    }


def test_the_creator_becomes_admin_and_sees_only_their_projects(
    platform: Platform, make_project: MakeProject
) -> None:
    make_project("someone-elses")
    with platform.client(platform.user("alice")) as alice:
        assert alice.post("/api/v1/projects", json={"name": "alices"}).status_code == 201
        members = alice.get("/api/v1/projects/alices/members").json()["items"]
        listed = alice.get("/api/v1/projects").json()["items"]
    assert [(m["user"], m["role"]) for m in members] == [("alice", "admin")]
    assert [p["name"] for p in listed] == ["alices"]


def test_project_creation_can_be_reserved_to_superusers(platform: Platform) -> None:
    platform.settings.allow_user_project_creation = False
    with platform.client(platform.user("alice")) as alice:
        response = alice.post("/api/v1/projects", json={"name": "nope"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "auth/superuser_required"


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "Bad_Name"},
        {"name": "-leading-dash"},
        {"name": "x" * 64},
        {"name": "ok", "unknown": 1},
        {"name": 12},
        {},
    ],
)
def test_invalid_projects_get_422_naming_the_field(
    platform: Platform, payload: dict[str, object]
) -> None:
    with platform.admin() as admin:
        response = admin.post("/api/v1/projects", json=payload)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "request/invalid"
    assert error["details"]["errors"][0]["loc"][0] == "body"


def test_malformed_json_gets_400(platform: Platform) -> None:
    with platform.admin() as admin:
        response = admin.post(
            "/api/v1/projects", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "request/malformed_json"


def test_duplicate_project_is_409(platform: Platform, make_project: MakeProject) -> None:
    make_project("risk")
    with platform.admin() as admin:
        response = admin.post("/api/v1/projects", json={"name": "risk"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "resource/already_exists"


def test_if_match_guards_against_lost_updates(
    platform: Platform, make_project: MakeProject
) -> None:
    make_project("risk")
    with platform.admin() as admin:
        first = admin.patch(
            "/api/v1/projects/risk", json={"description": "one"}, headers={"If-Match": '"1"'}
        )
        assert first.status_code == 200
        stale = admin.patch(
            "/api/v1/projects/risk", json={"description": "two"}, headers={"If-Match": '"1"'}
        )
        assert stale.status_code == 409
        assert stale.json()["error"]["code"] == "resource/version_conflict"
        assert stale.json()["error"]["details"] == {"expected": 1, "current": 2}
        bad = admin.patch("/api/v1/projects/risk", json={}, headers={"If-Match": "abc"})
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "request/invalid_if_match"
        stale_delete = admin.delete("/api/v1/projects/risk", headers={"If-Match": "1"})
        assert stale_delete.status_code == 409
        assert admin.get("/api/v1/projects/risk").json()["description"] == "one"


def test_projects_paginate_with_a_cursor(platform: Platform, make_project: MakeProject) -> None:
    names = [f"p{i:02d}" for i in range(12)]
    for name in names:
        make_project(name)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    with platform.admin() as admin:
        while True:
            params: dict[str, str | int] = {"limit": 5}
            if cursor:
                params["cursor"] = cursor
            body = admin.get("/api/v1/projects", params=params).json()
            seen += [p["name"] for p in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        bad = admin.get("/api/v1/projects", params={"cursor": "garbage!"})
        too_big = admin.get("/api/v1/projects", params={"limit": 10_000})
    assert seen == names
    assert pages == 3
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "request/invalid_cursor"
    assert too_big.status_code == 422


def test_member_lifecycle_and_last_admin_protection(
    platform: Platform, make_project: MakeProject
) -> None:
    platform.user("alice")
    make_project("risk")
    with platform.admin() as admin:
        added = admin.post(
            "/api/v1/projects/risk/members", json={"user": "alice", "role": "viewer"}
        )
        assert added.status_code == 201
        again = admin.post("/api/v1/projects/risk/members", json={"user": "alice", "role": "admin"})
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "member/already_exists"
        unknown = admin.post(
            "/api/v1/projects/risk/members", json={"user": "zed", "role": "viewer"}
        )
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "user/not_found"
        bad_role = admin.post(
            "/api/v1/projects/risk/members", json={"user": "alice", "role": "owner"}
        )
        assert bad_role.status_code == 422

        promoted = admin.patch("/api/v1/projects/risk/members/alice", json={"role": "admin"})
        assert promoted.json()["role"] == "admin"
        assert promoted.json()["version"] == 2
        # The creator (admin) and alice are both admins; demoting one is fine...
        assert (
            admin.patch("/api/v1/projects/risk/members/admin", json={"role": "viewer"}).status_code
            == 200
        )
        # ...but the last admin can be neither demoted nor removed.
        last = admin.delete("/api/v1/projects/risk/members/alice")
        assert last.status_code == 409
        assert last.json()["error"]["code"] == "member/last_admin"
        demote = admin.patch("/api/v1/projects/risk/members/alice", json={"role": "editor"})
        assert demote.status_code == 409
        assert admin.delete("/api/v1/projects/risk/members/admin").status_code == 204
        missing = admin.delete("/api/v1/projects/risk/members/admin")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "member/not_found"
        members = admin.get("/api/v1/projects/risk/members").json()["items"]
    assert [(m["user"], m["role"]) for m in members] == [("alice", "admin")]


def test_users_are_managed_by_superusers(platform: Platform) -> None:
    alice = platform.client(platform.user("alice"))
    with platform.admin() as admin, alice:
        created = admin.post("/api/v1/users", json={"name": "bob", "email": "bob@example.com"})
        assert created.status_code == 201
        assert admin.post("/api/v1/users", json={"name": "bob"}).status_code == 409
        names = [u["name"] for u in admin.get("/api/v1/users").json()["items"]]
        assert names == ["admin", "alice", "bob"]
        assert alice.get("/api/v1/users/alice").status_code == 200
        for response in (
            alice.get("/api/v1/users"),
            alice.get("/api/v1/users/bob"),
            alice.post("/api/v1/users", json={"name": "carl"}),
            alice.patch("/api/v1/users/alice", json={"is_superuser": True}),
        ):
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "auth/superuser_required"
        self_lockout = admin.patch("/api/v1/users/admin", json={"is_superuser": False})
        assert self_lockout.status_code == 409
        assert self_lockout.json()["error"]["code"] == "user/self_lockout"
        missing = admin.get("/api/v1/users/nobody")
        assert missing.status_code == 404


def test_whoami_lists_effective_roles(platform: Platform, make_project: MakeProject) -> None:
    token = platform.user("alice")
    make_project("risk", {"alice": "editor"})
    make_project("fraud", {"alice": "viewer"})
    make_project("hidden")
    with platform.client(token) as alice:
        me = alice.get("/api/v1/whoami").json()
    assert me == {
        "name": "alice",
        "is_superuser": False,
        "via": "token",
        "projects": {"fraud": "viewer", "risk": "editor"},
    }


def test_unknown_routes_and_methods_use_the_error_shape(platform: Platform) -> None:
    with platform.admin() as admin:
        missing = admin.get("/api/v1/nothing-here")
        wrong = admin.put("/api/v1/projects")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "http/not_found"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "http/method_not_allowed"


def test_oversized_and_non_json_bodies_are_refused(platform: Platform) -> None:
    with platform.admin() as admin:
        huge = admin.post(
            "/api/v1/projects",
            json={"name": "big", "description": "x" * (platform.settings.max_request_bytes + 1)},
        )
        text = admin.post(
            "/api/v1/projects", content=b"name=big", headers={"content-type": "text/plain"}
        )
        listed = admin.get("/api/v1/projects").json()["items"]
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "request/too_large"
    assert text.status_code in (415, 422)
    assert text.json()["error"]["code"] in ("request/unsupported_media_type", "request/invalid")
    assert listed == []


def test_oversized_chunked_bodies_are_refused_too(platform: Platform) -> None:
    limit = platform.settings.max_request_bytes

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "big", "description": "'
        for _ in range(limit // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    with platform.admin() as admin:
        response = admin.post(
            "/api/v1/projects", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["error"]["details"] == {"limit_bytes": limit}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/projects/risk", {"labels": None}, "labels"),
        ("/api/v1/projects/risk", {"description": None}, "description"),
        ("/api/v1/users/admin", {"display_name": None}, "display_name"),
        ("/api/v1/users/admin", {"is_superuser": None}, "is_superuser"),
    ],
)
def test_null_cannot_blank_a_required_field(
    platform: Platform, make_project: MakeProject, path: str, body: dict[str, None], field: str
) -> None:
    make_project("risk")
    with platform.admin() as admin:
        response = admin.patch(path, json=body)
        after = admin.get(path).json()
    assert response.status_code == 422
    assert field in response.json()["error"]["message"]
    assert after[field] is not None


def test_null_clears_a_nullable_field(platform: Platform) -> None:
    with platform.admin() as admin:
        admin.post("/api/v1/users", json={"name": "bob", "email": "bob@example.com"})
        cleared = admin.patch("/api/v1/users/bob", json={"email": None})
    assert cleared.status_code == 200
    assert cleared.json()["email"] is None
