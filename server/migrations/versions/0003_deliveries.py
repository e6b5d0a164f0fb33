"""after a run: digests and CRM write-back

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "run_delivery",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("errors", JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_run_delivery_run_id_run")),
        sa.PrimaryKeyConstraint("run_id", "kind", name=op.f("pk_run_delivery")),
    )
    op.create_table(
        "digest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("message_id", sa.String(length=300), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_digest_run_id_run")),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], name=op.f("fk_digest_user_id_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest")),
        sa.UniqueConstraint("day", "user_id", name=op.f("uq_digest_day")),
    )
    with op.batch_alter_table("digest") as batch:
        batch.create_index(batch.f("ix_digest_day"), ["day"], unique=False)
        batch.create_index(batch.f("ix_digest_run_id"), ["run_id"], unique=False)
    op.create_table(
        "crm_push",
        sa.Column("account_id", sa.String(length=200), nullable=False),
        sa.Column("crm_id", sa.String(length=200), nullable=True),
        sa.Column("chi", sa.Integer(), nullable=True),
        sa.Column("band", sa.String(length=30), nullable=True),
        sa.Column("as_of", sa.Date(), nullable=True),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"], name=op.f("fk_crm_push_account_id_account")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_crm_push")),
    )


def downgrade() -> None:
    op.drop_table("crm_push")
    op.drop_table("digest")
    op.drop_table("run_delivery")
