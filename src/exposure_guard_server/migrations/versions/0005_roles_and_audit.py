"""Roles and group limits for users and API tokens; the audit log.

Users and tokens that exist keep what they could do (admin, every group); new API tokens default to
viewer.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("users", "api_tokens"):
        op.add_column(table, sa.Column("role", sa.String(16), nullable=False, server_default="admin"))
        op.add_column(table, sa.Column("groups_limited", sa.Boolean, nullable=False, server_default=sa.false()))
    for table, owner in (("user_groups", "users"), ("token_groups", "api_tokens")):
        column = "user_id" if owner == "users" else "token_id"
        op.create_table(
            table,
            sa.Column(column, sa.Integer, nullable=False),
            sa.Column("group_id", sa.Integer, nullable=False),
            sa.PrimaryKeyConstraint(column, "group_id", name="pk_" + table),
            sa.ForeignKeyConstraint([column], [owner + ".id"], name="fk_%s_%s_%s" % (table, column, owner),
                                    ondelete="CASCADE"),
            sa.ForeignKeyConstraint(["group_id"], ["groups.id"], name="fk_%s_group_id_groups" % table,
                                    ondelete="CASCADE"),
        )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("group_id", sa.Integer),
        sa.Column("detail", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_target", "audit_log", ["target", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("token_groups")
    op.drop_table("user_groups")
    for table in ("api_tokens", "users"):
        op.execute("ALTER TABLE %s DROP COLUMN groups_limited" % table)
        op.execute("ALTER TABLE %s DROP COLUMN role" % table)
