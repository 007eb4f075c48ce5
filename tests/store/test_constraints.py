"""Foreign keys, cascades and unique constraints, enforced by the database itself."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from modelyard.store.db import transaction
from modelyard.store.models import ApiToken, Base, Project, RoleBinding, Secret, User
from tests.store.conftest import Seed, violated_constraint


def _count(session: Session, model: type[Base], *where: object) -> int:
    statement = select(func.count()).select_from(model).where(*where)  # type: ignore[arg-type]
    return session.scalar(statement) or 0


def _token(user_id: str, token_hash: str) -> ApiToken:
    return ApiToken(user_id=user_id, name="ci", token_hash=token_hash, prefix=token_hash[:8])


# ---- foreign keys and cascades ------------------------------------------------------------


def test_deleting_a_project_deletes_its_role_bindings_and_secrets(
    sessions: sessionmaker[Session], seed: Seed
) -> None:
    with transaction(sessions) as session:
        session.add_all(
            [
                RoleBinding(project_id=seed.project_id, user_id=seed.other_user_id, role="admin"),
                Secret(project_id=seed.project_id, name="second", ciphertext=b"x"),
                RoleBinding(project_id=seed.other_project_id, user_id=seed.user_id, role="admin"),
                Secret(project_id=seed.other_project_id, name="api-key", ciphertext=b"y"),
            ]
        )
    with sessions() as session:
        assert _count(session, RoleBinding, RoleBinding.project_id == seed.project_id) == 2
        assert _count(session, Secret, Secret.project_id == seed.project_id) == 2

    with transaction(sessions) as session:
        project = session.get(Project, seed.project_id)
        assert project is not None
        session.delete(project)  # the ORM knows no children: only the database can cascade

    with sessions() as session:
        assert _count(session, RoleBinding, RoleBinding.project_id == seed.project_id) == 0
        assert _count(session, Secret, Secret.project_id == seed.project_id) == 0
        # Everything else is untouched.
        assert _count(session, RoleBinding, RoleBinding.project_id == seed.other_project_id) == 1
        assert _count(session, Secret, Secret.project_id == seed.other_project_id) == 1
        assert _count(session, User) == 2


def test_deleting_a_user_deletes_their_role_bindings_and_tokens(
    sessions: sessionmaker[Session], seed: Seed
) -> None:
    with transaction(sessions) as session:
        session.add_all([_token(seed.user_id, "a" * 64), _token(seed.other_user_id, "b" * 64)])

    with transaction(sessions) as session:
        session.execute(delete(User).where(User.id == seed.user_id))

    with sessions() as session:
        assert _count(session, RoleBinding) == 0
        assert session.scalars(select(ApiToken.user_id)).all() == [seed.other_user_id]
        assert _count(session, Project) == 2


@pytest.mark.parametrize(
    "orphan",
    [
        pytest.param(
            lambda seed: RoleBinding(project_id="missing", user_id=seed.user_id, role="viewer"),
            id="role_binding-without-project",
        ),
        pytest.param(
            lambda seed: RoleBinding(project_id=seed.project_id, user_id="missing", role="viewer"),
            id="role_binding-without-user",
        ),
        pytest.param(
            lambda seed: Secret(project_id="missing", name="s", ciphertext=b"x"),
            id="secret-without-project",
        ),
        pytest.param(lambda seed: _token("missing", "c" * 64), id="token-without-user"),
    ],
)
def test_rows_pointing_at_missing_parents_are_refused(
    sessions: sessionmaker[Session], seed: Seed, orphan: Callable[[Seed], Base]
) -> None:
    with sessions() as session:
        session.add(orphan(seed))
        with pytest.raises(IntegrityError) as raised:
            session.flush()
    assert violated_constraint(raised.value) == "foreign_key"


# ---- unique constraints -------------------------------------------------------------------

Twins = Callable[[Seed], tuple[Base, Base]]

UNIQUE = [
    pytest.param(lambda s: (User(name="carol"), User(name="carol")), id="users.name"),
    pytest.param(
        lambda s: (User(name="c1", oidc_subject="sub"), User(name="c2", oidc_subject="sub")),
        id="users.oidc_subject",
    ),
    pytest.param(lambda s: (Project(name="gamma"), Project(name="gamma")), id="projects.name"),
    pytest.param(
        lambda s: (
            RoleBinding(project_id=s.other_project_id, user_id=s.user_id, role="viewer"),
            RoleBinding(project_id=s.other_project_id, user_id=s.user_id, role="admin"),
        ),
        id="role_bindings.project_id+user_id",
    ),
    pytest.param(
        lambda s: (
            Secret(project_id=s.other_project_id, name="db", ciphertext=b"1"),
            Secret(project_id=s.other_project_id, name="db", ciphertext=b"2"),
        ),
        id="secrets.project_id+name",
    ),
    pytest.param(
        lambda s: (_token(s.user_id, "d" * 64), _token(s.other_user_id, "d" * 64)),
        id="api_tokens.token_hash",
    ),
]


@pytest.mark.parametrize("twins", UNIQUE)
def test_duplicates_are_refused(sessions: sessionmaker[Session], seed: Seed, twins: Twins) -> None:
    original, duplicate = twins(seed)
    model = type(original)
    with sessions() as session:
        before = _count(session, model)
    with transaction(sessions) as session:
        session.add(original)

    with sessions() as session:
        session.add(duplicate)
        with pytest.raises(IntegrityError) as raised:
            session.flush()
    assert violated_constraint(raised.value) == "unique"

    with sessions() as session:
        assert _count(session, model) == before + 1


@pytest.mark.parametrize(
    "siblings",
    [
        pytest.param(
            lambda s: (
                RoleBinding(project_id=s.other_project_id, user_id=s.user_id, role="viewer"),
                RoleBinding(project_id=s.other_project_id, user_id=s.other_user_id, role="admin"),
            ),
            id="same-project-other-user",
        ),
        pytest.param(
            lambda s: (
                RoleBinding(project_id=s.other_project_id, user_id=s.user_id, role="viewer"),
                Secret(project_id=s.other_project_id, name="api-key", ciphertext=b"2"),
            ),
            id="same-user-and-secret-name-in-another-project",
        ),
        pytest.param(
            lambda s: (User(name="no-oidc-1"), User(name="no-oidc-2")),
            id="several-users-without-oidc-subject",
        ),
    ],
)
def test_rows_that_differ_in_the_unique_key_are_accepted(
    sessions: sessionmaker[Session], seed: Seed, siblings: Twins
) -> None:
    def rows() -> int:
        with sessions() as session:
            return sum(_count(session, model) for model in (RoleBinding, Secret, User))

    before = rows()
    with transaction(sessions) as session:
        session.add_all(siblings(seed))
    assert rows() == before + 2
