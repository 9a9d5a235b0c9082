"""Reports stored before the clock-skew bound: one dated more than 300 s after it arrived is ordered by its
arrival, like the check-in orders new ones (services/ingest.py), so it no longer stays "latest" forever.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DEFAULT_MAX_CLOCK_SKEW = 300


def upgrade() -> None:
    op.execute("UPDATE reports SET generated_at = received_at WHERE generated_at > received_at + %d"
               % DEFAULT_MAX_CLOCK_SKEW)
    op.execute("UPDATE devices SET last_generated_at = (SELECT reports.generated_at FROM reports "
               "WHERE reports.id = devices.last_report_pk) WHERE last_report_pk IS NOT NULL")


def downgrade() -> None:
    pass  # the dates the agents claimed are still in the stored report bodies
