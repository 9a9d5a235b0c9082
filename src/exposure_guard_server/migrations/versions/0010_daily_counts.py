"""Daily counts per group and state, for the fleet page's trend chart.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_counts",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("group_key", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("day", "group_key", "state", name="pk_daily_counts"),
    )


def downgrade() -> None:
    op.drop_table("daily_counts")
