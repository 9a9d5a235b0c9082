"""Email alerts: per-user address and subscriptions, and the email outbox.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email", sa.String(254), nullable=False, server_default=""))
    op.add_column("users", sa.Column("alert_kinds", sa.String(400), nullable=False, server_default=""))
    op.add_column("users", sa.Column("digest", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "email_deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("transition_id", sa.BigInteger),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("digest_day", sa.String(10)),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("lease_until", sa.Float),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float),
        sa.PrimaryKeyConstraint("id", name="pk_email_deliveries"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_email_deliveries_user_id_users", ondelete="CASCADE"),
        sa.UniqueConstraint("user_id", "digest_day", name="uq_email_deliveries_user_id"),
    )
    op.create_index("ix_email_deliveries_due", "email_deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_email_deliveries_due", table_name="email_deliveries")
    op.drop_table("email_deliveries")
    for column in ("digest", "alert_kinds", "email"):
        op.execute("ALTER TABLE users DROP COLUMN %s" % column)
