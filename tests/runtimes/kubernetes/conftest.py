"""What the Kubernetes tests share: a store, a project in it, and the one-node stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelyard.store.db import session_factory, transaction
from modelyard.store.models import Project
from tests.runtimes.kubernetes.kubelet import LocalKubelet

SECRET = ("modelyard-project-secrets", "WAREHOUSE_TOKEN")


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[LocalKubelet]:
    node = LocalKubelet(tmp_path / "node", secrets={SECRET: "from-the-cluster"})
    yield node
    node.close()


def new_project(sessions: sessionmaker[Session], name: str) -> str:
    """A project in the store; its id."""
    with transaction(sessions) as session:
        project = Project(name=name)
        session.add(project)
        session.flush()
        return project.id
