"""Settings: ``MODELYARD_`` environment variables, then an optional TOML file, then defaults.

The config file is ``$MODELYARD_CONFIG`` if set, else ``$MODELYARD_HOME/config.toml``
when it exists. Nothing here runs at import; build ``Settings()`` where it is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Role = Literal["viewer", "editor", "admin"]


class OIDCRoleMapping(BaseModel):
    """Maps one identity-provider group to a project role, or to the platform superuser.

    Args:
        group: The group name exactly as the token's groups claim carries it.
        project: The project the role applies to; omit for ``role="superuser"``.
        role: ``viewer``, ``editor``, ``admin`` or ``superuser``.
    """

    group: str
    project: str | None = None
    role: Literal["viewer", "editor", "admin", "superuser"]


class Settings(BaseSettings):
    """Every knob of the platform, with safe embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="MODELYARD_", extra="ignore")

    home: Path = Path(".modelyard")
    database_url: str | None = None
    artifacts_url: str | None = None
    tuning_storage_url: str | None = Field(
        default=None, description="Optuna's study storage (default: SQLite in the home)."
    )

    secret_key: SecretStr | None = Field(
        default=None, description="Fernet key(s), comma-separated, newest first."
    )
    secret_key_file: Path | None = None

    host: str = "127.0.0.1"
    port: int = 8420
    log_level: str = "INFO"
    log_json: bool = True
    graceful_shutdown_seconds: float = 20.0
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)

    token_ttl_days: int = Field(default=90, ge=0, description="0 means tokens never expire.")
    workers: int | None = Field(
        default=None, ge=1, description="Warm worker processes (default: one per core)."
    )
    ray_address: str | None = Field(
        default=None,
        description="Where runs with runtime 'ray' run their tasks: 'auto' or host:port "
        "(a cluster this machine is part of), 'ray://host:10001' (Ray Client); "
        "unset: a local Ray started on first use.",
    )
    platform_namespace: str = Field(
        default="modelyard",
        description="The namespace of the platform's API and controllers on Kubernetes: "
        "each project's namespace binds their ServiceAccounts there.",
    )
    kubernetes_values: Path | None = Field(
        default=None,
        description="The platform's values file; its 'workloads' section places the pods "
        "of runs with runtime 'kubernetes' (namespaces, image, storage, priorities).",
    )
    max_active_runs: int = Field(
        default=4, ge=1, description="Runs the executor in 'modelyard up' drives at once."
    )
    max_active_jobs: int = Field(
        default=1,
        ge=1,
        description="Training jobs the job executor in 'modelyard up' runs at once.",
    )
    scheduler_poll_seconds: float = Field(default=5.0, gt=0)
    executor_poll_seconds: float = Field(default=1.0, gt=0)
    deployment_poll_seconds: float = Field(default=1.0, gt=0)
    stop_deployments_on_exit: bool = Field(
        default=False,
        description="Stop deployments' routers and replicas when the control plane stops "
        "(by default they keep serving and the next start adopts them).",
    )
    allow_user_project_creation: bool = True
    trust_forwarded_for: bool = False

    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    oidc_algorithms: list[str] = ["RS256", "ES256", "PS256"]
    oidc_leeway_seconds: int = 30
    oidc_role_mappings: list[OIDCRoleMapping] = []
    oidc_group_pattern: str | None = Field(
        default=None,
        description="Regex with named groups 'project' and 'role', e.g. "
        r"'^modelyard:(?P<project>[a-z0-9-]+):(?P<role>viewer|editor|admin)$'.",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'modelyard.db'}"

    @property
    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or (self.home / "artifacts").as_uri()

    @property
    def resolved_tuning_storage_url(self) -> str:
        return self.tuning_storage_url or f"sqlite:///{self.home / 'optuna.db'}"

    @property
    def resolved_secret_key_file(self) -> Path:
        return self.secret_key_file or self.home / "secret.key"

    @property
    def mlflow_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def oidc_enabled(self) -> bool:
        return self.oidc_issuer is not None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def _config_file() -> Path | None:
    explicit = os.environ.get("MODELYARD_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    candidate = Path(os.environ.get("MODELYARD_HOME", ".modelyard")).expanduser() / "config.toml"
    return candidate if candidate.is_file() else None
