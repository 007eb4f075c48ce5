"""deploy: endpoints with canary, blue-green and shadow rollouts, on this machine's store
or on a server (MODELYARD_URL); the deployment controller in ``modelyard up`` runs them.
Also ``modelyard router``, the process the controller starts in front of replicas."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm.exc import StaleDataError

from modelyard.auth.principal import LOCAL_ORIGIN, Principal
from modelyard.cli.admin import prepare_home
from modelyard.cli.common import ProjectOption, invalid_spec
from modelyard.cli.output import OutputFormat, OutputOption, console, emit_message
from modelyard.cli.runs import DEFAULT_PROJECT, project_id_for, remote_client
from modelyard.client import ModelyardClient
from modelyard.config import Settings
from modelyard.errors import ConflictError, InvalidInputError, ServiceUnavailableError
from modelyard.services.context import ServiceContext
from modelyard.services.deployments import DeploymentService, live_stats
from modelyard.serving import deployments as deploys
from modelyard.specs.deployments import (
    BatchingSettings,
    DeploymentDetail,
    DeploymentOut,
    DeploymentSpec,
    DeploymentUpdate,
    RollbackRequest,
    RolloutPolicy,
    Scaling,
    TrafficChange,
    Variant,
)
from modelyard.store.db import opened_engine, session_factory, transaction

deploy_app = typer.Typer(
    help="Deployments: endpoints with canary, blue-green and shadow rollouts "
    "(the controller in 'modelyard up' runs them).",
    no_args_is_help=True,
)

T = TypeVar("T")
RACE_ATTEMPTS = 3
LOCAL_PRINCIPAL = Principal(user_id="local", name="local", is_superuser=True, via="local")
NameArgument = Annotated[str, typer.Argument(help="The deployment's name.")]
WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Wait until it is ready (or settled).")
]
TimeoutOption = Annotated[float, typer.Option(min=1, help="Seconds to wait at most.")]


def _act(
    project: str,
    remote: Callable[[ModelyardClient], T],
    local: Callable[[DeploymentService, ServiceContext], T],
) -> T:
    """Do one thing on the server (MODELYARD_URL) or in this machine's store; a change
    that lost a race with the controller's own write of the deployment is tried again."""
    for attempt in range(RACE_ATTEMPTS):
        try:
            return _act_once(project, remote, local)
        except StaleDataError:
            pass
        except ConflictError as exc:
            if exc.code != "resource/version_conflict" or attempt == RACE_ATTEMPTS - 1:
                raise
        time.sleep(0.2 * (attempt + 1))
    raise ConflictError(
        "the deployment kept changing under this command; try again",
        code="resource/version_conflict",
    )


def _act_once(
    project: str,
    remote: Callable[[ModelyardClient], T],
    local: Callable[[DeploymentService, ServiceContext], T],
) -> T:
    api = remote_client()
    if api is not None:
        with api:
            return remote(api)
    settings = Settings()
    prepare_home(settings)
    with opened_engine(settings.resolved_database_url) as engine:
        sessions = session_factory(engine)
        project_id_for(sessions, project, create=project == DEFAULT_PROJECT)
        with transaction(sessions) as session:
            ctx = ServiceContext(session, LOCAL_PRINCIPAL, LOCAL_ORIGIN, settings)
            return local(DeploymentService(ctx), ctx)


def _detail(project: str, name: str, window: float = 60.0) -> DeploymentDetail:
    def here(service: DeploymentService, ctx: ServiceContext) -> DeploymentDetail:
        deployment = service.get(project, name)
        return deploys.deployment_detail(ctx.session, deployment, live_stats(deployment, window))

    return _act(project, lambda api: api.get_deployment(project, name, window=window), here)


def _out(service_call: Callable[[DeploymentService], Any]) -> Callable[..., DeploymentOut]:
    def local(service: DeploymentService, ctx: ServiceContext) -> DeploymentOut:
        return deploys.deployment_out(ctx.session, service_call(service))

    return local


# -- commands ---------------------------------------------------------------------------


@deploy_app.command("create")
def create(
    name: NameArgument,
    model: Annotated[
        str | None, typer.Option(help="models:/name@alias, models:/name/3, runs:/... or a folder.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A DeploymentSpec in YAML or JSON.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1024, max=65535, help="The router's port.")
    ] = None,
    min_replicas: Annotated[int, typer.Option(min=0)] = 1,
    max_replicas: Annotated[int, typer.Option(min=1)] = 1,
    target_inflight: Annotated[
        float, typer.Option(min=0.1, help="In-flight requests per replica to aim at.")
    ] = 8.0,
    max_batch_size: Annotated[int, typer.Option(min=1)] = 64,
    max_latency_ms: Annotated[float, typer.Option(min=0)] = 0.0,
    log_payloads: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Deploy a model behind an endpoint (revision 1)."""
    spec = _spec(
        name,
        model,
        file,
        min_replicas,
        max_replicas,
        target_inflight,
        max_batch_size,
        max_latency_ms,
        log_payloads,
    )
    out = _act(
        project,
        lambda api: api.create_deployment(project, spec, port=port),
        _out(lambda service: service.create(project, spec, port)),
    )
    _settle(project, out, wait, timeout, output, "created")


def _spec(
    name: str,
    model: str | None,
    file: Path | None,
    min_replicas: int,
    max_replicas: int,
    target_inflight: float,
    max_batch_size: int,
    max_latency_ms: float,
    log_payloads: float,
) -> DeploymentSpec:
    try:
        if file is not None:
            data = yaml.safe_load(file.read_text())
            if not isinstance(data, dict):
                raise InvalidInputError(
                    f"{file} does not hold a deployment spec (a mapping)", code="deployment/invalid"
                )
            return DeploymentSpec.model_validate({"name": name, **data})
        if model is None:
            raise InvalidInputError("give --model URI or --file SPEC", code="deployment/invalid")
        return DeploymentSpec(
            name=name,
            variants=(Variant(name=deploys.PRIMARY, model=model),),
            scaling=Scaling(
                min_replicas=min_replicas,
                max_replicas=max_replicas,
                target_inflight=target_inflight,
            ),
            batching=BatchingSettings(max_batch_size=max_batch_size, max_latency_ms=max_latency_ms),
            log_payloads=log_payloads,
        )
    except ValidationError as exc:
        raise invalid_spec("deployment", exc, "deployment/invalid") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"cannot read {file}: {exc}", code="deployment/invalid") from exc


@deploy_app.command("update")
def update(
    name: NameArgument,
    model: Annotated[str | None, typer.Option(help="A new model version to roll out.")] = None,
    strategy: Annotated[
        str,
        typer.Option(help="canary (stepwise, judged), blue-green (switch on promote) or replace."),
    ] = "canary",
    steps: Annotated[
        str | None, typer.Option(help="Canary steps in percent, e.g. 10,50,100.")
    ] = None,
    window: Annotated[float | None, typer.Option(min=1, help="Seconds per canary step.")] = None,
    min_requests: Annotated[int | None, typer.Option(min=1, help="Requests a step needs.")] = None,
    max_error_rate_increase: Annotated[float | None, typer.Option(min=0, max=1)] = None,
    max_p99_ratio: Annotated[float | None, typer.Option(min=1)] = None,
    shadow: Annotated[str | None, typer.Option(help="A model to mirror traffic to.")] = None,
    no_shadow: Annotated[bool, typer.Option("--no-shadow", help="Stop mirroring.")] = False,
    shadow_percent: Annotated[int | None, typer.Option(min=1, max=100)] = None,
    min_replicas: Annotated[int | None, typer.Option(min=0)] = None,
    max_replicas: Annotated[int | None, typer.Option(min=1)] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the rollout to its end.")
    ] = False,
    timeout: TimeoutOption = 900.0,
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Roll out a new model (a canary by default), mirror traffic to a shadow, or change
    settings; every change is a new revision."""
    try:
        current = _detail(project, name).spec
        change = DeploymentUpdate(
            model=model,
            strategy=strategy,
            shadow="" if no_shadow else shadow,
            shadow_percent=shadow_percent,
            rollout=_rollout(
                current.rollout, steps, window, min_requests, max_error_rate_increase, max_p99_ratio
            ),
            scaling=_scaling(current.scaling, min_replicas, max_replicas),
        )
    except ValidationError as exc:
        raise invalid_spec("deployment update", exc, "deployment/invalid") from exc
    out = _act(
        project,
        lambda api: api.update_deployment(project, name, change),
        _out(lambda service: service.update(project, name, change)),
    )
    _settle(project, out, wait, timeout, output, "updated")


def _rollout(
    current: RolloutPolicy,
    steps: str | None,
    window: float | None,
    min_requests: int | None,
    max_error_rate_increase: float | None,
    max_p99_ratio: float | None,
) -> RolloutPolicy | None:
    given: dict[str, Any] = {
        "steps": tuple(int(s) for s in steps.split(",")) if steps else None,
        "window": timedelta(seconds=window) if window else None,
        "min_requests": min_requests,
        "max_error_rate_increase": max_error_rate_increase,
        "max_p99_ratio": max_p99_ratio,
    }
    given = {k: v for k, v in given.items() if v is not None}
    return RolloutPolicy.model_validate({**current.model_dump(), **given}) if given else None


def _scaling(current: Scaling, low: int | None, high: int | None) -> Scaling | None:
    given = {k: v for k, v in {"min_replicas": low, "max_replicas": high}.items() if v is not None}
    return Scaling.model_validate({**current.model_dump(), **given}) if given else None


@deploy_app.command("traffic")
def traffic(
    name: NameArgument,
    weights: Annotated[list[str], typer.Argument(help="variant=percent ..., adding up to 100.")],
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Set the split by hand (an automatic rollout pauses where it is)."""
    split: dict[str, int] = {}
    for pair in weights:
        variant, sep, percent = pair.partition("=")
        if not sep or not percent.strip().isdigit():
            raise InvalidInputError(
                f"{pair!r} is not variant=percent", code="deployment/invalid_traffic"
            )
        split[variant.strip()] = int(percent)
    change = TrafficChange(weights=split)
    out = _act(
        project,
        lambda api: api.set_traffic(project, name, change),
        _out(lambda service: service.traffic(project, name, change)),
    )
    _settle(project, out, False, 0, output, "traffic set")


@deploy_app.command("promote")
def promote(
    name: NameArgument,
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Finish the rollout in progress: the candidate takes all the traffic."""
    out = _act(
        project,
        lambda api: api.promote_deployment(project, name),
        _out(lambda service: service.promote(project, name)),
    )
    _settle(project, out, False, 0, output, "promoted")


@deploy_app.command("rollback")
def rollback(
    name: NameArgument,
    to: Annotated[int | None, typer.Option("--to", min=1, help="A revision to return to.")] = None,
    reason: Annotated[str, typer.Option(help="Recorded on the revision.")] = "",
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Abort the rollout in progress, or return to an earlier revision."""
    request = RollbackRequest(revision=to, reason=reason)
    out = _act(
        project,
        lambda api: api.rollback_deployment(project, name, request),
        _out(lambda service: service.rollback(project, name, request)),
    )
    _settle(project, out, False, 0, output, "rolled back")


@deploy_app.command("delete")
def delete(
    name: NameArgument,
    wait: WaitOption = True,
    timeout: TimeoutOption = 120.0,
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Stop the deployment's router and replicas and forget it."""
    _act(
        project,
        lambda api: api.delete_deployment(project, name),
        _out(lambda service: service.delete(project, name)),
    )
    if wait:
        deadline = time.monotonic() + timeout
        with console.status(f"stopping {name}"):
            while time.monotonic() < deadline:
                if not any(d.name == name for d in _list(project)):
                    break
                time.sleep(0.5)
            else:
                raise ServiceUnavailableError(
                    f"{name} is still being deleted after {timeout:g} s; "
                    "is 'modelyard up' running?",
                    code="deployment/not_settled",
                )
    emit_message(f"deployment {name} deleted", output, deployment=name)


def _list(project: str) -> list[DeploymentOut]:
    def here(service: DeploymentService, ctx: ServiceContext) -> list[DeploymentOut]:
        return [deploys.deployment_out(ctx.session, d) for d in service.list(project)]

    return _act(project, lambda api: api.list_deployments(project), here)


@deploy_app.command("list")
def list_(
    project: ProjectOption = DEFAULT_PROJECT, output: OutputOption = OutputFormat.table
) -> None:
    """The project's deployments."""
    items = _list(project)
    if output is OutputFormat.json:
        typer.echo(json.dumps({"items": [d.model_dump(mode="json") for d in items]}, indent=2))
        return
    table = Table(title=f"deployments of {project}")
    for column in ("name", "state", "revision", "endpoint", "traffic", "replicas", "reason"):
        table.add_column(column)
    for d in items:
        split = ", ".join(f"{n} {w}%" for n, w in d.spec.routed.weights.items())
        replicas = ", ".join(f"{n} {c}" for n, c in d.replicas.items())
        table.add_row(d.name, d.state, str(d.revision), d.endpoint or "", split, replicas, d.reason)
    console.print(table)


@deploy_app.command("show")
def show(
    name: NameArgument,
    watch: Annotated[bool, typer.Option(help="Refresh every second until Ctrl-C.")] = False,
    window: Annotated[float, typer.Option(min=1, help="Seconds of live statistics.")] = 60.0,
    project: ProjectOption = DEFAULT_PROJECT,
    output: OutputOption = OutputFormat.table,
) -> None:
    """The deployment: variants, live traffic, replicas, rollout and revisions."""
    detail = _detail(project, name, window)
    if output is OutputFormat.json:
        typer.echo(json.dumps(detail.model_dump(mode="json"), indent=2))
        return
    if not watch:
        console.print(view(detail))
        return
    with Live(view(detail), console=console, refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(1.0)
                live.update(view(_detail(project, name, window)))
        except KeyboardInterrupt:
            pass


def view(detail: DeploymentDetail) -> Group:
    """A deployment as a person reads it: state, variants with live numbers, revisions."""
    spec = detail.spec
    head = Text.assemble(
        (detail.name, "bold"),
        f"  {detail.state}",
        f"  revision {detail.revision}  ",
        (detail.endpoint or "", "cyan"),
        f"\n{detail.reason}" if detail.reason else "",
    )
    live = detail.live.get("variants", {})
    variants = Table(title="variants (last minute)", title_justify="left")
    for column in (
        "variant",
        "model",
        "traffic",
        "replicas",
        "requests",
        "errors",
        "p50 ms",
        "p99 ms",
        "in flight",
    ):
        variants.add_column(
            column, justify="right" if column not in ("variant", "model") else "left"
        )
    ready: dict[str, int] = {}
    for replica in detail.replica_processes:
        if replica.state == "ready":
            ready[replica.variant] = ready.get(replica.variant, 0) + 1
    for variant in spec.variants:
        seen = live.get(variant.name, {})
        share = (
            "shadow"
            if variant.name == spec.routed.shadow
            else f"{spec.routed.weights.get(variant.name, 0)}%"
        )
        variants.add_row(
            variant.name,
            variant.model,
            share,
            f"{ready.get(variant.name, 0)}/{detail.replicas.get(variant.name, 0)}",
            str(seen.get("requests", 0)),
            str(seen.get("errors", 0)),
            f"{seen.get('p50_ms', 0):.1f}",
            f"{seen.get('p99_ms', 0):.1f}",
            str(seen.get("inflight", 0)),
        )
    parts: list[Any] = [head, variants]
    if detail.rollout is not None:
        r = detail.rollout
        steps = spec.rollout.steps
        where = (
            "paused"
            if r.paused
            else f"step {r.step + 1} of {len(steps)} ({steps[min(r.step, len(steps) - 1)]}%)"
        )
        if r.strategy == "blue-green":
            where = "waiting for 'modelyard deploy promote'"
        parts.append(
            Text(f"rollout: {r.strategy} of {r.candidate!r} against {r.baseline!r}, {where}")
        )
    shadow = detail.live.get("shadow")
    if shadow:
        parts.append(
            Text(
                f"shadow: {shadow['requests']} mirrored, {shadow['agree']} agree, "
                f"{shadow['disagree']} disagree, {shadow['errors']} errors, "
                f"{shadow['dropped']} dropped, p99 {shadow['p99_ms']:.1f} ms"
            )
        )
    revisions = Table(title="revisions", title_justify="left")
    for column in ("#", "change", "status", "reason", "by", "at"):
        revisions.add_column(column)
    for revision in detail.revisions:
        revisions.add_row(
            str(revision.number),
            revision.change,
            revision.status,
            revision.reason,
            revision.created_by or "controller",
            revision.created_at.strftime("%H:%M:%S"),
        )
    parts.append(revisions)
    return Group(*parts)


def _settle(
    project: str,
    out: DeploymentOut,
    wait: bool,
    timeout: float,
    output: OutputFormat,
    verb: str,
) -> None:
    """Print the outcome; with ``wait``, follow it until ready and no rollout remains."""
    if wait:
        deadline = time.monotonic() + timeout
        detail = _detail(project, out.name)
        with Live(
            view(detail),
            console=console,
            refresh_per_second=2,
            transient=output is OutputFormat.json,
        ) as live:
            while detail.state != deploys.READY or detail.rollout is not None:
                if detail.state == deploys.FAILED:
                    break
                if time.monotonic() > deadline:
                    raise ServiceUnavailableError(
                        f"{out.name} is not settled after {timeout:g} s ({detail.state}: "
                        f"{detail.reason}); is 'modelyard up' running?",
                        code="deployment/not_settled",
                    )
                time.sleep(1.0)
                detail = _detail(project, out.name)
                live.update(view(detail))
        out = detail
    emit_message(
        f"deployment {out.name} {verb}: {out.state} at revision {out.revision}, {out.endpoint}",
        output,
        deployment=out.name,
        state=out.state,
        reason=out.reason,
        revision=out.revision,
        endpoint=out.endpoint,
    )


def router(
    routes: Annotated[Path, typer.Option(help="The routes file the controller writes.")],
    port: Annotated[int, typer.Option(min=1, max=65535)],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    log_shadows: Annotated[bool, typer.Option(help="Log shadow comparisons to Parquet.")] = True,
) -> None:
    """Run a deployment's router (the deployment controller starts it)."""
    import uvicorn

    from modelyard.serving.payloads import PayloadLogger
    from modelyard.serving.router import Router, create_router_app

    settings = Settings()
    payloads = PayloadLogger(settings.resolved_artifacts_url, sample=1.0) if log_shadows else None
    app = create_router_app(Router(routes, payloads=payloads))
    gc.collect()
    gc.freeze()  # the imported libraries are never garbage: keep full collections short
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )
