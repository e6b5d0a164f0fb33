"""ingestion split into parts

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "run_part",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("part_no", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("bad_rows", JSON, nullable=False),
        sa.Column("bad_by_reason", JSON, nullable=False),
        sa.Column("timings", JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_run_part_run_id_run")),
        sa.PrimaryKeyConstraint("run_id", "part_no", name=op.f("pk_run_part")),
    )
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("parts_total", sa.Integer(), nullable=False, server_default="1"))
        batch.drop_column("heartbeat_at")
    # A run not yet read when the database is upgraded is read as one part.
    op.execute(
        "INSERT INTO run_part (run_id, part_no, state, attempts, counts, bad_rows, bad_by_reason, timings) "
        "SELECT id, 0, 'pending', 0, '{}', '[]', '{}', '{}' FROM run WHERE state IN ('pending', 'ingesting')"
    )


def downgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_column("parts_total")
    op.drop_table("run_part")
