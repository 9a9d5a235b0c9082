"""Device lifecycle: retired boxes (hidden, history kept), a note and tags per box.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild: see 0004).
    op.add_column("devices", sa.Column("retired_at", sa.Float))
    op.add_column("devices", sa.Column("note", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "device_tags",
        sa.Column("device_pk", sa.Integer, nullable=False),
        sa.Column("tag", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("device_pk", "tag", name="pk_device_tags"),
        sa.ForeignKeyConstraint(["device_pk"], ["devices.id"], name="fk_device_tags_device_pk_devices",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_device_tags_tag", "device_tags", ["tag", "device_pk"])


def downgrade() -> None:
    op.drop_index("ix_device_tags_tag", table_name="device_tags")
    op.drop_table("device_tags")
    op.execute("ALTER TABLE devices DROP COLUMN note")
    op.execute("ALTER TABLE devices DROP COLUMN retired_at")
