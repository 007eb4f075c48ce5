"""Workloads rendered to Kubernetes objects: valid against the pinned schemas, placed
and wired as the cluster settings say, and pinned by golden files so a review shows
exactly what a change of spec changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from modelyard.cli.main import build_app, main
from modelyard.errors import ExitCode, InvalidInputError
from modelyard.pipelines.loader import load_pipeline
from modelyard.runtimes.container import (
    MESSAGE_LIMIT,
    job_from_json,
    job_to_json,
    outcome_from_message,
    outcome_message,
)
from modelyard.runtimes.jobs import Job, Outcome, OutcomeKind
from modelyard.runtimes.kubernetes.objects import Manifest, from_yaml, name
from modelyard.runtimes.kubernetes.platform import render_platform
from modelyard.runtimes.kubernetes.platform_values import load_values
from modelyard.runtimes.kubernetes.rayjobs import rayjob
from modelyard.runtimes.kubernetes.runtime import load_cluster_settings
from modelyard.runtimes.kubernetes.serving import render_deployment
from modelyard.runtimes.kubernetes.settings import ClusterSettings, GangScheduler
from modelyard.runtimes.kubernetes.tasks import task_job
from modelyard.runtimes.kubernetes.training import render_training_job
from modelyard.specs.deployments import DeploymentSpec
from modelyard.specs.resources import Resources
from modelyard.specs.training import TrainingJobSpec
from tests.runtimes.kubernetes.golden import assert_golden
from tests.runtimes.kubernetes.validation import validate, validate_all

SPECS = Path(__file__).parent / "specs"
TAXI = "examples/taxi/pipeline.py:taxi"


def render(*args: str) -> str:
    result = CliRunner().invoke(build_app(), ["render", *args])
    assert result.exit_code == 0, result.output
    return result.output


def fare() -> DeploymentSpec:
    return DeploymentSpec.model_validate(yaml.safe_load((SPECS / "fare.yaml").read_text()))


def digits() -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(yaml.safe_load((SPECS / "digits.yaml").read_text()))


def cluster() -> ClusterSettings:
    data = yaml.safe_load((SPECS / "values.yaml").read_text())["workloads"]
    return ClusterSettings.model_validate(data)


def attempt(**changes: Any) -> Job:
    fields: dict[str, Any] = {
        "target": "modelyard.pipelines.execute:run_attempt",
        "kwargs": {"request": {"task": "flows:clean", "inputs": {}}},
        "env": {"WAREHOUSE_TOKEN": "s3cr3t", "LOG_LEVEL": "debug"},
        "secret_env": ("WAREHOUSE_TOKEN",),
        "resources": Resources(cpu=0.5, memory=2**30),
        "timeout": 600.0,
        "labels": {"project": "fraud", "run": "0192abcdef", "task": "clean", "attempt": "2"},
    }
    return Job(**(fields | changes))


def containers(obj: Manifest) -> list[Manifest]:
    spec = obj["spec"]
    pod = spec.get("template", {}).get("spec") or spec["jobTemplate"]["spec"]["template"]["spec"]
    result: list[Manifest] = pod["containers"]
    return result


# -- task attempts ------------------------------------------------------------------


def test_a_task_attempt_is_a_job_of_one_pod_that_never_retries() -> None:
    job = task_job(attempt(), ClusterSettings())
    validate(job)
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["priorityClassName"] == "modelyard-batch"
    (task,) = pod["containers"]
    assert task["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "1Gi"},
    }
    assert "nodeSelector" not in pod
    assert "tolerations" not in pod


def test_secrets_are_referenced_never_copied_into_the_job() -> None:
    job = task_job(attempt(), ClusterSettings())
    text = json.dumps(job)
    assert "s3cr3t" not in text
    env = {item["name"]: item for item in containers(job)[0]["env"]}
    assert env["WAREHOUSE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "modelyard-project-secrets",
        "key": "WAREHOUSE_TOKEN",
    }
    assert env["LOG_LEVEL"]["value"] == "debug"


def test_a_gpu_task_lands_on_gpu_nodes() -> None:
    job = task_job(attempt(resources=Resources(gpu=2)), ClusterSettings())
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_a_volume_store_is_mounted_and_s3_credentials_are_not_given() -> None:
    settings = ClusterSettings.model_validate(
        {"artifacts": {"url": "/var/lib/modelyard/artifacts", "pvc": "ml-shared"}}
    )
    job = task_job(attempt(), settings)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "artifacts", "persistentVolumeClaim": {"claimName": "ml-shared"}}
    ]
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/var/lib/modelyard"
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(pod)


def test_names_stay_valid_and_distinct_when_long() -> None:
    long = "x" * 80
    first, second = name("task", long, "a"), name("task", long, "b")
    assert len(first) <= 63
    assert len(second) <= 63
    assert first != second
    job = task_job(
        attempt(labels={"project": "fraud", "run": "r", "task": long, "attempt": "1"}),
        ClusterSettings(),
    )
    validate(job)


def test_the_job_travels_to_the_pod_and_its_outcome_back() -> None:
    job = attempt(import_path=("pipelines/fraud.py",))
    assert job_from_json(job_to_json(job)) == Job(
        target=job.target, kwargs=job.kwargs, import_path=job.import_path
    )
    raised = Outcome(
        kind=OutcomeKind.RAISED,
        error_type="builtins.ValueError",
        error_message="bad row",
        traceback="Traceback\n" + "  frame\n" * 2000 + "ValueError: bad row\n",
    )
    message = outcome_message(raised)
    assert len(message.encode()) <= MESSAGE_LIMIT
    back = outcome_from_message(message, 1)
    assert back.kind is OutcomeKind.RAISED
    assert back.traceback is not None
    assert back.traceback.endswith("ValueError: bad row\n")
    crashed = outcome_from_message("Killed\n", 137)  # no report: the last log lines
    assert crashed.kind is OutcomeKind.CRASHED
    assert crashed.exit_code == 137


# -- training ---------------------------------------------------------------------


def test_a_training_job_is_a_trainjob_running_torchrun_on_each_node() -> None:
    (obj,) = render_training_job(digits(), cluster(), "fraud")
    validate(obj)
    assert obj["kind"] == "TrainJob"
    trainer = obj["spec"]["trainer"]
    assert trainer["numNodes"] == 4
    assert trainer["command"][:2] == ["torchrun", "examples/digits_ddp/train.py"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    assert obj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "ml-training"
    (patch,) = obj["spec"]["runtimePatches"]
    node = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = node["template"]["spec"]["template"]["spec"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"  # a GPU job, on GPU nodes
    assert pod["volumes"] == [
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "checkpoints"}}
    ]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "checkpoints", "mountPath": "/checkpoints"}
    ]


def test_the_pytorchjob_option_leaves_restarts_to_the_failure_policy() -> None:
    settings = cluster().model_copy(update={"training_operator": "pytorchjob"})
    (obj,) = render_training_job(digits(), settings, "fraud")
    validate(obj)
    assert obj["metadata"]["name"] == "train-digits"
    replicas = obj["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert replicas["Worker"]["replicas"] == 3
    assert {replicas[role]["restartPolicy"] for role in replicas} == {"Never"}
    assert obj["spec"]["runPolicy"]["backoffLimit"] == 0
    assert obj["spec"]["runPolicy"]["activeDeadlineSeconds"] == 7200
    (again,) = render_training_job(digits(), settings, "fraud", attempt=3)
    assert again["metadata"]["name"] == "train-digits-3"
    pod = replicas["Worker"]["template"]["spec"]
    assert pod["priorityClassName"] == "modelyard-training"
    (worker,) = pod["containers"]
    env = {item["name"]: item.get("value") for item in worker["env"]}
    assert env["MODELYARD_CHECKPOINT_DIR"] == "/checkpoints/digits"
    assert {"name": "checkpoints", "mountPath": "/checkpoints"} in worker["volumeMounts"]


def test_volcano_gangs_a_pytorchjob_in_its_queue() -> None:
    settings = ClusterSettings(training_operator="pytorchjob", gang_scheduler=GangScheduler.VOLCANO)
    (obj,) = render_training_job(digits(), settings, "fraud")
    validate(obj)
    assert obj["spec"]["runPolicy"]["schedulingPolicy"] == {"minAvailable": 4, "queue": "modelyard"}
    pod = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["schedulerName"] == "volcano"
    assert "kueue.x-k8s.io/queue-name" not in obj["metadata"]["labels"]


def test_a_function_entrypoint_runs_through_the_training_worker() -> None:
    spec = TrainingJobSpec(name="churn", entrypoint="train:main", params={"epochs": 3})
    (obj,) = render_training_job(spec, ClusterSettings(), "fraud")
    validate(obj)
    command = obj["spec"]["trainer"]["command"]
    assert command[:4] == ["torchrun", "-m", "modelyard.training.worker", "train:main"]
    assert json.loads(command[4]) == {"epochs": 3}


# -- Ray ---------------------------------------------------------------------------


def test_a_ray_job_gets_an_ephemeral_cluster_that_goes_after_its_ttl() -> None:
    obj = rayjob(
        cluster(),
        project="fraud",
        job_name="taxi",
        entrypoint=["modelyard", "run", TAXI, "--runtime", "ray"],
        workers=3,
        worker_resources=Resources(cpu=4, memory=8 * 2**30),
    )
    validate(obj)
    spec = obj["spec"]
    assert spec["entrypoint"] == f"modelyard run {TAXI} --runtime ray"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 300
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == 3
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["envFrom"] == [{"secretRef": {"name": "modelyard-driver"}}]


def test_a_ray_job_can_go_to_an_existing_cluster() -> None:
    settings = ClusterSettings(ray_cluster="shared-ray")
    obj = rayjob(settings, project="fraud", job_name="taxi", entrypoint=["modelyard", "run", TAXI])
    validate(obj)
    assert obj["spec"]["clusterSelector"] == {"ray.io/cluster": "shared-ray"}
    assert "rayClusterSpec" not in obj["spec"]


# -- deployments -------------------------------------------------------------------


def test_a_deployment_has_per_variant_workloads_and_one_router() -> None:
    objects = render_deployment(fare(), cluster(), "fraud", revision=7)
    assert validate_all(objects) == len(objects)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    models = [
        o for o in objects if o["kind"] == "Deployment" and "router" not in o["metadata"]["name"]
    ]
    assert len(models) == 2
    assert sum(kind == "HorizontalPodAutoscaler" for kind, _ in kinds) == 2
    assert sum(kind == "PodDisruptionBudget" for kind, _ in kinds) == 3
    champion = next(
        o for o in models if o["metadata"]["labels"]["modelyard.io/variant"] == "champion"
    )
    assert "replicas" not in champion["spec"]  # the HPA owns it
    assert champion["metadata"]["labels"]["modelyard.io/revision"] == "7"
    pod = champion["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["command"][:3] == ["modelyard", "serve", "models:/taxi-fare/3"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["priorityClassName"] == "modelyard-serving"
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "modelyard_inflight_requests"
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] == 6


def test_the_router_reads_the_traffic_split_from_its_config_map() -> None:
    objects = render_deployment(fare(), ClusterSettings(), "fraud")
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    routes = json.loads(config["data"]["routes.json"])
    assert routes["weights"] == {"champion": 90, "challenger": 10}
    services = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    for variant in routes["variants"].values():
        (url,) = variant["replicas"]
        assert url.split("//")[1].split(".")[0] in services
        assert ".modelyard-fraud.svc:8080" in url
    router = next(o for o in objects if o["metadata"]["name"] == "fare-router")
    assert router["spec"]["template"]["spec"]["volumes"] == [
        {"name": "routes", "configMap": {"name": "fare-routes"}}
    ]


def test_a_fixed_size_deployment_has_no_autoscaler() -> None:
    spec = DeploymentSpec.model_validate(
        {"name": "fare", "variants": [{"name": "main", "model": "models:/taxi-fare/3"}]}
    )
    objects = render_deployment(spec, ClusterSettings(), "fraud")
    validate_all(objects)
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    model = next(o for o in objects if o["kind"] == "Deployment")
    assert model["spec"]["replicas"] == 1


def test_a_new_model_version_changes_only_its_variant_and_the_routes() -> None:
    def by_name(spec: DeploymentSpec) -> dict[tuple[str, str], Manifest]:
        objects = render_deployment(spec, ClusterSettings(), "fraud")
        return {(o["kind"], o["metadata"]["name"]): o for o in objects}

    champion, challenger = fare().variants
    newer = challenger.model_copy(update={"model": "models:/taxi-fare/5"})
    before = by_name(fare())
    after = by_name(fare().model_copy(update={"variants": (champion, newer)}))
    changed = {key for key in before.keys() & after.keys() if before[key] != after[key]}
    assert changed == {("ConfigMap", "fare-routes")}  # the router is pointed at the new one
    gone, new = before.keys() - after.keys(), after.keys() - before.keys()
    # The challenger's workload is replaced (a new name: both run until traffic moves).
    assert (
        {kind for kind, _ in gone}
        == {kind for kind, _ in new}
        == {
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
        }
    )
    assert all(object_name.startswith("fare-challenger-") for _, object_name in gone | new)


# -- golden files and the command ---------------------------------------------------


def test_render_pipeline_matches_its_golden_file() -> None:
    text = render(
        "pipeline", TAXI, "--project", "fraud", "-f", str(SPECS / "values.yaml"), "-P", "rows=1000"
    )
    objects = from_yaml(text)
    assert validate_all(objects) == len(objects)
    kinds = [o["kind"] for o in objects]
    assert kinds.count("CronJob") == 1  # the pipeline's daily schedule queues its runs
    assert kinds.count("Job") == len(load_pipeline(TAXI).spec(TAXI).nodes)
    assert_golden("pipeline-taxi.yaml", text)


def test_render_pipeline_on_ray_matches_its_golden_file() -> None:
    text = render("pipeline", TAXI, "--project", "fraud", "--runtime", "ray", "-P", "rows=1000")
    ray_job, cron_job = from_yaml(text)
    validate_all([ray_job, cron_job])
    assert ray_job["kind"] == "RayJob"
    assert cron_job["kind"] == "CronJob"
    assert_golden("pipeline-taxi-ray.yaml", text)


@pytest.mark.parametrize("operator", ["trainjob", "pytorchjob"])
def test_render_job_matches_its_golden_file(operator: str) -> None:
    text = render(
        "job",
        str(SPECS / "digits.yaml"),
        "--project",
        "fraud",
        "-f",
        str(SPECS / "values.yaml"),
        "--operator",
        operator,
    )
    validate_all(from_yaml(text))
    assert_golden(f"job-digits-{operator}.yaml", text)


def test_render_deployment_matches_its_golden_file() -> None:
    text = render(
        "deployment", str(SPECS / "fare.yaml"), "--project", "fraud", "--namespace", "ml-serving"
    )
    objects = from_yaml(text)
    validate_all(objects)
    assert {o["metadata"]["namespace"] for o in objects} == {"ml-serving"}
    assert_golden("deployment-fare.yaml", text)


def test_a_bad_spec_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: fare\nvariants: []\n")
    assert main(["render", "deployment", str(bad)]) == ExitCode.USAGE
    error = capsys.readouterr().err
    assert "invalid deployment" in error
    assert "variants" in error
    assert main(["render", "job", str(tmp_path / "missing.yaml")]) == ExitCode.USAGE
    assert "cannot read" in capsys.readouterr().err
    digits_file = str(SPECS / "digits.yaml")
    assert main(["render", "job", digits_file, "--operator", "mpijob"]) == ExitCode.USAGE
    assert "mpijob" in capsys.readouterr().err


def test_the_controllers_place_pods_as_the_platform_values_say(tmp_path: Path) -> None:
    """The workloads ConfigMap of ``render platform`` is what the controllers' runtime
    reads (MODELYARD_KUBERNETES_VALUES): the same settings come back."""
    values = load_values(yaml.safe_load((SPECS / "values.yaml").read_text()))
    (config,) = [
        o
        for o in render_platform(values)
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "modelyard-workloads"
    ]
    mounted = tmp_path / "values.json"
    mounted.write_text(config["data"]["values.json"])
    assert load_cluster_settings(mounted) == values.workloads == cluster()
    bad = tmp_path / "bad.yaml"
    bad.write_text("workloads: {gang_scheduler: slurm}\n")
    with pytest.raises(InvalidInputError, match="gang_scheduler"):
        load_cluster_settings(bad)
