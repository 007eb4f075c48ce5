"""The platform's objects: valid for Kubernetes 1.33 and the operators' CRDs, equal to
the reviewed golden files, least-privilege RBAC, quotas where they belong, clear errors
on bad values, and the Helm chart rendering the same objects through Helm's engine."""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from modelyard.cli.render_platform import platform, read_values
from modelyard.errors import InvalidInputError
from modelyard.runtimes.kubernetes import observability
from modelyard.runtimes.kubernetes.namespaces import project_namespace
from modelyard.runtimes.kubernetes.objects import Manifest, from_yaml, to_yaml
from modelyard.runtimes.kubernetes.platform import PlatformValues, load_values, render_platform
from modelyard.runtimes.kubernetes.settings import ClusterSettings, Quota
from modelyard.runtimes.kubernetes.training import render_training_job
from modelyard.specs.training import TrainingJobSpec
from tests.runtimes.kubernetes.golden import assert_golden
from tests.runtimes.kubernetes.validation import validate_all

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "modelyard"

FULL_VALUES = textwrap.dedent(
    """\
    namespace: ml-platform
    image: registry.bank.example/modelyard:1.4.2
    imagePullPolicy: Always
    imagePullSecrets: [regcred]
    logLevel: DEBUG
    api:
      replicas: 3
      resources:
        requests: {cpu: "1", memory: 1Gi}
    database:
      existingSecret: pg-modelyard
      key: dsn
    secretKey:
      existingSecret: modelyard-fernet
      key: keys
    oidc:
      issuer: https://sso.bank.example/realms/ml
      audience: modelyard
      groupPattern: '^modelyard:(?P<project>[a-z0-9-]+):(?P<role>viewer|editor|admin)$'
      roleMappings:
        - {group: platform-admins, role: superuser}
        - {group: fraud-analysts, project: fraud, role: viewer}
    ingress:
      enabled: true
      className: nginx
      host: modelyard.bank.example
      tlsSecret: modelyard-tls
      annotations:
        cert-manager.io/cluster-issuer: letsencrypt
    monitoring:
      serviceMonitor: true
      podMonitor: true
      prometheusRule: true
      grafanaDashboard: true
      prometheusAdapter: true
      interval: 15s
      labels: {release: kube-prometheus-stack}
    networkPolicies:
      enabled: true
      ingressNamespace: ingress
      prometheusNamespace: observability
    workloads:
      namespace_prefix: ml-
      tracking_uri: http://mlflow.ml-platform.svc:5000
      artifacts:
        url: s3://ml-artifacts/modelyard
        s3_endpoint: http://minio.storage.svc:9000
      quota:
        cpu: 8
        memory: 32Gi
        gpu: null
      project_quotas:
        fraud:
          cpu: "500m"
          memory: 12Gi
          gpu: 2
          pods: 40
      gang_scheduler: kueue
      queue: ml-training
      queue_capacity: {cpu: 64, memory: 256Gi, gpu: 3}
    projects: [fraud, churn]
    """
)


def _key(obj: Manifest) -> tuple[str, str | None, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace"), meta["name"]


def _by_key(objects: list[Manifest]) -> dict[tuple[str, str | None, str], Manifest]:
    return {_key(obj): obj for obj in objects}


@pytest.fixture
def full_values(tmp_path: Path) -> PlatformValues:
    path = tmp_path / "values.yaml"
    path.write_text(FULL_VALUES)
    return load_values(read_values(path))


def test_the_default_platform_is_valid_kubernetes() -> None:
    objects = render_platform(PlatformValues())

    assert validate_all(objects) == len(objects)
    kinds = Counter(obj["kind"] for obj in objects)
    assert kinds["Deployment"] == 2  # the API and the controllers
    assert kinds["Job"] == kinds["Service"] == kinds["PodDisruptionBudget"] == 1
    assert kinds["PriorityClass"] == 3
    assert "Ingress" not in kinds  # off by default: no host to answer for
    assert "ServiceMonitor" not in kinds  # needs the Prometheus Operator
    assert len({_key(obj) for obj in objects}) == len(objects)


def test_every_object_of_a_full_values_file_is_valid(full_values: PlatformValues) -> None:
    objects = render_platform(full_values)

    assert validate_all(objects) == len(objects)
    kinds = Counter(obj["kind"] for obj in objects)
    for kind in ("Ingress", "ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert kinds[kind] == 1, kind
    assert kinds["NetworkPolicy"] == 3
    assert kinds["ConfigMap"] == 3  # the dashboard, the adapter's rules, the workloads
    assert kinds["Namespace"] == 3  # the platform's and the two projects'
    assert all(
        obj["metadata"].get("namespace") in (None, "ml-platform", "ml-fraud", "ml-churn")
        for obj in objects
    )


def test_the_default_platform_matches_its_golden_file() -> None:
    assert_golden("platform-default.yaml", to_yaml(render_platform(PlatformValues())))


def test_a_full_platform_matches_its_golden_file(full_values: PlatformValues) -> None:
    assert_golden("platform-full.yaml", to_yaml(render_platform(full_values)))


def _rules(objects: list[Manifest], kind: str, name: str) -> list[Manifest]:
    rules: list[Manifest] = _by_key(objects)[(kind, None, name)]["rules"]
    return rules


def test_rbac_grants_named_verbs_on_named_resources_only(full_values: PlatformValues) -> None:
    objects = render_platform(full_values)
    roles = [obj for obj in objects if obj["kind"] in ("ClusterRole", "Role")]
    assert len(roles) == 3
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert not {"escalate", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"]:  # read by key, never listed
                assert not {"list", "watch"} & set(rule["verbs"])
    # Cluster-wide, the controllers only onboard namespaces: workloads are bound per project.
    cluster_wide = _rules(objects, "ClusterRole", "ml-platform-controllers")
    granted = {resource for rule in cluster_wide for resource in rule["resources"]}
    assert not granted & {"pods", "jobs", "deployments", "secrets", "configmaps", "services"}
    (bind,) = [rule for rule in cluster_wide if "bind" in rule["verbs"]]
    assert bind["resourceNames"] == ["ml-platform-workloads", "ml-platform-api-reader"]
    bindings = [obj for obj in objects if obj["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in bindings] == ["ml-platform-controllers"]
    # The API only reads, and only in project namespaces.
    api = _rules(objects, "ClusterRole", "ml-platform-api-reader")
    assert {verb for rule in api for verb in rule["verbs"]} == {"get", "list", "watch"}
    fraud_bindings = {
        obj["metadata"]["name"]: obj["roleRef"]["name"]
        for obj in objects
        if obj["kind"] == "RoleBinding" and obj["metadata"]["namespace"] == "ml-fraud"
    }
    assert fraud_bindings == {
        "modelyard-controllers": "ml-platform-workloads",
        "modelyard-api": "ml-platform-api-reader",
    }


def test_a_kueue_queue_of_the_platforms_admits_its_projects_jobs_up_to_its_capacity(
    full_values: PlatformValues,
) -> None:
    objects = render_platform(full_values)
    by_key = _by_key(objects)
    assert ("ResourceFlavor", None, "modelyard-default") in by_key
    queue = by_key[("ClusterQueue", None, "ml-training")]["spec"]
    (group,) = queue["resourceGroups"]
    assert group["coveredResources"] == ["cpu", "memory", "nvidia.com/gpu"]
    (flavor,) = group["flavors"]
    assert flavor == {
        "name": "modelyard-default",
        "resources": [
            {"name": "cpu", "nominalQuota": "64"},
            {"name": "memory", "nominalQuota": "256Gi"},
            {"name": "nvidia.com/gpu", "nominalQuota": "3"},
        ],
    }
    selector = queue["namespaceSelector"]["matchLabels"]
    settings = full_values.workloads
    job = TrainingJobSpec(name="digits", entrypoint="train.py", workers=2)
    for project in full_values.projects:
        namespace = by_key[("Namespace", None, f"ml-{project}")]
        assert selector.items() <= namespace["metadata"]["labels"].items()
        local = by_key[("LocalQueue", f"ml-{project}", "ml-training")]
        assert local["spec"] == {"clusterQueue": "ml-training"}
        # The queue a project's training job names is that LocalQueue.
        (train,) = render_training_job(job, settings, project)
        assert train["metadata"]["namespace"] == local["metadata"]["namespace"]
        assert train["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "ml-training"
    # A project onboarded later gets its LocalQueue from the controllers.
    assert any(obj["kind"] == "LocalQueue" for obj in project_namespace(settings, "new"))
    cluster_wide = _rules(objects, "ClusterRole", "ml-platform-controllers")
    assert {
        "apiGroups": ["kueue.x-k8s.io"],
        "resources": ["localqueues"],
        "verbs": ["get", "create", "patch"],
    } in cluster_wide
    validate_all(objects)


def test_a_volcano_queue_of_the_platforms_caps_what_it_names() -> None:
    values = load_values(
        {"workloads": {"gang_scheduler": "volcano", "queue": "gpu", "queue_capacity": {"gpu": 3}}}
    )
    objects = render_platform(values)
    queue = _by_key(objects)[("Queue", None, "gpu")]
    assert queue["spec"]["capability"] == {"nvidia.com/gpu": "3"}
    assert not [obj for obj in objects if obj["kind"] in ("LocalQueue", "ClusterQueue")]
    settings = values.workloads.model_copy(update={"training_operator": "pytorchjob"})
    job = TrainingJobSpec(name="digits", entrypoint="train.py", workers=2)
    (train,) = render_training_job(job, settings, "fraud")
    assert train["spec"]["runPolicy"]["schedulingPolicy"]["queue"] == "gpu"
    validate_all(objects)


@pytest.mark.parametrize(
    "workloads", [{}, {"gang_scheduler": "kueue"}, {"queue_capacity": {"cpu": 4}}]
)
def test_without_a_capacity_and_a_gang_scheduler_the_queue_is_the_admins(
    workloads: dict[str, Any],
) -> None:
    objects = render_platform(load_values({"workloads": workloads, "projects": ["fraud"]}))
    kinds = {obj["kind"] for obj in objects}
    assert not kinds & {"ResourceFlavor", "ClusterQueue", "LocalQueue", "Queue"}
    rules = _rules(objects, "ClusterRole", "modelyard-controllers")
    assert not [rule for rule in rules if "localqueues" in rule["resources"]]


@pytest.mark.parametrize("capacity", [{}, {"gpu": 0}])
def test_a_queue_capacity_names_a_resource(capacity: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="at least one of cpu, memory and gpu"):
        load_values({"workloads": {"gang_scheduler": "kueue", "queue_capacity": capacity}})


def test_without_namespace_management_the_controllers_only_read_namespaces() -> None:
    values = load_values({"rbac": {"manageProjectNamespaces": False}})
    rules = _rules(render_platform(values), "ClusterRole", "modelyard-controllers")
    assert rules == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}
    ]


def test_each_project_gets_its_own_quota(full_values: PlatformValues) -> None:
    objects = _by_key(render_platform(full_values))

    fraud = objects[("ResourceQuota", "ml-fraud", "modelyard-quota")]["spec"]["hard"]
    assert fraud == {
        "requests.cpu": "500m",
        "requests.memory": "12Gi",
        "limits.memory": "12Gi",
        "requests.nvidia.com/gpu": "2",
        "pods": "40",
    }
    # churn has the shared quota, where gpu: null means no GPU limit at all.
    churn = objects[("ResourceQuota", "ml-churn", "modelyard-quota")]["spec"]["hard"]
    assert churn == {
        "requests.cpu": "8",
        "requests.memory": "32Gi",
        "limits.memory": "32Gi",
        "pods": "100",
    }
    limits = objects[("LimitRange", "ml-fraud", "modelyard-defaults")]["spec"]["limits"]
    assert limits == [
        {
            "type": "Container",
            "default": {"memory": "2Gi"},
            "defaultRequest": {"cpu": "250m", "memory": "256Mi"},
        }
    ]
    namespace = objects[("Namespace", None, "ml-fraud")]["metadata"]["labels"]
    assert namespace["modelyard.io/project"] == "fraud"
    assert namespace["pod-security.kubernetes.io/enforce"] == "baseline"


def test_a_quota_without_limits_renders_no_resource_quota() -> None:
    settings = ClusterSettings(quota=Quota(cpu=None, memory=None, gpu=None, pods=None))
    objects = project_namespace(settings, "sandbox")
    assert [obj["kind"] for obj in objects] == [
        "Namespace",
        "LimitRange",
        "ServiceAccount",
        "RoleBinding",
        "RoleBinding",
    ]
    assert validate_all(objects) == 5


def test_secrets_reach_the_pods_only_as_references(full_values: PlatformValues) -> None:
    api = _by_key(render_platform(full_values))[("Deployment", "ml-platform", "modelyard-api")]
    env = {item["name"]: item for item in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELYARD_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "pg-modelyard", "key": "dsn"}
    }
    assert env["MODELYARD_SECRET_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "modelyard-fernet", "key": "keys"}
    }
    assert env["MODELYARD_OIDC_ISSUER"]["value"] == "https://sso.bank.example/realms/ml"
    assert yaml.safe_load(env["MODELYARD_OIDC_ROLE_MAPPINGS"]["value"]) == [
        {"group": "platform-admins", "role": "superuser"},
        {"group": "fraud-analysts", "project": "fraud", "role": "viewer"},
    ]


def test_values_never_hold_a_database_password() -> None:
    with pytest.raises(ValueError, match=r"database\.url"):
        load_values({"database": {"url": "postgresql://u:p@db/modelyard"}})


def _render(args: list[str]) -> Any:
    app = typer.Typer()
    app.command()(platform)
    app.command("other")(lambda: None)  # a group, so the command is named as in the CLI
    return CliRunner().invoke(app, ["platform", *args])


def test_the_command_prints_the_objects_of_a_values_file(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(FULL_VALUES)

    result = _render(["--values", str(path)])

    assert result.exit_code == 0, result.output
    assert from_yaml(result.output) == render_platform(load_values(yaml.safe_load(FULL_VALUES)))


def test_the_command_can_put_everything_in_one_namespace(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("projects: [fraud, churn]\n")

    result = _render(["--values", str(path), "--namespace", "team-ml"])

    assert result.exit_code == 0, result.output
    objects = from_yaml(result.output)
    assert {obj["metadata"].get("namespace") for obj in objects} == {None, "team-ml"}
    namespaces = [obj for obj in objects if obj["kind"] == "Namespace"]
    assert [ns["metadata"]["name"] for ns in namespaces] == ["team-ml"]
    assert validate_all(objects) == len(objects)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("ingress: {className: [nginx]}\n", "ingress.className"),
        ("ingress: {hots: a.example}\n", "ingress.hots"),
        (
            "workloads: {project_quotas: {fraud: {cpu: lots}}}\n",
            "workloads.project_quotas.fraud.cpu",
        ),
        ("projects: [Fraud_Team]\n", "projects.0"),
        ("api: {replicas: 0}\n", "api.replicas"),
    ],
)
def test_a_bad_value_is_named_by_its_path(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=rf"invalid values: {field}: ") as caught:
        platform(path)
    assert caught.value.code == "render/invalid"


@pytest.mark.parametrize(
    ("text", "message"),
    [(None, "not found"), ("[a, b]\n", "does not hold a mapping"), ("a: [\n", "cannot read")],
)
def test_an_unreadable_values_file_is_a_clear_error(
    tmp_path: Path, text: str | None, message: str
) -> None:
    path = tmp_path / "values.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        platform(path)


def _helm_values_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "helm_values", ROOT / "scripts" / "helm_values.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_charts_generated_files_are_up_to_date() -> None:
    generated: dict[str, str] = _helm_values_script().generated_files()
    assert {"values.yaml", "values.schema.json"} <= set(generated)
    for relative, text in generated.items():
        assert (CHART / relative).read_text() == text, (
            f"{relative} is stale: run python scripts/helm_values.py"
        )
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert PlatformValues.model_validate(values) == PlatformValues()


def _helm_render(values: dict[str, Any]) -> list[Manifest]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(values))
        rendered = chart.render(values, name="modelyard", namespace="default", is_install=True)
    return [doc for _, text in sorted(rendered.items()) for doc in from_yaml(text)]


def _settings_parsed(objects: list[Manifest]) -> list[Manifest]:
    """The workloads ConfigMap holds JSON that Helm and Python spell differently ("500m"
    or 0.5): compare what the controllers read from it."""
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "modelyard-workloads":
            loaded = json.loads(obj["data"]["values.json"])
            obj["data"]["values.json"] = ClusterSettings.model_validate(loaded["workloads"])
    return objects


# One namespace for everything, artifacts on a volume, no namespace management.
SHARED_VALUES = {
    "namespace": "team-ml",
    "rbac": {"manageProjectNamespaces": False},
    "workloads": {
        "single_namespace": "team-ml",
        "artifacts": {"url": "/mnt/artifacts", "pvc": "artifacts", "mount_path": "/mnt"},
        "project_quotas": {"a": {"memory": 3 * 2**29, "default_request": {"cpu": 1.5}}},
        "gang_scheduler": "volcano",
        "queue_capacity": {"cpu": 16},
    },
    "projects": ["a", "b"],
}


@pytest.mark.parametrize("case", ["default", "full", "shared"])
def test_helm_renders_the_same_objects_as_the_renderer(case: str) -> None:
    values: dict[str, Any] = {
        "default": {},
        "full": yaml.safe_load(FULL_VALUES),
        "shared": SHARED_VALUES,
    }[case]

    expected = _by_key(_settings_parsed(render_platform(load_values(values))))
    rendered = _by_key(_settings_parsed(_helm_render(values)))

    assert sorted(rendered, key=str) == sorted(expected, key=str)
    for key, obj in expected.items():
        assert rendered[key] == obj, key


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"ingress": {"hots": "a.example"}}, "hots"),
        ({"api": {"replicas": "two"}}, "replicas"),
        ({"workloads": {"quota": {"cpu": "lots"}}}, "cpu"),
    ],
)
def test_helm_rejects_values_the_schema_forbids(values: dict[str, Any], problem: str) -> None:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=problem):
        chart.validate_schema(chart.merge_values(values))


def test_helm_accepts_quantities_as_the_renderer_does() -> None:
    import helm_python as helm

    values = {"workloads": {"quota": {"cpu": "500m", "memory": "8Gi"}}}
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(values))
    assert load_values(values).workloads.quota.cpu == 0.5


@pytest.mark.parametrize("case", ["default", "full"])
def test_helm_lint_finds_nothing_to_warn_about(case: str) -> None:
    import helm_python as helm

    values = yaml.safe_load(FULL_VALUES) if case == "full" else None
    report = helm.lint(CHART, values, strict=True, kube_version="v1.33.0")

    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); 2 and above would be a finding.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def _exported_series() -> set[str]:
    """Every series name the platform's processes export."""
    from modelyard.monitoring.metrics import HttpMetrics, PipelineMetrics, ServingMetrics

    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for metrics in (HttpMetrics(), PipelineMetrics(), ServingMetrics())
        for family in metrics.registry.collect()
        for suffix in suffixes.get(family.type, ())
    }


def _queries() -> list[str]:
    rules = observability.prometheus_rules()
    alerts = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = observability.grafana_dashboard()
    targets = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    # Grafana replaces its own variables before Prometheus sees a query.
    return alerts + [expr.replace("$__rate_interval", "5m") for expr in targets]


def test_alerts_and_panels_are_promql_on_series_the_platform_exports() -> None:
    import promql_parser

    exported = _exported_series()
    queries = _queries()
    assert len(queries) >= 14
    for query in queries:
        promql_parser.parse(query)  # raises ValueError on a syntax error
        used = set(re.findall(r"\bmodelyard_[a-z_]+", query))
        assert used or query.startswith("up{"), query
        assert used <= exported, (query, used - exported)
    adapter = observability.adapter_rules()["rules"][0]
    assert adapter["name"]["as"] in exported


def test_the_schema_is_draft_07_and_agrees_with_the_renderer() -> None:
    import json

    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)  # what Helm 3's validator reads
    validator = jsonschema.Draft7Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load(FULL_VALUES))) == []
    assert list(validator.iter_errors(SHARED_VALUES)) == []
    bad = {"api": {"replicas": 0}, "oidc": {"roleMappings": [{"group": "g", "role": "root"}]}}
    problems = {".".join(map(str, error.path)) for error in validator.iter_errors(bad)}
    assert problems == {"api.replicas", "oidc.roleMappings.0.role"}
    with pytest.raises(ValueError, match=r"api\.replicas"):
        load_values({"api": {"replicas": 0}})
