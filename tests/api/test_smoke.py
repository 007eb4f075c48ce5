from __future__ import annotations

from tests.conftest import Platform


def test_whoami_answers_for_the_superuser(platform: Platform) -> None:
    with platform.admin() as admin:
        response = admin.get("/api/v1/whoami")
    assert response.status_code == 200
    assert response.json()["name"] == "admin"
    assert response.json()["is_superuser"] is True
