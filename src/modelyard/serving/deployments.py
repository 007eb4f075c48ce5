"""Deployment changes as revisions: what the API, the CLI and the controller share.

Every change of a deployment's spec (created, a canary started, advanced, promoted or
rolled back, traffic set by hand, settings changed) is a new immutable revision; the
last ``KEPT_REVISIONS`` are kept so that any of them can be rolled back to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from modelyard.errors import ConflictError, InvalidInputError
from modelyard.serving.models import REGISTERED_URI, ModelLoadError, identity
from modelyard.serving.rollout import Action, VariantStats, judge
from modelyard.specs.deployments import (
    DeploymentDetail,
    DeploymentOut,
    DeploymentSpec,
    ReplicaOut,
    RevisionOut,
    RolloutState,
    Variant,
)
from modelyard.store.models import Deployment, DeploymentRevision, Replica

logger = logging.getLogger(__name__)

KEPT_REVISIONS = 10

# Deployment states.
PROGRESSING = "progressing"  # replicas starting, a rollout in progress
READY = "ready"  # every variant that gets traffic has ready replicas
FAILED = "failed"  # a variant's replicas keep failing to start
DELETING = "deleting"

# Revision statuses.
ACTIVE = "active"
SUPERSEDED = "superseded"
ROLLED_BACK = "rolled_back"

PRIMARY = "primary"
CANARY = "canary"
SHADOW = "shadow"


def pinned_model(uri: str, tracking_uri: str | None) -> str:
    """``uri`` with an alias or "latest" resolved to a version, so a revision always
    names a fixed model; ``runs:/`` URIs and folders are fixed already.

    Raises:
        InvalidInputError: no such model, version or alias, or no such folder.
    """
    registered = REGISTERED_URI.match(uri)
    try:
        name, version = identity(uri, None, tracking_uri)
    except ModelLoadError as exc:
        raise InvalidInputError(str(exc), code="deployment/model_not_found") from exc
    if registered is None:
        if not uri.startswith("runs:/") and not Path(uri).is_absolute():
            return str(Path(uri).resolve())
        return uri
    return f"models:/{name}/{version}"


def model_version(uri: str) -> str:
    """The version a pinned URI names, as the router and ``show`` print it."""
    registered = REGISTERED_URI.match(uri)
    if registered is not None and registered["version"]:
        return registered["version"]
    if uri.startswith("runs:/"):
        return uri.removeprefix("runs:/").partition("/")[0][:8]
    return Path(uri).name


def spec_of(revision: DeploymentRevision) -> DeploymentSpec:
    return DeploymentSpec.model_validate(revision.spec)


def current_revision(session: Session, deployment: Deployment) -> DeploymentRevision:
    found = session.scalar(
        select(DeploymentRevision).where(
            DeploymentRevision.deployment_id == deployment.id,
            DeploymentRevision.number == deployment.revision,
        )
    )
    assert found is not None, f"deployment {deployment.name} lost revision {deployment.revision}"
    return found


def revisions_of(session: Session, deployment_id: str) -> list[DeploymentRevision]:
    return list(
        session.scalars(
            select(DeploymentRevision)
            .where(DeploymentRevision.deployment_id == deployment_id)
            .order_by(DeploymentRevision.number.desc())
        )
    )


def add_revision(
    session: Session,
    deployment: Deployment,
    spec: DeploymentSpec,
    change: str,
    created_by: str | None,
    *,
    previous_status: str = SUPERSEDED,
    previous_reason: str = "",
) -> DeploymentRevision:
    """Make ``spec`` the deployment's new current revision; the previous one gets
    ``previous_status``; revisions beyond the kept number are removed."""
    if deployment.revision:
        previous = current_revision(session, deployment)
        previous.status = previous_status
        previous.reason = previous_reason or previous.reason
    number = deployment.revision + 1
    revision = DeploymentRevision(
        deployment_id=deployment.id,
        number=number,
        spec=spec.model_dump(mode="json"),
        change=change,
        status=ACTIVE,
        created_by=created_by,
    )
    session.add(revision)
    deployment.revision = number
    session.execute(
        delete(DeploymentRevision).where(
            DeploymentRevision.deployment_id == deployment.id,
            DeploymentRevision.number <= number - KEPT_REVISIONS,
        )
    )
    return revision


def rollout_of(deployment: Deployment) -> RolloutState | None:
    return RolloutState.model_validate(deployment.rollout) if deployment.rollout else None


def start_rollout(
    session: Session,
    deployment: Deployment,
    spec: DeploymentSpec,
    model: str,
    strategy: str,
    created_by: str | None,
) -> DeploymentRevision:
    """Add ``model`` as the candidate of a canary or blue-green rollout."""
    if deployment.rollout:
        candidate = deployment.rollout.get("candidate")
        raise ConflictError(
            f"deployment {deployment.name!r} is already rolling out {candidate!r}; "
            "promote or roll it back first",
            code="deployment/rollout_in_progress",
        )
    baseline = spec.routed.primary
    if spec.variant(baseline).model == model:
        raise ConflictError(
            f"deployment {deployment.name!r} already serves {model} as {baseline!r}",
            code="deployment/same_model",
        )
    candidate = CANARY if strategy == "canary" else "candidate"
    if candidate in {v.name for v in spec.variants}:
        raise ConflictError(
            f"deployment {deployment.name!r} already has a variant {candidate!r}",
            code="deployment/variant_exists",
        )
    first = spec.rollout.steps[0] if strategy == "canary" else 0
    weights = _shifted(spec.routed.weights, baseline, candidate, first)
    new_spec = revised(
        spec, variants=(*spec.variants, Variant(name=candidate, model=model)), weights=weights
    )
    revision = add_revision(
        session,
        deployment,
        new_spec,
        f"{strategy} {model}: {first}%",
        created_by,
    )
    deployment.rollout = RolloutState(
        candidate=candidate,
        baseline=baseline,
        strategy="canary" if strategy == "canary" else "blue-green",
        step=0,
        step_started_at=datetime.now(UTC),
        revision=revision.number,
    ).model_dump(mode="json")
    replicas = dict(deployment.replicas)
    start = replicas.get(baseline, 1) if strategy != "canary" else max(1, spec.scaling.min_replicas)
    replicas[candidate] = max(1, start)
    deployment.replicas = replicas
    deployment.state = PROGRESSING
    deployment.reason = f"rolling out {model} as {candidate!r}"
    return revision


def advance(
    session: Session, deployment: Deployment, spec: DeploymentSpec, reason: str
) -> DeploymentRevision:
    """Move the canary to its next step, or promote it after the last."""
    state = rollout_of(deployment)
    assert state is not None
    step = state.step + 1
    percent = spec.rollout.steps[min(step, len(spec.rollout.steps) - 1)]
    if percent == 100:
        return promote(session, deployment, spec, f"canary promoted: {reason}", None)
    revision = add_revision(
        session,
        deployment,
        revised(
            spec, weights=_shifted(spec.routed.weights, state.baseline, state.candidate, percent)
        ),
        f"canary at {percent}%: {reason}",
        None,
    )
    deployment.rollout = state.model_copy(
        update={"step": step, "step_started_at": datetime.now(UTC)}
    ).model_dump(mode="json")
    return revision


def promote(
    session: Session,
    deployment: Deployment,
    spec: DeploymentSpec,
    change: str,
    created_by: str | None,
) -> DeploymentRevision:
    """Send everything to the candidate, which takes the baseline's name; the
    baseline's replicas stop once the routes no longer name them."""
    state = rollout_of(deployment)
    if state is None:
        raise ConflictError(
            f"deployment {deployment.name!r} has no rollout to promote",
            code="deployment/no_rollout",
        )
    candidate = spec.variant(state.candidate)
    variants = tuple(
        Variant(name=state.baseline, model=candidate.model) if v.name == state.baseline else v
        for v in spec.variants
        if v.name != state.candidate
    )
    weights = {name: w for name, w in spec.routed.weights.items() if name != state.candidate}
    weights = {name: (100 if name == state.baseline else 0) for name in weights}
    revision = add_revision(
        session, deployment, revised(spec, variants=variants, weights=weights), change, created_by
    )
    # The candidate's replicas carry on as the baseline's: nothing restarts.
    for replica in session.scalars(
        select(Replica).where(
            Replica.deployment_id == deployment.id,
            Replica.variant.in_((state.baseline, state.candidate)),
        )
    ):
        replica.variant = (
            state.baseline if replica.variant == state.candidate else f"{state.baseline}-old"
        )
    replicas = dict(deployment.replicas)
    replicas[state.baseline] = max(
        replicas.get(state.baseline, 1), replicas.pop(state.candidate, 1)
    )
    deployment.replicas = replicas
    deployment.rollout = None
    deployment.state = PROGRESSING
    deployment.reason = change
    return revision


def roll_back(
    session: Session,
    deployment: Deployment,
    spec: DeploymentSpec,
    reason: str,
    created_by: str | None,
) -> DeploymentRevision:
    """Take the candidate out; the revisions of the rollout record why."""
    state = rollout_of(deployment)
    assert state is not None
    variants = tuple(v for v in spec.variants if v.name != state.candidate)
    weights = {n: w for n, w in spec.routed.weights.items() if n != state.candidate}
    weights[state.baseline] = weights.get(state.baseline, 0) + spec.routed.weights.get(
        state.candidate, 0
    )
    for revision in revisions_of(session, deployment.id):
        if revision.number >= state.revision:
            revision.status = ROLLED_BACK
            revision.reason = reason
    revision = add_revision(
        session,
        deployment,
        revised(spec, variants=variants, weights=weights),
        f"rolled back {spec.variant(state.candidate).model}: {reason}",
        created_by,
        previous_status=ROLLED_BACK,
        previous_reason=reason,
    )
    replicas = dict(deployment.replicas)
    replicas.pop(state.candidate, None)
    deployment.replicas = replicas
    deployment.rollout = None
    deployment.state = PROGRESSING
    deployment.reason = f"rolled back: {reason}"
    return revision


def _shifted(
    weights: dict[str, int], baseline: str, candidate: str, percent: int
) -> dict[str, int]:
    """The weights with ``percent`` moved to the candidate, taken from the baseline."""
    others = {n: w for n, w in weights.items() if n not in (baseline, candidate)}
    rest = 100 - sum(others.values())
    return {**others, baseline: max(0, rest - percent), candidate: min(percent, rest)}


def revised(
    spec: DeploymentSpec,
    *,
    variants: tuple[Variant, ...] | None = None,
    weights: dict[str, int] | None = None,
    shadow: str | bool | None = False,
) -> DeploymentSpec:
    """A copy of ``spec`` with other variants, weights or shadow (``None``: none),
    validated again; rules naming a variant that is gone are dropped."""
    traffic = spec.routed.model_dump()
    if weights is not None:
        traffic["weights"] = weights
    names = {v.name for v in (variants or spec.variants)}
    if shadow is not False:
        traffic["shadow"] = shadow
    if traffic.get("shadow") not in names:
        traffic["shadow"] = None
    traffic["matches"] = [m for m in traffic["matches"] if m["variant"] in names]
    data = spec.model_dump()
    data["variants"] = [v.model_dump() for v in (variants or spec.variants)]
    data["traffic"] = traffic
    return DeploymentSpec.model_validate(data)


# -- views --------------------------------------------------------------------------------


def reconcile_each(
    sessions: sessionmaker[Session],
    reconcile_one: Callable[[str], None],
    memory: dict[str, Any],
) -> None:
    """One pass over every deployment, for a controller: one deployment's trouble never
    stops the rest, and what the controller remembers of deleted ones is dropped."""
    with sessions() as session:
        ids = list(session.scalars(select(Deployment.id)))
    for deployment_id in ids:
        try:
            reconcile_one(deployment_id)
        except Exception:
            logger.exception("reconciling deployment %s failed", deployment_id)
    for gone in set(memory) - set(ids):
        del memory[gone]


def judge_canary(
    session: Session,
    deployment: Deployment,
    spec: DeploymentSpec,
    state: RolloutState,
    stats: dict[str, Any],
    started: datetime,
) -> None:
    """Advance, promote or roll back the canary in progress on the router's statistics
    (``/router/stats`` since ``started``, when the step's canary could first answer)."""
    seen = stats.get("variants", {})
    verdict = judge(
        spec.rollout,
        VariantStats.from_json(seen.get(state.baseline)),
        VariantStats.from_json(seen.get(state.candidate)),
        (datetime.now(UTC) - started).total_seconds(),
    )
    if verdict.action is Action.ROLL_BACK:
        roll_back(session, deployment, spec, verdict.reason, None)
        logger.warning("deployment %s: canary rolled back: %s", deployment.name, verdict.reason)
    elif verdict.action is Action.ADVANCE:
        revision = advance(session, deployment, spec, verdict.reason)
        logger.info("deployment %s: %s", deployment.name, revision.change)


def available_weights(
    weights: dict[str, int], ready: set[str], starting: set[str]
) -> dict[str, int]:
    """The weights with the share of a variant that is still starting given to the
    busiest variant that can answer: a canary takes its share once it is ready. A
    variant scaled to zero is not ``starting``: it keeps its share, and the router holds
    its requests while a replica starts."""
    waiting = [name for name, weight in weights.items() if weight and name in starting]
    able = {name: weight for name, weight in weights.items() if name in ready}
    if not waiting or not able:
        return dict(weights)
    heir = max(able, key=lambda name: able[name])
    moved = {name: (0 if name in waiting else weight) for name, weight in weights.items()}
    moved[heir] += sum(weights[name] for name in waiting)
    return moved


def endpoint_of(deployment: Deployment) -> str:
    return f"http://127.0.0.1:{deployment.port}"


def deployment_out(session: Session, deployment: Deployment) -> DeploymentOut:
    return DeploymentOut(
        id=deployment.id,
        name=deployment.name,
        state=deployment.state,
        reason=deployment.reason,
        revision=deployment.revision,
        endpoint=endpoint_of(deployment),
        spec=spec_of(current_revision(session, deployment)),
        rollout=rollout_of(deployment),
        replicas=dict(deployment.replicas),
        created_by=deployment.created_by,
        created_at=deployment.created_at,
        updated_at=deployment.updated_at,
    )


def deployment_detail(
    session: Session, deployment: Deployment, live: dict[str, Any] | None = None
) -> DeploymentDetail:
    out = deployment_out(session, deployment)
    return DeploymentDetail(
        **out.model_dump(),
        revisions=[
            RevisionOut(
                number=r.number,
                change=r.change,
                status=r.status,
                reason=r.reason,
                spec=spec_of(r),
                created_by=r.created_by,
                created_at=r.created_at,
            )
            for r in revisions_of(session, deployment.id)
        ],
        replica_processes=[
            ReplicaOut(
                id=r.id,
                variant=r.variant,
                model=r.model,
                state=r.state,
                url=f"http://{r.host}:{r.port}",
                pid=r.pid,
                reason=r.reason,
                started_at=r.created_at,
            )
            for r in session.scalars(
                select(Replica)
                .where(Replica.deployment_id == deployment.id)
                .order_by(Replica.created_at)
            )
        ],
        live=live or {},
    )
