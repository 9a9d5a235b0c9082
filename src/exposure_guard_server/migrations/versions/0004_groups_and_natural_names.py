"""Groups (customers or sites) for enrollment secrets and devices, and the natural-order host name key.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from exposure_guard_server.naturalsort import hostname_key

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BACKFILL_CHUNK = 5000


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_groups"),
        sa.UniqueConstraint("name", name="uq_groups_name"),
    )
    # Plain ADD COLUMN, no table rebuild: on SQLite a rebuild drops the old table, which fires the ON DELETE
    # actions of the tables that point at it (a device's reports would be deleted).
    op.add_column("enroll_secrets", sa.Column("group_id", sa.Integer))
    op.drop_index("ix_devices_risk_hostname", table_name="devices")
    op.add_column("devices", sa.Column("hostname_key", sa.String(1024), nullable=False, server_default=""))
    op.add_column("devices", sa.Column("group_id", sa.Integer))
    _backfill_keys()
    op.create_index("ix_devices_hostname_key", "devices", ["hostname_key", "id"])
    op.create_index("ix_devices_risk_hostname", "devices", [sa.text("risk DESC"), "hostname_key", "id"])
    op.create_index("ix_devices_group_risk", "devices", ["group_id", sa.text("risk DESC"), "hostname_key", "id"])


def _backfill_keys() -> None:
    conn = op.get_bind()
    devices = sa.table("devices", sa.column("id", sa.Integer), sa.column("hostname", sa.String),
                       sa.column("hostname_key", sa.String))
    last = 0
    while True:
        rows = conn.execute(sa.select(devices.c.id, devices.c.hostname).where(devices.c.id > last)
                            .order_by(devices.c.id).limit(BACKFILL_CHUNK)).all()
        if not rows:
            return
        conn.execute(sa.update(devices).where(devices.c.id == sa.bindparam("pk"))
                     .values(hostname_key=sa.bindparam("key")),
                     [{"pk": r.id, "key": hostname_key(r.hostname or "")} for r in rows])
        last = rows[-1].id


def downgrade() -> None:
    for index in ("ix_devices_group_risk", "ix_devices_risk_hostname", "ix_devices_hostname_key"):
        op.drop_index(index, table_name="devices")
    # ALTER TABLE … DROP COLUMN (SQLite 3.35 and later): no table rebuild, for the reason in upgrade().
    for table, column in (("devices", "group_id"), ("devices", "hostname_key"), ("enroll_secrets", "group_id")):
        op.execute("ALTER TABLE %s DROP COLUMN %s" % (table, column))
    op.create_index("ix_devices_risk_hostname", "devices", [sa.text("risk DESC"), "hostname", "id"])
    op.drop_table("groups")
