"""``modelyard deploy`` against ``modelyard up``: the API records revisions, the server's
deployment controller runs the processes, and refusals are clear."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from modelyard.cli.main import main
from modelyard.config import Settings
from tests.conftest import Platform, start_platform
from tests.output import last_json
from tests.serving.slow_model import save_models

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(
    settings: Settings, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Platform]:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # replicas unpickle the test models
    monkeypatch.setenv("COLUMNS", "250")
    settings.deployment_poll_seconds = 0.25
    settings.stop_deployments_on_exit = True
    server, platform = start_platform(settings, engine, controllers=True)
    with platform.admin() as admin:
        admin.post("/api/v1/projects", json={"name": "risk"}).raise_for_status()
    monkeypatch.setenv("MODELYARD_URL", platform.url)
    monkeypatch.setenv("MODELYARD_TOKEN", platform.admin_token)
    yield platform
    server.stop()


def show(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["deploy", "show", "fare", "-p", "risk", "-o", "json"]) == 0
    detail: dict[str, Any] = json.loads(capsys.readouterr().out)
    return detail


def wait_for(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_deploy_commands_drive_a_deployment_on_the_server(
    served: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = save_models(tmp_path / "models")
    assert (
        main(["deploy", "create", "fare", "--model", models["double"], "-p", "risk", "-o", "json"])
        == 0
    )
    created = last_json(capsys)
    assert created["state"] == "ready"
    url = str(created["endpoint"])
    assert httpx.post(f"{url}/invocations", json={"inputs": {"x": [0.2]}}).json() == {
        "predictions": [0.4]
    }

    # A canary held at its first step, weights set by hand, then rolled back by hand.
    assert main(
        ["deploy", "update", "fare", "--model", models["triple"], "--steps", "10,100",
         "--window", "600", "-p", "risk", "-o", "json"]
    ) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["deploy", "traffic", "fare", "primary=50", "canary=50", "-p", "risk"]) == 0
    capsys.readouterr()
    detail = show(capsys)
    assert detail["spec"]["traffic"]["weights"] == {"primary": 50, "canary": 50}
    assert detail["rollout"]["paused"] is True
    wait_for(
        lambda: any(
            r["variant"] == "canary" and r["state"] == "ready"
            for r in show(capsys)["replica_processes"]
        )
    )
    time.sleep(0.6)
    seen = {
        httpx.post(f"{url}/invocations", json={"inputs": {"x": [0.2]}}).headers[
            "x-modelyard-variant"
        ]
        for _ in range(40)
    }
    assert seen == {"primary", "canary"}
    assert main(["deploy", "rollback", "fare", "--reason", "numbers look off", "-p", "risk"]) == 0
    capsys.readouterr()
    detail = show(capsys)
    assert detail["rollout"] is None
    assert [v["name"] for v in detail["spec"]["variants"]] == ["primary"]
    statuses = {r["number"]: (r["status"], r["reason"]) for r in detail["revisions"]}
    assert statuses[2] == ("rolled_back", "numbers look off")
    assert main(["deploy", "show", "fare", "-p", "risk"]) == 0
    table = capsys.readouterr().out
    assert "revisions" in table
    assert "rolled back" in table

    # Refusals, each with its own code and the state left as it was.
    assert main(["deploy", "promote", "fare", "-p", "risk", "-o", "json"]) != 0
    assert "deployment/no_rollout" in capsys.readouterr().err
    assert main(["deploy", "traffic", "fare", "primary=90", "ghost=10", "-p", "risk"]) != 0
    assert "deployment/invalid_traffic" in capsys.readouterr().err
    assert (
        main(["deploy", "create", "bad", "--model", str(tmp_path / "nowhere"), "-p", "risk"]) != 0
    )
    assert "deployment/model_not_found" in capsys.readouterr().err
    assert (
        main(["deploy", "create", "fare", "--model", models["double"], "-p", "risk", "--no-wait"])
        != 0
    )
    assert "deployment/exists" in capsys.readouterr().err
    assert show(capsys)["revision"] == 4

    # A viewer reads but cannot change.
    viewer = served.user("vera")
    with served.admin() as admin:
        admin.post(
            "/api/v1/projects/risk/members", json={"user": "vera", "role": "viewer"}
        ).raise_for_status()
    with served.client(viewer) as client:
        assert client.get("/api/v1/projects/risk/deployments/fare").status_code == 200
        refused = client.post("/api/v1/projects/risk/deployments/fare/promote")
    assert refused.status_code == 403

    assert main(["deploy", "list", "-p", "risk", "-o", "json"]) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)["items"]] == ["fare"]
    assert main(["deploy", "delete", "fare", "-p", "risk", "-o", "json"]) == 0
    capsys.readouterr()
    assert main(["deploy", "list", "-p", "risk", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == []
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{url}/invocations", json={"inputs": {"x": [0.2]}}, timeout=2)
