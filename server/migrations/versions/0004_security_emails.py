"""security emails: one row per audit event emailed; the browsers each user signed in from

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_email",
        sa.Column("audit_event_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["audit_event_id"], ["audit_event.id"], name=op.f("fk_security_email_audit_event_id_audit_event")
        ),
        sa.PrimaryKeyConstraint("audit_event_id", name=op.f("pk_security_email")),
    )
    op.create_index(op.f("ix_security_email_created_at"), "security_email", ["created_at"], unique=False)
    op.create_table(
        "known_device",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("device_hash", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], name=op.f("fk_known_device_user_id_app_user")),
        sa.PrimaryKeyConstraint("user_id", "device_hash", name=op.f("pk_known_device")),
    )


def downgrade() -> None:
    op.drop_table("known_device")
    op.drop_index(op.f("ix_security_email_created_at"), table_name="security_email")
    op.drop_table("security_email")
