"""Pending re-enrollments (approved by an operator) and the shared login throttle.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enroll_requests",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("device_pk", sa.Integer, nullable=False),
        sa.Column("node_key_hash", sa.String(64), nullable=False),
        sa.Column("enroll_secret_id", sa.Integer),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("identity", sa.Text, nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enroll_requests"),
        sa.UniqueConstraint("node_key_hash", name="uq_enroll_requests_node_key_hash"),
        sa.ForeignKeyConstraint(["device_pk"], ["devices.id"], name="fk_enroll_requests_device_pk_devices",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["enroll_secret_id"], ["enroll_secrets.id"],
                                name="fk_enroll_requests_enroll_secret_id_enroll_secrets", ondelete="SET NULL"),
    )
    op.create_index("ix_enroll_requests_device", "enroll_requests", ["device_pk", "id"])
    op.create_table(
        "login_attempts",
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("window_start", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("client", name="pk_login_attempts"),
    )
    op.create_index("ix_login_attempts_window_start", "login_attempts", ["window_start"])


def downgrade() -> None:
    op.drop_index("ix_login_attempts_window_start", table_name="login_attempts")
    op.drop_table("login_attempts")
    op.drop_index("ix_enroll_requests_device", table_name="enroll_requests")
    op.drop_table("enroll_requests")
