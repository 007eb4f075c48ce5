"""Per-project secrets, encrypted at rest. Values leave only through ``reveal``.

``reveal`` is for the runtimes that inject secrets into workloads; no API route and no
listing ever returns a value.
"""

from __future__ import annotations

from modelyard.auth.roles import Permission
from modelyard.auth.secret_box import SecretBox, load_box
from modelyard.errors import NotFoundError
from modelyard.services.context import ServiceContext, check_version
from modelyard.specs.projects import SecretPut
from modelyard.store.models import Project, Secret
from modelyard.store.pagination import Page
from modelyard.store.repositories import SecretKeyLockRepository, SecretRepository


class SecretService:
    def __init__(self, ctx: ServiceContext, box: SecretBox | None = None) -> None:
        self.ctx = ctx
        self.secrets = SecretRepository(ctx.session)
        self._box = box

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self._box = load_box(self.ctx.settings)
        return self._box

    def list(self, project: str, *, cursor: str | None, limit: int) -> Page[Secret]:
        record = self.ctx.project(project, Permission.READ)
        return self.secrets.page(record.id, cursor=cursor, limit=limit)

    def get(self, project: str, name: str) -> Secret:
        record = self.ctx.project(project, Permission.READ)
        return self._load(record, name)

    def put(
        self, project: str, name: str, spec: SecretPut, *, expected_version: int | None
    ) -> tuple[Secret, bool]:
        """Create or replace a secret; returns it and whether it was created."""
        record = self.ctx.project(project, Permission.MANAGE)
        # Hold the key lock before reading the keys: a rotation cannot then drop the key
        # this value is encrypted with before the value is committed.
        SecretKeyLockRepository(self.ctx.session).acquire()
        ciphertext = self.box.encrypt(spec.value)
        secret = self.secrets.find(record.id, name)
        created = secret is None
        if secret is None:
            check_version(0, expected_version, f"secret {name!r}")
            secret = Secret(
                project_id=record.id,
                name=name,
                ciphertext=ciphertext,
                description=spec.description,
                created_by=self.ctx.principal.name,
            )
            self.ctx.session.add(secret)
        else:
            check_version(secret.version, expected_version, f"secret {name!r}")
            secret.ciphertext = ciphertext
            secret.description = spec.description
        self.ctx.flush(f"secret {name!r}")
        action = "secret.create" if created else "secret.update"
        self.ctx.audit(action, "secret", name, project=record)
        return secret, created

    def delete(self, project: str, name: str, *, expected_version: int | None) -> None:
        record = self.ctx.project(project, Permission.MANAGE)
        secret = self._load(record, name)
        check_version(secret.version, expected_version, f"secret {name!r}")
        self.ctx.session.delete(secret)
        self.ctx.flush(f"secret {name!r}")
        self.ctx.audit("secret.delete", "secret", name, project=record)

    def reveal(self, project: str, name: str) -> str:
        """The plaintext, for a workload of ``project`` run by the caller (editor or above)."""
        record = self.ctx.project(project, Permission.RUN)
        return self.box.decrypt(self._load(record, name).ciphertext)

    def _load(self, project: Project, name: str) -> Secret:
        secret = self.secrets.find(project.id, name)
        if secret is None:
            raise NotFoundError(
                f"secret {name!r} does not exist in project {project.name!r}",
                code="secret/not_found",
                details={"project": project.name, "secret": name},
            )
        return secret
