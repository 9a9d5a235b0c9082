"""Accepted risks on the server: a failing check accepted for one box or a whole group, until a day.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acceptances",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("check_id", sa.String(80), nullable=False),
        sa.Column("device_pk", sa.Integer),
        sa.Column("group_id", sa.Integer),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("by", sa.String(160), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
        sa.Column("end_reason", sa.String(16), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_acceptances"),
        sa.ForeignKeyConstraint(["device_pk"], ["devices.id"], name="fk_acceptances_device_pk_devices",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], name="fk_acceptances_group_id_groups",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_acceptances_active_device", "acceptances", ["ended_at", "device_pk"])
    op.create_index("ix_acceptances_active_group", "acceptances", ["ended_at", "group_id"])
    op.create_index("ix_acceptances_until", "acceptances", ["ended_at", "until"])


def downgrade() -> None:
    for index in ("ix_acceptances_until", "ix_acceptances_active_group", "ix_acceptances_active_device"):
        op.drop_index(index, table_name="acceptances")
    op.drop_table("acceptances")
