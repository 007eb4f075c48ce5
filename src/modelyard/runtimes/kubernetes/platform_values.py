"""The platform's values: what the Helm chart's ``values.yaml`` holds and
``modelyard render platform --values`` reads, with Helm's merge of a values file into the
defaults, and the JSON schema Helm validates values against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from modelyard._version import __version__
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.specs.common import ProjectName, Spec
from modelyard.specs.resources import parse_cpu, parse_memory


class Values(Spec):
    """Helm's spelling: camelCase keys (the snake_case names are accepted too)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ContainerResources(Values):
    """A container's ``resources`` as Kubernetes spells them."""

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class ApiValues(Values):
    replicas: int = Field(default=2, ge=1)
    resources: ContainerResources = ContainerResources(
        requests={"cpu": "250m", "memory": "512Mi"}, limits={"memory": "1Gi"}
    )


class ControllersValues(Values):
    resources: ContainerResources = ContainerResources(
        requests={"cpu": "500m", "memory": "1Gi"}, limits={"memory": "2Gi"}
    )


class SecretKeyRef(Values):
    """A key of an existing Secret: values never hold the secret itself."""

    existing_secret: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]{1,253}$")


class RoleMapping(Values):
    """One identity-provider group mapped to a project role or to the superuser."""

    group: str = Field(min_length=1)
    project: ProjectName | None = None
    role: Literal["viewer", "editor", "admin", "superuser"]


class OidcValues(Values):
    """Single sign-on; off while ``issuer`` is unset. Passed as ``MODELYARD_OIDC_*``."""

    issuer: str | None = None
    audience: str | None = None
    jwks_url: str | None = None
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    role_mappings: list[RoleMapping] = Field(default_factory=list)
    group_pattern: str | None = None


class IngressValues(Values):
    enabled: bool = False
    class_name: str | None = None
    host: str = "modelyard.example.com"
    tls_secret: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class MonitoringValues(Values):
    """Prometheus Operator, Grafana and Prometheus Adapter objects (each needs its
    operator or sidecar installed, so all are off by default)."""

    service_monitor: bool = False
    pod_monitor: bool = False
    prometheus_rule: bool = False
    grafana_dashboard: bool = False
    prometheus_adapter: bool = False
    interval: str = Field(default="30s", pattern=r"^[0-9]+(ms|s|m|h)$")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels on monitoring objects, e.g. the release label the "
        "Prometheus Operator selects them by.",
    )


class NetworkPolicyValues(Values):
    """Default-deny ingress in the platform namespace, then allow the ingress
    controller, Prometheus and the project namespaces' pods to reach the API."""

    enabled: bool = False
    ingress_namespace: str = "ingress-nginx"
    prometheus_namespace: str = "monitoring"


class RbacValues(Values):
    """Whether the controllers may onboard a project namespace on its first use (create
    it, its quota, limits, account and bindings). Off: only ``projects`` exist."""

    manage_project_namespaces: bool = True


class PlatformValues(Values):
    """The platform's Helm values; ``modelyard render platform --values`` reads the same.

    Args:
        namespace: Where the API and the controllers run.
        create_namespace: Render the platform's Namespace (off for
            ``helm install --create-namespace``).
        image: The modelyard image of the API, controllers and migrations.
        database: The Secret holding ``MODELYARD_DATABASE_URL``.
        secret_key: The Secret holding ``MODELYARD_SECRET_KEY``, the Fernet key(s) that
            encrypt project secrets.
        workloads: How workloads run (the Kubernetes runtime's settings).
        projects: Project namespaces to create now, with their quotas.
    """

    namespace: str = Field(default="modelyard", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    create_namespace: bool = True
    image: str = f"modelyard/modelyard:{__version__}"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    api: ApiValues = ApiValues()
    controllers: ControllersValues = ControllersValues()
    database: SecretKeyRef = SecretKeyRef(
        existing_secret="modelyard-database",  # noqa: S106 (a Secret's name)
        key="url",
    )
    secret_key: SecretKeyRef = SecretKeyRef(
        existing_secret="modelyard-secret-key",  # noqa: S106 (a Secret's name)
        key="key",
    )
    oidc: OidcValues = OidcValues()
    ingress: IngressValues = IngressValues()
    monitoring: MonitoringValues = MonitoringValues()
    network_policies: NetworkPolicyValues = NetworkPolicyValues()
    rbac: RbacValues = RbacValues()
    workloads: ClusterSettings = ClusterSettings()
    projects: list[ProjectName] = Field(default_factory=list)


def load_values(data: Mapping[str, Any] | None) -> PlatformValues:
    """Values as Helm sees them: a values file is merged into the defaults key by key
    (mappings merge, everything else replaces), then validated.

    Raises:
        pydantic.ValidationError: naming each offending field by its path.
    """
    defaults = PlatformValues().model_dump(mode="json", by_alias=True)
    return PlatformValues.model_validate(_merge(defaults, dict(data or {})))


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


class _HelmSchema(GenerateJsonSchema):
    """Cores and byte sizes as the specs accept them: a number or a quantity string
    (``"500m"``, ``"2Gi"``), so Helm accepts what the renderer accepts."""

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        function = schema["function"]["function"]
        if function is parse_cpu:
            return _quantity(r"^\s*\d+(\.\d+)?\s*m?\s*$", "number")
        if function is parse_memory:
            return _quantity(r"^\s*\d+(\.\d+)?\s*([KMGT]i|[kMGT])?\s*$", "integer")
        return super().function_before_schema(schema)


def _quantity(pattern: str, number: str) -> JsonSchemaValue:
    return {
        "anyOf": [
            {"type": number, "exclusiveMinimum": 0},
            {"type": "string", "pattern": pattern},
        ]
    }


def values_schema() -> dict[str, Any]:
    """``values.schema.json``: unknown keys and wrong types fail ``helm install``.

    Declared draft-07, which every Helm 3 and 4 validates; pydantic's ``$defs`` are
    plain JSON-pointer references there.
    """
    schema = PlatformValues.model_json_schema(by_alias=True, schema_generator=_HelmSchema)
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema}
