"""Initial schema: users, sessions, API tokens, enrollment secrets, devices, reports, transitions, webhooks.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_login_at", sa.Float),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_sessions_token_hash"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_sessions_user_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_table(
        "enroll_secrets",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
        sa.Column("enrolled_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enroll_secrets"),
        sa.UniqueConstraint("secret_hash", name="uq_enroll_secrets_secret_hash"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("node_key_hash", sa.String(64), nullable=False),
        sa.Column("enroll_secret_id", sa.Integer),
        sa.Column("enrolled_at", sa.Float, nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("firmware", sa.String(64), nullable=False),
        sa.Column("build", sa.String(64), nullable=False),
        sa.Column("lan_addresses", sa.Text, nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("interval_s", sa.Integer, nullable=False),
        sa.Column("last_seen_at", sa.Float),
        sa.Column("last_generated_at", sa.Float),
        sa.Column("last_report_pk", BigId),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("risk", sa.Integer, nullable=False),
        sa.Column("fail_count", sa.Integer, nullable=False),
        sa.Column("failing", sa.Text, nullable=False),
        sa.Column("stale_base", sa.Float, nullable=False),
        sa.Column("stale", sa.Boolean, nullable=False),
        sa.Column("report_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("device_id", name="uq_devices_device_id"),
        sa.UniqueConstraint("node_key_hash", name="uq_devices_node_key_hash"),
        sa.ForeignKeyConstraint(["enroll_secret_id"], ["enroll_secrets.id"],
                                name="fk_devices_enroll_secret_id_enroll_secrets", ondelete="SET NULL"),
    )
    op.create_index("ix_devices_verdict", "devices", ["verdict"])
    op.create_index("ix_devices_risk_hostname", "devices", [sa.text("risk DESC"), "hostname", "id"])
    op.create_index("ix_devices_hostname", "devices", ["hostname"])
    op.create_index("ix_devices_last_seen_at", "devices", ["last_seen_at"])
    op.create_index("ix_devices_firmware", "devices", ["firmware"])
    op.create_index("ix_devices_stale_base", "devices", ["stale_base", "verdict"])
    op.create_table(
        "device_failing",
        sa.Column("device_pk", sa.Integer, nullable=False),
        sa.Column("check_id", sa.String(80), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("device_pk", "check_id", name="pk_device_failing"),
        sa.ForeignKeyConstraint(["device_pk"], ["devices.id"], name="fk_device_failing_device_pk_devices",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_device_failing_check", "device_failing", ["check_id", "device_pk"])
    op.create_table(
        "reports",
        sa.Column("id", BigId, nullable=False),
        sa.Column("report_id", sa.String(64), nullable=False),
        sa.Column("device_pk", sa.Integer, nullable=False),
        sa.Column("generated_at", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("fail_count", sa.Integer, nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("report_id", name="uq_reports_report_id"),
        sa.ForeignKeyConstraint(["device_pk"], ["devices.id"], name="fk_reports_device_pk_devices",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_reports_device_generated", "reports", ["device_pk", "generated_at"])
    op.create_table(
        "transitions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("device_pk", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("report_pk", BigId),
        sa.Column("detail", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transitions"),
        sa.ForeignKeyConstraint(["device_pk"], ["devices.id"], name="fk_transitions_device_pk_devices",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_transitions_device_at", "transitions", ["device_pk", "at"])
    op.create_index("ix_transitions_at", "transitions", ["at"])
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("events", sa.String(500), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhooks"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BigId, nullable=False),
        sa.Column("webhook_id", sa.Integer, nullable=False),
        sa.Column("transition_id", BigId),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("lease_until", sa.Float),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhooks.id"], name="fk_webhook_deliveries_webhook_id_webhooks",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_webhook", "webhook_deliveries", ["webhook_id", "id"])
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_counters"),
    )


def downgrade() -> None:
    op.drop_table("counters")
    for index, table in [
        ("ix_webhook_deliveries_webhook", "webhook_deliveries"), ("ix_webhook_deliveries_due", "webhook_deliveries"),
        ("ix_transitions_at", "transitions"), ("ix_transitions_device_at", "transitions"),
        ("ix_reports_device_generated", "reports"), ("ix_device_failing_check", "device_failing"),
    ]:
        op.drop_index(index, table_name=table)
    for table in ("webhook_deliveries", "webhooks", "transitions", "reports", "device_failing"):
        op.drop_table(table)
    for index in ("ix_devices_stale_base", "ix_devices_firmware", "ix_devices_last_seen_at", "ix_devices_hostname",
                  "ix_devices_risk_hostname", "ix_devices_verdict"):
        op.drop_index(index, table_name="devices")
    op.drop_table("devices")
    op.drop_table("enroll_secrets")
    op.drop_table("api_tokens")
    op.drop_index("ix_sessions_expires_at", table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("users")
