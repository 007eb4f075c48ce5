"""Secrets: encrypted at rest, never answered, never logged; key rotation."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select

from modelyard.auth.principal import LOCAL_ORIGIN, Principal
from modelyard.auth.secret_box import SecretBox, load_keys
from modelyard.config import Settings
from modelyard.errors import ConfigurationError
from modelyard.services.context import ServiceContext
from modelyard.services.key_rotation import rotate_secret_key
from modelyard.services.secrets import SecretService
from modelyard.store.db import session_factory, transaction
from modelyard.store.models import Secret, User
from tests.conftest import JsonLogs, MakeProject, Platform

pytestmark = pytest.mark.integration

VALUE = "pa55-Wörd-that-must-never-leak"


def _reveal(platform: Platform, settings: Settings, project: str, name: str) -> str:
    with transaction(session_factory(platform.engine)) as session:
        admin = session.scalars(select(User).where(User.name == "admin")).one()
        principal = Principal(user_id=admin.id, name="admin", is_superuser=True, via="local")
        ctx = ServiceContext(session, principal, LOCAL_ORIGIN, settings)
        return SecretService(ctx).reveal(project, name)


def _ciphertexts(platform: Platform) -> list[bytes]:
    with transaction(session_factory(platform.engine)) as session:
        return list(session.scalars(select(Secret.ciphertext)))


def test_values_are_encrypted_at_rest_and_never_returned(
    platform: Platform, make_project: MakeProject, json_logs: JsonLogs
) -> None:
    make_project("risk")
    with platform.admin() as admin:
        responses = [
            admin.put("/api/v1/projects/risk/secrets/DB_PASSWORD", json={"value": VALUE}),
            admin.get("/api/v1/projects/risk/secrets/DB_PASSWORD"),
            admin.get("/api/v1/projects/risk/secrets"),
            admin.put(
                "/api/v1/projects/risk/secrets/DB_PASSWORD",
                json={"value": VALUE, "extra": VALUE},
            ),
            admin.put("/api/v1/projects/risk/secrets/DB_PASSWORD", json={"value": 1}),
            admin.put(
                "/api/v1/projects/risk/secrets/DB_PASSWORD",
                json={"value": VALUE + "x" * 70_000},
            ),
            admin.get("/api/v1/audit"),
        ]
    assert [r.status_code for r in responses] == [201, 200, 200, 422, 422, 422, 200]
    assert responses[1].json()["name"] == "DB_PASSWORD"
    assert "value" not in responses[1].json()
    for response in responses:
        assert VALUE not in response.text
    assert "DB_PASSWORD" in json_logs.text()  # the log did see these requests
    assert VALUE not in json_logs.text()
    stored = _ciphertexts(platform)
    assert len(stored) == 1
    assert VALUE.encode() not in stored[0]
    assert _reveal(platform, platform.settings, "risk", "DB_PASSWORD") == VALUE


def test_put_replaces_and_honours_if_match(platform: Platform, make_project: MakeProject) -> None:
    make_project("risk")
    url = "/api/v1/projects/risk/secrets/TOKEN"
    with platform.admin() as admin:
        assert admin.put(url, json={"value": "v1"}, headers={"If-Match": "1"}).status_code == 409
        assert admin.put(url, json={"value": "v1"}).status_code == 201
        replaced = admin.put(url, json={"value": "v2"}, headers={"If-Match": '"1"'})
        assert replaced.status_code == 200
        assert replaced.json()["version"] == 2
        stale = admin.put(url, json={"value": "v3"}, headers={"If-Match": '"1"'})
        assert stale.status_code == 409
        bad_name = admin.put(
            "/api/v1/projects/risk/secrets/1-starts-with-digit", json={"value": "x"}
        )
        assert bad_name.status_code == 422
        assert admin.delete(url).status_code == 204
        assert admin.get(url).json()["error"]["code"] == "secret/not_found"
    assert _ciphertexts(platform) == []


def test_a_missing_key_is_a_clear_error_and_nothing_is_stored(
    platform: Platform, make_project: MakeProject
) -> None:
    make_project("risk")
    platform.settings.secret_key = None
    with platform.admin() as admin:
        response = admin.put("/api/v1/projects/risk/secrets/X", json={"value": VALUE})
        listed = admin.get("/api/v1/projects/risk/secrets").json()["items"]
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "secrets/key_missing"
    assert "MODELYARD_SECRET_KEY" in error["message"]
    assert listed == []


def test_a_wrong_key_is_a_clear_error(platform: Platform, make_project: MakeProject) -> None:
    make_project("risk")
    with platform.admin() as admin:
        admin.put("/api/v1/projects/risk/secrets/X", json={"value": VALUE})
    wrong_key = SecretStr(Fernet.generate_key().decode())
    wrong = platform.settings.model_copy(update={"secret_key": wrong_key})
    with pytest.raises(ConfigurationError) as raised:
        _reveal(platform, wrong, "risk", "X")
    assert raised.value.code == "secrets/key_mismatch"


def test_rotation_with_a_key_file_reencrypts_every_value(
    platform: Platform, make_project: MakeProject
) -> None:
    make_project("risk")
    make_project("fraud")
    with platform.admin() as admin:
        admin.put("/api/v1/projects/risk/secrets/A", json={"value": "alpha"})
        admin.put("/api/v1/projects/fraud/secrets/B", json={"value": "bravo"})
    old_key = platform.settings.secret_key
    assert old_key is not None
    key_file = platform.settings.home / "secret.key"
    key_file.write_text(old_key.get_secret_value() + "\n")
    file_settings = platform.settings.model_copy(update={"secret_key": None})
    before = _ciphertexts(platform)

    result = rotate_secret_key(file_settings, session_factory(platform.engine))

    assert result.rotated == 2
    assert result.key_file_written
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert load_keys(file_settings) == [result.new_key.encode()]
    after = _ciphertexts(platform)
    assert set(after).isdisjoint(before)
    old_box = SecretBox([old_key.get_secret_value().encode()])
    with pytest.raises(ConfigurationError):
        old_box.decrypt(after[0])
    assert _reveal(platform, file_settings, "risk", "A") == "alpha"
    assert _reveal(platform, file_settings, "fraud", "B") == "bravo"


def test_rotation_with_an_env_key_returns_the_new_key(
    platform: Platform, make_project: MakeProject
) -> None:
    make_project("risk")
    with platform.admin() as admin:
        admin.put("/api/v1/projects/risk/secrets/A", json={"value": "alpha"})
    result = rotate_secret_key(platform.settings, session_factory(platform.engine))
    assert not result.key_file_written
    assert not (platform.settings.home / "secret.key").exists()
    rotated = platform.settings.model_copy(update={"secret_key": SecretStr(result.new_key)})
    assert _reveal(platform, rotated, "risk", "A") == "alpha"
    with platform.admin() as admin:
        events = admin.get("/api/v1/audit").json()["items"]
    assert events[0]["action"] == "secret.rotate_key"
    assert events[0]["details"] == {"rotated": 1}
