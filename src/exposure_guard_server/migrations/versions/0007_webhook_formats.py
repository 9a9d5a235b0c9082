"""Webhook formats (json, slack, teams, ntfy) and the server's own settings (its public address).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhooks", sa.Column("format", sa.String(16), nullable=False, server_default="json"))
    op.create_table(
        "server_settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_server_settings"),
    )


def downgrade() -> None:
    op.drop_table("server_settings")
    op.execute("ALTER TABLE webhooks DROP COLUMN format")
