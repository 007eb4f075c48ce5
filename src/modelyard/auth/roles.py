"""Project roles and what each one may do."""

from __future__ import annotations

from enum import Enum, IntEnum


class Role(IntEnum):
    """Project roles, ordered: each grants everything the ones below it grant."""

    VIEWER = 1
    EDITOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}: use viewer, editor or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class Permission(Enum):
    """What an action on a project needs; the value is the least role that grants it."""

    READ = Role.VIEWER  # see the project, its members, its secrets' names, its workloads
    RUN = Role.EDITOR  # create and run workloads (pipelines, jobs, deployments)
    MANAGE = Role.ADMIN  # change the project, its members and its secrets; read its audit log

    @property
    def least_role(self) -> Role:
        return Role(self.value)
