"""A typed client of ``/api/v1``; every error answer becomes the matching ``ModelyardError``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from modelyard._version import __version__
from modelyard.errors import ServiceUnavailableError, error_from_response
from modelyard.specs.common import PageOut
from modelyard.specs.deployments import (
    DeploymentDetail,
    DeploymentOut,
    DeploymentSpec,
    DeploymentUpdate,
    RollbackRequest,
    TrafficChange,
)
from modelyard.specs.identity import (
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
    WhoAmI,
)
from modelyard.specs.projects import (
    AuditEventOut,
    MemberAdd,
    MemberOut,
    MemberUpdate,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
    SecretOut,
    SecretPut,
)
from modelyard.specs.runs import AttemptOut, RetryOut, RunCreate, RunDetail, RunOut
from modelyard.specs.schedules import ScheduleApply, ScheduleOut, ScheduleUpdate
from modelyard.specs.training import TrainingJobDetail, TrainingJobOut, TrainingJobSpec

M = TypeVar("M", bound=BaseModel)


def _seg(value: str) -> str:
    return quote(value, safe="")


class ModelyardClient:
    """Talks to one control-plane server.

    Args:
        url: The server's base address, e.g. ``http://127.0.0.1:8420``.
        token: An API token or an OIDC access token.
        timeout: Seconds per request.
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        headers = {"User-Agent": f"modelyard-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ModelyardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- deployments -----------------------------------------------------------------

    def _deployments(self, project: str, name: str | None = None, action: str = "") -> str:
        path = f"/api/v1/projects/{_seg(project)}/deployments"
        if name is not None:
            path += f"/{_seg(name)}"
        return path + (f"/{action}" if action else "")

    def create_deployment(
        self, project: str, spec: DeploymentSpec, *, port: int | None = None
    ) -> DeploymentOut:
        body = spec.model_dump(mode="json")
        response = self.request(
            "POST", self._deployments(project), json=body, params={"port": port}
        )
        return DeploymentOut.model_validate(response.json())

    def list_deployments(self, project: str) -> list[DeploymentOut]:
        body = self.request("GET", self._deployments(project)).json()
        return [DeploymentOut.model_validate(item) for item in body]

    def get_deployment(self, project: str, name: str, *, window: float = 60.0) -> DeploymentDetail:
        return self._get(DeploymentDetail, self._deployments(project, name), window=window)

    def update_deployment(self, project: str, name: str, change: DeploymentUpdate) -> DeploymentOut:
        return self._send(DeploymentOut, "PATCH", self._deployments(project, name), change)

    def set_traffic(self, project: str, name: str, change: TrafficChange) -> DeploymentOut:
        path = self._deployments(project, name, "traffic")
        return self._send(DeploymentOut, "PUT", path, change, whole=True)

    def promote_deployment(self, project: str, name: str) -> DeploymentOut:
        path = self._deployments(project, name, "promote")
        return DeploymentOut.model_validate(self.request("POST", path).json())

    def rollback_deployment(
        self, project: str, name: str, request: RollbackRequest
    ) -> DeploymentOut:
        path = self._deployments(project, name, "rollback")
        return self._send(DeploymentOut, "POST", path, request, whole=True)

    def delete_deployment(self, project: str, name: str) -> DeploymentOut:
        response = self.request("DELETE", self._deployments(project, name))
        return DeploymentOut.model_validate(response.json())

    # -- plumbing -------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        version: int | None = None,
    ) -> httpx.Response:
        headers = {"If-Match": f'"{version}"'} if version is not None else None
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method, path, json=json, params=clean_params, headers=headers
            )
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(
                f"cannot reach the modelyard server at {self.url}: {exc}",
                code="client/unreachable",
            ) from exc
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise error_from_response(response.status_code, body)
        return response

    def _get(self, model: type[M], path: str, **params: Any) -> M:
        return model.model_validate(self.request("GET", path, params=params).json())

    def _page(self, model: type[M], path: str, **params: Any) -> PageOut[M]:
        body = self.request("GET", path, params=params).json()
        return PageOut[model](**body)  # type: ignore[valid-type]

    def _send(
        self,
        model: type[M],
        method: str,
        path: str,
        spec: BaseModel,
        *,
        whole: bool = False,
        **kw: Any,
    ) -> M:
        """Send ``spec``: only the fields set (a patch), or ``whole`` (specs whose nested
        discriminators must travel even when they hold their defaults)."""
        body = spec.model_dump(exclude_unset=not whole, mode="json")
        return model.model_validate(self.request(method, path, json=body, **kw).json())

    # -- health and identity ---------------------------------------------------------

    def ready(self) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", "/readyz").json()
        return body

    def whoami(self) -> WhoAmI:
        return self._get(WhoAmI, "/api/v1/whoami")

    # -- users -----------------------------------------------------------------------

    def create_user(self, spec: UserCreate) -> UserOut:
        return self._send(UserOut, "POST", "/api/v1/users", spec)

    def list_users(self, *, cursor: str | None = None, limit: int = 50) -> PageOut[UserOut]:
        return self._page(UserOut, "/api/v1/users", cursor=cursor, limit=limit)

    def get_user(self, name: str) -> UserOut:
        return self._get(UserOut, f"/api/v1/users/{_seg(name)}")

    def update_user(self, name: str, spec: UserUpdate, *, version: int | None = None) -> UserOut:
        return self._send(UserOut, "PATCH", f"/api/v1/users/{_seg(name)}", spec, version=version)

    # -- tokens ----------------------------------------------------------------------

    def create_token(self, spec: TokenCreate) -> TokenCreated:
        return self._send(TokenCreated, "POST", "/api/v1/tokens", spec)

    def list_tokens(self, *, cursor: str | None = None, limit: int = 50) -> PageOut[TokenOut]:
        return self._page(TokenOut, "/api/v1/tokens", cursor=cursor, limit=limit)

    def revoke_token(self, token_id: str) -> TokenOut:
        response = self.request("DELETE", f"/api/v1/tokens/{_seg(token_id)}")
        return TokenOut.model_validate(response.json())

    # -- projects and members ----------------------------------------------------------

    def create_project(self, spec: ProjectCreate) -> ProjectOut:
        return self._send(ProjectOut, "POST", "/api/v1/projects", spec)

    def list_projects(self, *, cursor: str | None = None, limit: int = 50) -> PageOut[ProjectOut]:
        return self._page(ProjectOut, "/api/v1/projects", cursor=cursor, limit=limit)

    def get_project(self, name: str) -> ProjectOut:
        return self._get(ProjectOut, f"/api/v1/projects/{_seg(name)}")

    def update_project(
        self, name: str, spec: ProjectUpdate, *, version: int | None = None
    ) -> ProjectOut:
        path = f"/api/v1/projects/{_seg(name)}"
        return self._send(ProjectOut, "PATCH", path, spec, version=version)

    def delete_project(self, name: str, *, version: int | None = None) -> None:
        self.request("DELETE", f"/api/v1/projects/{_seg(name)}", version=version)

    def list_members(
        self, project: str, *, cursor: str | None = None, limit: int = 50
    ) -> PageOut[MemberOut]:
        path = f"/api/v1/projects/{_seg(project)}/members"
        return self._page(MemberOut, path, cursor=cursor, limit=limit)

    def add_member(self, project: str, spec: MemberAdd) -> MemberOut:
        return self._send(MemberOut, "POST", f"/api/v1/projects/{_seg(project)}/members", spec)

    def update_member(
        self, project: str, user: str, spec: MemberUpdate, *, version: int | None = None
    ) -> MemberOut:
        path = f"/api/v1/projects/{_seg(project)}/members/{_seg(user)}"
        return self._send(MemberOut, "PATCH", path, spec, version=version)

    def remove_member(self, project: str, user: str, *, version: int | None = None) -> None:
        path = f"/api/v1/projects/{_seg(project)}/members/{_seg(user)}"
        self.request("DELETE", path, version=version)

    # -- secrets ---------------------------------------------------------------------

    def list_secrets(
        self, project: str, *, cursor: str | None = None, limit: int = 50
    ) -> PageOut[SecretOut]:
        path = f"/api/v1/projects/{_seg(project)}/secrets"
        return self._page(SecretOut, path, cursor=cursor, limit=limit)

    def get_secret(self, project: str, name: str) -> SecretOut:
        return self._get(SecretOut, f"/api/v1/projects/{_seg(project)}/secrets/{_seg(name)}")

    def put_secret(
        self, project: str, name: str, spec: SecretPut, *, version: int | None = None
    ) -> SecretOut:
        path = f"/api/v1/projects/{_seg(project)}/secrets/{_seg(name)}"
        return self._send(SecretOut, "PUT", path, spec, version=version)

    def delete_secret(self, project: str, name: str, *, version: int | None = None) -> None:
        path = f"/api/v1/projects/{_seg(project)}/secrets/{_seg(name)}"
        self.request("DELETE", path, version=version)

    # -- audit -----------------------------------------------------------------------

    def list_audit(
        self,
        *,
        project: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> PageOut[AuditEventOut]:
        return self._page(
            AuditEventOut,
            "/api/v1/audit",
            project=project,
            actor=actor,
            # A time without a zone is the caller's local time.
            since=since.astimezone().isoformat() if since else None,
            cursor=cursor,
            limit=limit,
        )

    # -- runs ------------------------------------------------------------------------

    def create_run(self, project: str, spec: RunCreate) -> RunOut:
        path = f"/api/v1/projects/{_seg(project)}/runs"
        return self._send(RunOut, "POST", path, spec, whole=True)

    def list_runs(
        self,
        project: str,
        *,
        pipeline: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> PageOut[RunOut]:
        path = f"/api/v1/projects/{_seg(project)}/runs"
        return self._page(RunOut, path, pipeline=pipeline, cursor=cursor, limit=limit)

    def get_run(self, project: str, run_id: str) -> RunDetail:
        return self._get(RunDetail, f"/api/v1/projects/{_seg(project)}/runs/{_seg(run_id)}")

    def retry_run(self, project: str, run_id: str) -> RetryOut:
        path = f"/api/v1/projects/{_seg(project)}/runs/{_seg(run_id)}/retry"
        return RetryOut.model_validate(self.request("POST", path).json())

    def cancel_run(self, project: str, run_id: str) -> RunOut:
        path = f"/api/v1/projects/{_seg(project)}/runs/{_seg(run_id)}/cancel"
        return RunOut.model_validate(self.request("POST", path).json())

    def list_attempts(
        self, project: str, run_id: str, *, task: str | None = None
    ) -> list[AttemptOut]:
        path = f"/api/v1/projects/{_seg(project)}/runs/{_seg(run_id)}/attempts"
        body = self.request("GET", path, params={"task": task}).json()
        return [AttemptOut.model_validate(item) for item in body]

    def attempt_log(self, project: str, run_id: str, attempt_id: str, *, offset: int = 0) -> bytes:
        path = (
            f"/api/v1/projects/{_seg(project)}/runs/{_seg(run_id)}/attempts/{_seg(attempt_id)}/log"
        )
        return self.request("GET", path, params={"offset": offset}).content

    # -- schedules -------------------------------------------------------------------

    def apply_schedule(
        self, project: str, spec: ScheduleApply, *, version: int | None = None
    ) -> ScheduleOut:
        path = f"/api/v1/projects/{_seg(project)}/schedules"
        return self._send(ScheduleOut, "PUT", path, spec, whole=True, version=version)

    def list_schedules(self, project: str) -> list[ScheduleOut]:
        body = self.request("GET", f"/api/v1/projects/{_seg(project)}/schedules").json()
        return [ScheduleOut.model_validate(item) for item in body]

    def get_schedule(self, project: str, pipeline: str) -> ScheduleOut:
        path = f"/api/v1/projects/{_seg(project)}/schedules/{_seg(pipeline)}"
        return self._get(ScheduleOut, path)

    def update_schedule(
        self, project: str, pipeline: str, spec: ScheduleUpdate, *, version: int | None = None
    ) -> ScheduleOut:
        path = f"/api/v1/projects/{_seg(project)}/schedules/{_seg(pipeline)}"
        return self._send(ScheduleOut, "PATCH", path, spec, version=version)

    def set_schedule_paused(self, project: str, pipeline: str, paused: bool) -> ScheduleOut:
        action = "pause" if paused else "unpause"
        path = f"/api/v1/projects/{_seg(project)}/schedules/{_seg(pipeline)}/{action}"
        return ScheduleOut.model_validate(self.request("POST", path).json())

    def trigger_schedule(
        self, project: str, pipeline: str, *, logical_date: datetime | None = None
    ) -> RunOut:
        path = f"/api/v1/projects/{_seg(project)}/schedules/{_seg(pipeline)}/trigger"
        when = logical_date.astimezone().isoformat() if logical_date else None
        return RunOut.model_validate(
            self.request("POST", path, params={"logical_date": when}).json()
        )

    def delete_schedule(self, project: str, pipeline: str, *, version: int | None = None) -> None:
        path = f"/api/v1/projects/{_seg(project)}/schedules/{_seg(pipeline)}"
        self.request("DELETE", path, version=version)

    # -- training jobs ---------------------------------------------------------------

    def submit_job(self, project: str, spec: TrainingJobSpec) -> TrainingJobOut:
        path = f"/api/v1/projects/{_seg(project)}/jobs"
        return self._send(TrainingJobOut, "POST", path, spec, whole=True)

    def list_jobs(self, project: str, *, limit: int = 50) -> list[TrainingJobOut]:
        path = f"/api/v1/projects/{_seg(project)}/jobs"
        body = self.request("GET", path, params={"limit": limit}).json()
        return [TrainingJobOut.model_validate(item) for item in body]

    def get_job(self, project: str, job_id: str) -> TrainingJobDetail:
        return self._get(TrainingJobDetail, f"/api/v1/projects/{_seg(project)}/jobs/{_seg(job_id)}")

    def cancel_job(self, project: str, job_id: str) -> TrainingJobOut:
        path = f"/api/v1/projects/{_seg(project)}/jobs/{_seg(job_id)}/cancel"
        return TrainingJobOut.model_validate(self.request("POST", path).json())

    def job_log(self, project: str, job_id: str, *, attempt: int = 1, rank: int = 0) -> bytes:
        path = f"/api/v1/projects/{_seg(project)}/jobs/{_seg(job_id)}/logs"
        return self.request("GET", path, params={"attempt": attempt, "rank": rank}).content
