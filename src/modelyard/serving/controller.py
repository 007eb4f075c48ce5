"""The deployment controller: makes the running processes match each deployment.

Every ``poll_seconds`` and for each deployment it
- keeps the router running (on the deployment's port);
- decides each variant's replica count (:mod:`modelyard.serving.autoscaler`) from the
  router's in-flight requests;
- starts missing replicas, replaces dead ones, stops extra ones and, when a variant's
  model or settings changed, starts the new replicas before it stops the old ones;
- writes the router's routes (ready replicas only);
- judges a canary in progress (:mod:`modelyard.serving.rollout`): advances, promotes or
  rolls it back, recording the reason on its revisions.

Replica processes and routers run in their own sessions and outlive the controller; a
restarted controller adopts those its store records (checked by pid and command line)
instead of starting more. A variant whose replicas keep failing to start is backed off
like a crash loop; as a canary it is rolled back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from modelyard.config import Settings
from modelyard.serving import deployments as deploys
from modelyard.serving import processes
from modelyard.serving.autoscaler import Autoscaler, Load
from modelyard.serving.router import router_stats, write_routes
from modelyard.specs.deployments import DeploymentSpec, RolloutState
from modelyard.store.db import transaction
from modelyard.store.models import Deployment, Replica
from modelyard.training.tracking import TrackingConfig

logger = logging.getLogger(__name__)

STARTING = "starting"
READY = "ready"
FAILED_STARTS_BEFORE_BACKOFF = 3
STARTUP_TIMEOUT_SECONDS = 300.0
MAX_BACKOFF_SECONDS = 60.0


@dataclass
class _VariantMemory:
    """What the controller remembers of a variant between passes (not in the store:
    losing it on a restart only resets windows)."""

    scaler: Autoscaler
    # (monotonic time, the router's in-flight area and answered count then)
    area: tuple[float, float, int] | None = None
    failures: int = 0
    last_failure: str = ""
    retry_at: float = 0.0


@dataclass
class _Memory:
    variants: dict[str, _VariantMemory] = field(default_factory=dict)
    routes: str = ""
    router_failures: int = 0  # starts of the router that did not last
    router_failure: str = ""


class DeploymentController:
    """Reconciles deployments with local processes.

    Args:
        settings: Where the home, store and artifacts are.
        sessions: The metadata store.
        poll_seconds: Time between passes.
        stop_processes_on_exit: Stop routers and replicas when the controller stops
            (default: they keep serving and the next controller adopts them).
    """

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        poll_seconds: float = 1.0,
        stop_processes_on_exit: bool = False,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.poll_seconds = poll_seconds
        self.stop_processes_on_exit = stop_processes_on_exit
        self.tracking = TrackingConfig.from_settings(settings)
        self._memory: dict[str, _Memory] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=2.0)
        self._retiring: list[threading.Thread] = []  # replicas being drained and stopped

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="deployments", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for thread in self._retiring:
            thread.join()
        if self.stop_processes_on_exit:
            stop_all(self.sessions)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.reconcile()
            self._stop.wait(self.poll_seconds)

    def reconcile(self) -> None:
        """One pass over every deployment; one deployment's trouble never stops the rest."""
        deploys.reconcile_each(self.sessions, self.reconcile_one, self._memory)

    # -- one deployment ----------------------------------------------------------------

    def folder(self, deployment: Deployment) -> Path:
        return self.settings.home / "deployments" / deployment.project_id / deployment.name

    def reconcile_one(self, deployment_id: str) -> None:
        with transaction(self.sessions) as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is None:
                return
            if deployment.state == deploys.DELETING:
                self._delete(session, deployment)
                return
            memory = self._memory.setdefault(deployment.id, _Memory())
            spec = deploys.spec_of(deploys.current_revision(session, deployment))
            self._ensure_router(deployment, memory)
            stats = self._stats(deployment, since=time.time() - 60)
            if stats is not None:  # the router answers
                memory.router_failures = 0
            self._scale(deployment, spec, memory, stats)
            replicas = self._replicas(session, deployment, spec, memory)
            self._route(deployment, spec, memory, replicas)
            if deployment.rollout:
                self._judge(session, deployment, spec, memory, replicas)
            self._state(deployment, spec, memory, replicas)

    def _ensure_router(self, deployment: Deployment, memory: _Memory) -> None:
        folder = self.folder(deployment)
        if processes.running(deployment.router_pid, deployment.port):
            return
        if deployment.router_pid is not None:  # it was started and is gone
            memory.router_failures += 1
            tail = processes.log_tail(folder / "router.log", lines=2)
            memory.router_failure = f"the router on port {deployment.port} exited: {tail}"
            logger.warning("deployment %s: %s", deployment.name, memory.router_failure)
        launched = processes.launch(
            [
                "router",
                "--routes",
                str(folder / "routes.json"),
                "--port",
                str(deployment.port),
            ],
            log_path=folder / "router.log",
            env=self._env(deployment),
        )
        deployment.router_pid = launched.pid
        logger.info("deployment %s: router started on port %s", deployment.name, deployment.port)

    def _stats(self, deployment: Deployment, since: float) -> dict[str, Any] | None:
        return router_stats(self._http, deploys.endpoint_of(deployment), since)

    def _scale(
        self,
        deployment: Deployment,
        spec: DeploymentSpec,
        memory: _Memory,
        stats: dict[str, Any] | None,
    ) -> None:
        now = time.monotonic()
        desired = dict(deployment.replicas)
        for variant in spec.variants:
            remembered = memory.variants.setdefault(
                variant.name, _VariantMemory(Autoscaler(spec.scaling))
            )
            remembered.scaler.scaling = spec.scaling
            current = desired.get(variant.name, max(1, spec.scaling.min_replicas))
            seen = (stats or {}).get("variants", {}).get(variant.name)
            if seen is None:
                desired[variant.name] = max(
                    spec.scaling.min_replicas, min(current, spec.scaling.max_replicas)
                )
                continue
            # Both are counters of the router: their change since the last pass gives
            # the mean in-flight requests and the requests answered in between.
            area, answered = float(seen["inflight_area"]), int(seen["answered"])
            inflight, requests = 0.0, 0
            if remembered.area is not None and now > remembered.area[0]:
                since, last_area, last_answered = remembered.area
                inflight = max(0.0, (area - last_area) / (now - since))
                requests = max(0, answered - last_answered)
            remembered.area = (now, area, answered)
            load = Load(inflight=inflight, pending=int(seen["pending"]), requests=requests)
            desired[variant.name] = remembered.scaler.decide(now, current, load)
        for gone in set(desired) - {v.name for v in spec.variants}:
            del desired[gone]
        if desired != deployment.replicas:
            logger.info(
                "deployment %s: replicas %s -> %s", deployment.name, deployment.replicas, desired
            )
            deployment.replicas = desired

    def _replicas(
        self,
        session: Session,
        deployment: Deployment,
        spec: DeploymentSpec,
        memory: _Memory,
    ) -> list[Replica]:
        """Check, start and stop replica processes; the live ones are returned."""
        now = time.monotonic()
        live: list[Replica] = []
        for replica in session.scalars(
            select(Replica).where(Replica.deployment_id == deployment.id)
        ):
            url = f"http://{replica.host}:{replica.port}"
            remembered = memory.variants.get(replica.variant)
            if not processes.running(replica.pid, replica.port):
                code = processes.exit_code(replica.pid) if replica.pid else None
                why = f"replica on port {replica.port} exited" + (
                    f" with code {code}" if code is not None else ""
                )
                tail = processes.log_tail(replica.log_path)
                self._failed(
                    remembered, f"{why}: {tail}" if tail else why, now, replica.state == STARTING
                )
                logger.warning("deployment %s: %s", deployment.name, why)
                session.delete(replica)
                continue
            if replica.state == STARTING:
                if processes.ready(url):
                    replica.state = READY
                    replica.ready_at = datetime.now(UTC)
                    if remembered is not None:
                        remembered.failures = 0
                elif (
                    datetime.now(UTC) - replica.created_at
                ).total_seconds() > STARTUP_TIMEOUT_SECONDS:
                    self._failed(
                        remembered,
                        f"replica on port {replica.port} not ready after "
                        f"{STARTUP_TIMEOUT_SECONDS:g} s",
                        now,
                        True,
                    )
                    self._retire(replica)
                    session.delete(replica)
                    continue
            live.append(replica)
        wanted = {v.name: v for v in spec.variants}
        for replica in list(live):  # variants that are gone
            if replica.variant not in wanted:
                self._retire(replica)
                session.delete(replica)
                live.remove(replica)
        for variant in spec.variants:
            key = spec.config_key(variant.model)
            mine = [r for r in live if r.variant == variant.name]
            current = [r for r in mine if r.config_key == key]
            stale = [r for r in mine if r.config_key != key]
            desired = deployment.replicas.get(variant.name, 1)
            remembered = memory.variants.setdefault(
                variant.name, _VariantMemory(Autoscaler(spec.scaling))
            )
            missing = desired - len(current)
            if missing > 0 and now >= remembered.retry_at:
                for _ in range(missing):
                    live.append(
                        self._start(session, deployment, spec, variant.name, variant.model, key)
                    )
            for replica in sorted(current, key=lambda r: (r.state == READY, r.created_at))[
                : max(0, -missing)
            ]:
                self._retire(replica)
                session.delete(replica)
                live.remove(replica)
            ready_now = sum(1 for r in current if r.state == READY)
            if stale and (ready_now >= min(desired, 1) or desired == 0):
                for replica in stale:  # the new ones serve: the old ones go
                    self._retire(replica)
                    session.delete(replica)
                    live.remove(replica)
        return live

    def _failed(
        self, remembered: _VariantMemory | None, reason: str, now: float, starting: bool
    ) -> None:
        if remembered is None:
            return
        remembered.last_failure = reason
        if starting:
            remembered.failures += 1
            if remembered.failures >= FAILED_STARTS_BEFORE_BACKOFF:
                remembered.retry_at = now + min(
                    MAX_BACKOFF_SECONDS,
                    2.0 ** (remembered.failures - FAILED_STARTS_BEFORE_BACKOFF + 1),
                )

    def _start(
        self,
        session: Session,
        deployment: Deployment,
        spec: DeploymentSpec,
        variant: str,
        model: str,
        key: str,
    ) -> Replica:
        port = processes.free_port()
        folder = self.folder(deployment)
        args = spec.server_args(model, "127.0.0.1", port)
        launched = processes.launch(
            args,
            log_path=folder / f"{variant}-{port}.log",
            env={**self._env(deployment), "MODELYARD_MODEL_NAME": deployment.name},
            memory_limit=spec.resources.memory,
        )
        replica = Replica(
            deployment_id=deployment.id,
            variant=variant,
            model=model,
            config_key=key,
            host="127.0.0.1",
            port=port,
            pid=launched.pid,
            state=STARTING,
            log_path=str(launched.log_path),
        )
        session.add(replica)
        session.flush()
        logger.info(
            "deployment %s: starting a %s replica on port %s (%s)",
            deployment.name,
            variant,
            port,
            model,
        )
        return replica

    def _retire(self, replica: Replica) -> None:
        """Stop a replica after the router has stopped sending to it; in the background,
        since draining takes as long as its slowest request."""
        pid, port = replica.pid, replica.port

        def stop() -> None:
            time.sleep(1.0)  # the router re-reads its routes every 0.2 s
            processes.stop(pid, port)

        thread = threading.Thread(target=stop, name=f"stop-{port}", daemon=True)
        thread.start()
        self._retiring = [t for t in self._retiring if t.is_alive()] + [thread]

    def _route(
        self,
        deployment: Deployment,
        spec: DeploymentSpec,
        memory: _Memory,
        replicas: list[Replica],
    ) -> None:
        variants: dict[str, Any] = {}
        for variant in spec.variants:
            key = spec.config_key(variant.model)
            ready = [r for r in replicas if r.variant == variant.name and r.state == READY]
            chosen = [r for r in ready if r.config_key == key] or ready
            variants[variant.name] = {
                "model": variant.model,
                "version": deploys.model_version(variant.model),
                "replicas": sorted(f"http://{r.host}:{r.port}" for r in chosen),
            }
        traffic = spec.routed
        table = {
            "deployment": deployment.name,
            "weights": deploys.available_weights(
                traffic.weights,
                ready={name for name, v in variants.items() if v["replicas"]},
                starting={
                    name
                    for name, v in variants.items()
                    if not v["replicas"] and deployment.replicas.get(name, 1)
                },
            ),
            "variants": variants,
            "shadow": traffic.shadow,
            "shadow_percent": traffic.shadow_percent,
            "matches": [m.model_dump() for m in traffic.matches],
            "sticky_header": traffic.sticky_header,
        }
        text = json.dumps(table, sort_keys=True)
        if text != memory.routes:
            write_routes(
                self.folder(deployment) / "routes.json",
                {**table, "generation": deployment.revision},
            )
            memory.routes = text

    def _judge(
        self,
        session: Session,
        deployment: Deployment,
        spec: DeploymentSpec,
        memory: _Memory,
        replicas: list[Replica],
    ) -> None:
        state = RolloutState.model_validate(deployment.rollout)
        candidate = memory.variants.get(state.candidate)
        if candidate is not None and candidate.failures >= FAILED_STARTS_BEFORE_BACKOFF:
            reason = (
                f"{state.candidate} replicas failed to start {candidate.failures} times: "
                f"{candidate.last_failure}"
            )
            deploys.roll_back(session, deployment, spec, reason, None)
            logger.warning("deployment %s: %s", deployment.name, reason)
            return
        if state.strategy != "canary" or state.paused:
            return
        ready_at = [
            r.ready_at
            for r in replicas
            if r.variant == state.candidate and r.state == READY and r.ready_at is not None
        ]
        if not ready_at:
            return  # the step's clock starts when the canary can answer
        started = max(state.step_started_at, min(ready_at))
        stats = self._stats(deployment, since=started.timestamp())
        if stats is None:
            return
        deploys.judge_canary(session, deployment, spec, state, stats, started)

    def _state(
        self,
        deployment: Deployment,
        spec: DeploymentSpec,
        memory: _Memory,
        replicas: list[Replica],
    ) -> None:
        if deployment.rollout:
            return  # progressing until promoted or rolled back
        serving = [name for name, weight in spec.routed.weights.items() if weight > 0]
        ready = {r.variant for r in replicas if r.state == READY}
        failing = [
            name
            for name in serving
            if memory.variants.get(name) is not None
            and memory.variants[name].failures >= FAILED_STARTS_BEFORE_BACKOFF
        ]
        if memory.router_failures >= FAILED_STARTS_BEFORE_BACKOFF:
            state, reason = deploys.FAILED, memory.router_failure
        elif failing:
            state, reason = deploys.FAILED, memory.variants[failing[0]].last_failure
        elif all(name in ready or deployment.replicas.get(name, 1) == 0 for name in serving):
            state, reason = (
                deploys.READY,
                deployment.reason if deployment.state == deploys.READY else "",
            )
        else:
            state, reason = deploys.PROGRESSING, "waiting for replicas to be ready"
        if (state, reason) != (deployment.state, deployment.reason):
            deployment.state, deployment.reason = state, reason

    def _delete(self, session: Session, deployment: Deployment) -> None:
        for replica in session.scalars(
            select(Replica).where(Replica.deployment_id == deployment.id)
        ):
            processes.stop(replica.pid, replica.port, grace_seconds=5.0)
        processes.stop(deployment.router_pid, deployment.port, grace_seconds=5.0)
        session.delete(deployment)
        self._memory.pop(deployment.id, None)
        logger.info("deployment %s deleted", deployment.name)

    def _env(self, deployment: Deployment) -> dict[str, str]:
        return {
            "MODELYARD_HOME": str(self.settings.home),
            "MODELYARD_ARTIFACTS_URL": self.settings.resolved_artifacts_url,
            "MODELYARD_DEPLOYMENT": deployment.name,
            **self.tracking.env(),
        }


def stop_all(sessions: sessionmaker[Session]) -> None:
    """Stop every router and replica the store records (the platform shuts down)."""
    with transaction(sessions) as session:
        for replica in session.scalars(select(Replica)):
            processes.stop(replica.pid, replica.port)
            session.delete(replica)
        for deployment in session.scalars(select(Deployment)):
            processes.stop(deployment.router_pid, deployment.port)
            deployment.router_pid = None
