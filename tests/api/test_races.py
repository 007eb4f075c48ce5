"""A write that loses a race with another writer (the deployment controller, say) is a
409 the client can retry, not a 500."""

from __future__ import annotations

import pytest
from sqlalchemy.orm.exc import StaleDataError

from modelyard.services.deployments import DeploymentService
from tests.conftest import MakeProject, Platform

pytestmark = pytest.mark.integration


def test_a_lost_race_is_a_conflict_to_retry(
    platform: Platform, make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project("risk")

    def lose(*_: object) -> None:
        raise StaleDataError("UPDATE statement on table 'deployments' expected 1 row")

    monkeypatch.setattr(DeploymentService, "traffic", lose)
    with platform.admin() as admin:
        answer = admin.put(
            "/api/v1/projects/risk/deployments/fare/traffic", json={"weights": {"primary": 100}}
        )
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "resource/version_conflict"
