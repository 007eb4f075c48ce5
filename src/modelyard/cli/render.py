"""``modelyard render``: the Kubernetes objects a workload would become, as YAML on
stdout, for GitOps (Argo CD, Flux) and for review; nothing is applied.

    modelyard render pipeline examples/taxi/pipeline.py:taxi -P rows=1000 > taxi.yaml
    modelyard render job train.yaml --operator pytorchjob
    modelyard render deployment fare.yaml --project fraud
    modelyard render platform --values values.yaml
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import BaseModel, ValidationError

from modelyard.cli.common import ProjectOption, invalid_spec
from modelyard.cli.render_platform import parse_values, platform, read_values
from modelyard.cli.runs import DEFAULT_PROJECT, parse_params
from modelyard.errors import InvalidInputError
from modelyard.pipelines.engine import ENTRYPOINT
from modelyard.pipelines.loader import USER_MODULE_PREFIX, load_pipeline
from modelyard.pipelines.runs import PARENT
from modelyard.runtimes.jobs import Job
from modelyard.runtimes.kubernetes.objects import Manifest, to_yaml
from modelyard.runtimes.kubernetes.rayjobs import pipeline_rayjob
from modelyard.runtimes.kubernetes.serving import render_deployment
from modelyard.runtimes.kubernetes.settings import ClusterSettings
from modelyard.runtimes.kubernetes.tasks import schedule_cronjob, task_job
from modelyard.runtimes.kubernetes.training import render_training_job
from modelyard.specs.deployments import DeploymentSpec
from modelyard.specs.pipelines import PipelineSpec
from modelyard.specs.training import TrainingJobSpec

render_app = typer.Typer(
    help="Print the Kubernetes objects a workload would become (nothing is applied).",
    no_args_is_help=True,
)
render_app.command("platform")(platform)

SpecT = TypeVar("SpecT", bound=BaseModel)
ValuesOption = Annotated[
    Path | None,
    typer.Option(
        "--values",
        "-f",
        help="The platform's values file; its 'workloads' section places the workload.",
    ),
]
NamespaceOption = Annotated[
    str | None, typer.Option(help="Put everything in this namespace (default: per project).")
]
API_URL = "http://modelyard-api.modelyard.svc:8420"


def cluster_settings(values: Path | None, namespace: str | None) -> ClusterSettings:
    """The ``workloads`` section of a values file, merged into the defaults as Helm and
    ``render platform`` merge it (defaults without a file)."""
    data = read_values(values) if values is not None else {}
    if namespace is not None:
        workloads = data.get("workloads")
        data = {
            **data,
            "workloads": {
                **(workloads if isinstance(workloads, dict) else {}),
                "single_namespace": namespace,
            },
        }
    return parse_values(data).workloads


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}", code="render/invalid") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InvalidInputError(f"{path} does not hold a {what} mapping", code="render/invalid")
    return loaded


def _read_spec(path: Path, model: type[SpecT], what: str) -> SpecT:
    try:
        return model.model_validate(_read_mapping(path, what))
    except ValidationError as exc:
        raise invalid_spec(what, exc, "render/invalid") from exc


def _emit(objects: list[Manifest]) -> None:
    typer.echo(to_yaml(objects), nl=False)


@render_app.command("pipeline")
def pipeline(
    target: Annotated[str, typer.Argument(help="FILE.py:PIPELINE or MODULE:PIPELINE")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-P", help="key=value (JSON values).")
    ] = None,
    project: ProjectOption = DEFAULT_PROJECT,
    values: ValuesOption = None,
    namespace: NamespaceOption = None,
    runtime: Annotated[
        str, typer.Option(help="kubernetes: a Job per task attempt; ray: one RayJob.")
    ] = "kubernetes",
    api_url: Annotated[str, typer.Option(help="The API a schedule's CronJob calls.")] = API_URL,
) -> None:
    """A pipeline: the Job each task's attempts run as (inputs are resolved at run time)
    and, for a scheduled pipeline, the CronJob that queues its runs; or, with
    ``--runtime ray``, the RayJob that drives a run on an ephemeral Ray cluster."""
    settings = cluster_settings(values, namespace)
    definition = load_pipeline(target)
    spec = definition.spec(target)
    given = parse_params(param)
    params = definition.validate_params(given)
    objects: list[Manifest] = []
    if runtime == "ray":
        args = ["modelyard", "run", target, "--project", project, "--runtime", "ray"]
        for key, value in sorted(given.items()):
            args += ["-P", f"{key}={json.dumps(value)}"]
        objects.append(
            pipeline_rayjob(
                settings, project=project, job_name=spec.name, spec=spec, entrypoint=args
            )
        )
    elif runtime == "kubernetes":
        objects += [task_job(job, settings) for job in attempt_templates(spec, params, project)]
    else:
        raise InvalidInputError(
            f"unknown runtime {runtime!r}; render knows kubernetes and ray",
            code="runtime/unknown",
        )
    if definition.schedule is not None:
        objects.append(
            schedule_cronjob(
                settings,
                project=project,
                pipeline=spec.name,
                target=target,
                schedule=definition.schedule,
                api_url=api_url,
                params=given,
            )
        )
    _emit(objects)


def attempt_templates(spec: PipelineSpec, params: dict[str, Any], project: str) -> list[Job]:
    """The first attempt of every task as the engine would submit it, with each input
    shown as the spec gives it (the engine passes artifact references there)."""
    jobs = []
    pipeline_file = spec.source.rpartition(":")[0]
    for node in spec.nodes:
        options = node.options
        # A pipeline file is imported by path: the image holds it at the same place.
        import_path = (pipeline_file,) if node.task.startswith(USER_MODULE_PREFIX) else ()
        request = {
            "task": node.task,
            "task_name": node.task_name,
            "import_path": list(import_path),
            "inputs": {key: value.model_dump(mode="json") for key, value in node.inputs.items()},
            "params": params,
            "run_id": "rendered",
            "attempt": 1,
            "map_index": PARENT,
        }
        jobs.append(
            Job(
                target=ENTRYPOINT,
                kwargs={"request": request},
                import_path=import_path,
                env={name: "" for name in options.secrets},
                secret_env=tuple(sorted(options.secrets)),
                resources=options.resources,
                timeout=_seconds(options.timeout),
                image=options.env.image,
                labels={"project": project, "run": "rendered", "task": node.id, "attempt": "1"},
            )
        )
    return jobs


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value else None


@render_app.command("job")
def job(
    spec_file: Annotated[Path, typer.Argument(help="A TrainingJobSpec in YAML or JSON.")],
    project: ProjectOption = DEFAULT_PROJECT,
    values: ValuesOption = None,
    namespace: NamespaceOption = None,
    operator: Annotated[
        str | None, typer.Option(help="trainjob or pytorchjob (default: the values' choice).")
    ] = None,
) -> None:
    """A distributed training job: a Kubeflow TrainJob (or PyTorchJob)."""
    settings = cluster_settings(values, namespace)
    if operator is not None:
        if operator not in ("trainjob", "pytorchjob"):
            raise InvalidInputError(
                f"unknown operator {operator!r}: trainjob or pytorchjob", code="render/invalid"
            )
        settings = settings.model_copy(update={"training_operator": operator})
    spec = _read_spec(spec_file, TrainingJobSpec, "training job")
    _emit(render_training_job(spec, settings, project))


@render_app.command("deployment")
def deployment(
    spec_file: Annotated[Path, typer.Argument(help="A DeploymentSpec in YAML or JSON.")],
    project: ProjectOption = DEFAULT_PROJECT,
    values: ValuesOption = None,
    namespace: NamespaceOption = None,
    revision: Annotated[int, typer.Option(min=1, help="The revision to label.")] = 1,
) -> None:
    """A deployment: per variant a Deployment, Service, HPA and PDB; the router."""
    settings = cluster_settings(values, namespace)
    spec = _read_spec(spec_file, DeploymentSpec, "deployment")
    _emit(render_deployment(spec, settings, project, revision))
