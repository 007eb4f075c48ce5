"""Settings sources and the no-side-effects-at-import rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelyard.config import Settings


def test_defaults_live_under_the_home(tmp_path: Path) -> None:
    settings = Settings()
    assert settings.home == tmp_path / "home"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'home' / 'modelyard.db'}"
    assert settings.resolved_artifacts_url == (tmp_path / "home" / "artifacts").as_uri()
    assert settings.resolved_secret_key_file == tmp_path / "home" / "secret.key"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"


def test_environment_beats_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "modelyard.toml"
    config.write_text('port = 9000\nlog_level = "DEBUG"\ntoken_ttl_days = 7\n')
    monkeypatch.setenv("MODELYARD_CONFIG", str(config))
    monkeypatch.setenv("MODELYARD_PORT", "9100")
    settings = Settings()
    assert settings.port == 9100
    assert settings.log_level == "DEBUG"
    assert settings.token_ttl_days == 7


def test_the_home_config_file_is_read_when_present(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.toml").write_text(
        'oidc_issuer = "https://sso.example"\n'
        "[[oidc_role_mappings]]\n"
        'group = "risk-team"\nproject = "risk"\nrole = "editor"\n'
    )
    settings = Settings()
    assert settings.oidc_enabled
    assert settings.oidc_role_mappings[0].project == "risk"


def test_bad_settings_are_refused_with_the_field_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="port"):
        Settings()
    monkeypatch.setenv("MODELYARD_PORT", "8420")
    monkeypatch.setenv("MODELYARD_OIDC_ROLE_MAPPINGS", '[{"group": "g", "role": "owner"}]')
    with pytest.raises(ValidationError, match="oidc_role_mappings"):
        Settings()


def test_importing_the_package_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import modelyard, modelyard.api, modelyard.cli.main, modelyard.client;"
        "from modelyard.cli.main import build_app; build_app()"
    )
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True, timeout=60)
    assert list(workdir.iterdir()) == []
    assert not (tmp_path / "home").exists()
