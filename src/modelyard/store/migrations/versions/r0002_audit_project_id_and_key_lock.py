"""audit events keep their project's id; a lock row for secret key rotation

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("project_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_audit_events_project_id"), ["project_id"])
    # Events written before this revision belong to the project that has their name now.
    op.execute(
        "UPDATE audit_events SET project_id = "
        "(SELECT id FROM projects WHERE projects.name = audit_events.project)"
    )
    lock = op.create_table(
        "secret_key_lock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_key_lock")),
    )
    op.bulk_insert(lock, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("secret_key_lock")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_project_id"))
        batch_op.drop_column("project_id")
