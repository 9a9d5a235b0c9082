"""The database schema (SQLAlchemy Core). Alembic migrations in ``migrations/versions`` create it;
``tests/server/test_migrations.py`` checks the two never drift apart.

Times are UNIX epoch seconds (float) everywhere: portable between SQLite and PostgreSQL and cheap to
index and compare."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_login_at", Float),
    Column("role", String(16), nullable=False, default="admin"),  # roles.py
    Column("groups_limited", Boolean, nullable=False, default=False),  # True: only the groups in user_groups
    Column("email", String(254), nullable=False, default=""),  # services/emails.py
    Column("alert_kinds", String(400), nullable=False, default=""),  # transition kinds emailed at once
    Column("digest", Boolean, nullable=False, default=False),  # the daily digest
)

sessions = Table(
    "sessions", metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)


# Customers (or sites): an enrollment secret belongs to at most one group and the boxes enrolled with it land
# in that group; an operator can move a box. Removing a group leaves its boxes and secrets in none.
groups = Table(
    "groups", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)


def _credential_table(name: str, hash_column: str, *more: Column) -> Table:
    """A random secret shown once and kept only as its hash (and a shown prefix): API tokens and
    enrollment secrets (services/admin.py manages both the same way)."""
    return Table(
        name, metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(100), nullable=False),
        Column(hash_column, String(64), nullable=False, unique=True),
        Column("prefix", String(16), nullable=False),
        Column("created_at", Float, nullable=False),
        *more,
    )


api_tokens = _credential_table("api_tokens", "token_hash", Column("last_used_at", Float), Column("revoked_at", Float),
                               Column("role", String(16), nullable=False, default="viewer"),
                               Column("groups_limited", Boolean, nullable=False, default=False))


def _limit_table(name: str, owner: str, column: str) -> Table:
    """The groups a user or API token is limited to (when its ``groups_limited`` is set)."""
    return Table(
        name, metadata,
        Column(column, Integer, ForeignKey(owner + ".id", ondelete="CASCADE"), primary_key=True),
        Column("group_id", Integer, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    )


user_groups = _limit_table("user_groups", "users", "user_id")
token_groups = _limit_table("token_groups", "api_tokens", "token_id")

# Accepted risks (services/acceptances.py): a check accepted for one box or for a group, until a time.
acceptances = Table(
    "acceptances", metadata,
    Column("id", Integer, primary_key=True),
    Column("check_id", String(80), nullable=False),
    Column("device_pk", Integer, ForeignKey("devices.id", ondelete="CASCADE")),
    Column("group_id", Integer, ForeignKey("groups.id", ondelete="CASCADE")),
    Column("reason", String(300), nullable=False),
    Column("until", Float, nullable=False),  # the end of its last day (UTC)
    Column("by", String(160), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float),  # set when it expired or was revoked
    Column("end_reason", String(16), nullable=False, default=""),  # expired | revoked
    Index("ix_acceptances_active_device", "ended_at", "device_pk"),
    Index("ix_acceptances_active_group", "ended_at", "group_id"),
    Index("ix_acceptances_until", "ended_at", "until"),
)

# Who did what to which box, group, secret, token, user or webhook (the Audit page).
audit_log = Table(
    "audit_log", metadata,
    Column("id", BigId, primary_key=True),
    Column("at", Float, nullable=False),
    Column("actor", String(160), nullable=False),
    Column("action", String(40), nullable=False),
    Column("target", String(255), nullable=False),
    Column("group_id", Integer),  # the group the target belongs to, for callers limited to groups
    Column("detail", Text, nullable=False, default="{}"),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_target", "target", "id"),
)

enroll_secrets = _credential_table("enroll_secrets", "secret_hash", Column("revoked_at", Float),
                                   Column("enrolled_count", Integer, nullable=False, default=0),
                                   Column("group_id", Integer))  # groups.id; see devices.group_id

# The search fields in the order services/search.py names them; a line break between them.
SEARCH_FIELDS = ("hostname", "device_id", "model", "lan_addresses")
SEARCH_TEXT_SQL = " || '\n' || ".join("lower(%s)" % field for field in SEARCH_FIELDS)
# Search objects that exist on one engine only, made by migration 0011 outside this metadata (schema checks
# leave them out): the FTS5 table on SQLite (and its shadow tables), the trigram index on PostgreSQL (only
# where the pg_trgm extension could be created).
SEARCH_FTS_TABLE = "device_search"
SEARCH_TRGM_INDEX = "ix_devices_search_text"


def is_search_object(name: str) -> bool:
    return name in (SEARCH_TRGM_INDEX, SEARCH_FTS_TABLE) or name.startswith(SEARCH_FTS_TABLE + "_")


devices = Table(
    "devices", metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", String(128), nullable=False, unique=True),
    Column("node_key_hash", String(64), nullable=False, unique=True),
    Column("enroll_secret_id", Integer, ForeignKey("enroll_secrets.id", ondelete="SET NULL")),
    Column("enrolled_at", Float, nullable=False),
    Column("hostname", String(255), nullable=False, default=""),
    # hostname_key(hostname): sorts NAS2 before NAS10 (names.py)
    Column("hostname_key", String(1024), nullable=False, default=""),
    # groups.id. No foreign key: SQLite adds one only by rebuilding the table, and dropping the old table
    # fires the ON DELETE actions of the tables that point at it (reports, enroll_requests). Removing a group
    # clears it (services/admin.py).
    Column("group_id", Integer),
    Column("model", String(128), nullable=False, default=""),
    Column("firmware", String(64), nullable=False, default=""),
    Column("build", String(64), nullable=False, default=""),
    Column("lan_addresses", Text, nullable=False, default="[]"),
    Column("agent_version", String(64), nullable=False, default=""),
    Column("interval_s", Integer, nullable=False, default=3600),
    Column("last_seen_at", Float),
    Column("last_generated_at", Float),
    Column("last_report_pk", BigId),
    # pending (enrolled, no report yet) | ok | at_risk | exposed; risk orders them 0..3
    Column("verdict", String(16), nullable=False, default="pending"),
    Column("risk", Integer, nullable=False, default=0),
    Column("fail_count", Integer, nullable=False, default=0),
    Column("failing", Text, nullable=False, default="[]"),
    # last_seen (or enrolment) + 2 × interval; stale when older than now − grace
    Column("stale_base", Float, nullable=False),
    Column("stale", Boolean, nullable=False, default=False),
    Column("report_count", Integer, nullable=False, default=0),
    Column("retired_at", Float),  # retired: hidden from lists and counts, history kept (services/lifecycle.py)
    Column("note", Text, nullable=False, default=""),
    # What the device list's search (``q``) looks in, lowered, one field a line (services/search.py):
    # stored on PostgreSQL (with a pg_trgm index), computed when read on SQLite (an FTS5 table indexes it).
    Column("search_text", Text, Computed(SEARCH_TEXT_SQL)),
    Index("ix_devices_verdict", "verdict"),
    Index("ix_devices_hostname", "hostname"),
    Index("ix_devices_last_seen_at", "last_seen_at"),
    Index("ix_devices_firmware", "firmware"),
    Index("ix_devices_stale_base", "stale_base", "verdict"),  # covering: stale counts per verdict
    Index("ix_devices_hostname_key", "hostname_key", "id"),
)

# The default device list order (riskiest first, then by name) straight from an index, for the whole fleet
# and for one group.
Index("ix_devices_risk_hostname", devices.c.risk.desc(), devices.c.hostname_key, devices.c.id)
Index("ix_devices_group_risk", devices.c.group_id, devices.c.risk.desc(), devices.c.hostname_key, devices.c.id)

device_failing = Table(
    "device_failing", metadata,
    Column("device_pk", Integer, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("check_id", String(80), primary_key=True),
    Column("severity", String(16), nullable=False),
    Index("ix_device_failing_check", "check_id", "device_pk"),
)

device_tags = Table(
    "device_tags", metadata,
    Column("device_pk", Integer, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(32), primary_key=True),
    Index("ix_device_tags_tag", "tag", "device_pk"),
)

reports = Table(
    "reports", metadata,
    Column("id", BigId, primary_key=True),
    Column("report_id", String(64), nullable=False, unique=True),
    Column("device_pk", Integer, ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("generated_at", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("fail_count", Integer, nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),  # zlib-compressed report JSON, exactly as received
    Index("ix_reports_device_generated", "device_pk", "generated_at"),
)

transitions = Table(
    "transitions", metadata,
    Column("id", BigId, primary_key=True),
    Column("device_pk", Integer, ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    # reportlogic.TRANSITION_KINDS
    Column("kind", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("report_pk", BigId),
    Column("detail", Text, nullable=False, default="{}"),
    Index("ix_transitions_device_at", "device_pk", "at"),
    Index("ix_transitions_at", "at"),
)

# A re-enrollment of a known device id that came without proof (the device's current node key): it waits
# for an operator. Its node key (kept only as a hash) works once approved; the device's key works until then.
enroll_requests = Table(
    "enroll_requests", metadata,
    Column("id", Integer, primary_key=True),
    Column("device_pk", Integer, ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("node_key_hash", String(64), nullable=False, unique=True),
    Column("enroll_secret_id", Integer, ForeignKey("enroll_secrets.id", ondelete="SET NULL")),
    Column("requested_at", Float, nullable=False),
    Column("client", String(64), nullable=False, default=""),  # the address the request came from
    Column("identity", Text, nullable=False, default="{}"),  # the device identity as sent (JSON)
    Column("agent_version", String(64), nullable=False, default=""),
    Index("ix_enroll_requests_device", "device_pk", "id"),
)

# Login attempts per client address in the current window, counted before the password is checked (so
# requests in flight count too); one row per address, updated atomically by every server process.
login_attempts = Table(
    "login_attempts", metadata,
    Column("client", String(64), primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("window_start", Float, nullable=False, index=True),
)

webhooks = Table(
    "webhooks", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("secret", String(128), nullable=False),
    Column("events", String(500), nullable=False, default="*"),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", Float, nullable=False),
    Column("format", String(16), nullable=False, default="json"),  # webhook_formats.FORMATS
)

# Settings an admin changes at run time (services/server_settings.py), shared by every server process.
server_settings = Table(
    "server_settings", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", BigId, primary_key=True),
    Column("webhook_id", Integer, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("transition_id", BigId),
    Column("event", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("last_status", Integer),
    Column("last_error", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
)

# The email outbox (services/emails.py): alerts queued with their transition, one digest per user and day.
email_deliveries = Table(
    "email_deliveries", metadata,
    Column("id", BigId, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("transition_id", BigInteger),
    Column("kind", String(16), nullable=False),  # alert | digest
    Column("digest_day", String(10)),  # YYYY-MM-DD for a digest: unique per user
    Column("recipient", String(254), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("last_error", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float),
    UniqueConstraint("user_id", "digest_day", name="uq_email_deliveries_user_id"),
    Index("ix_email_deliveries_due", "status", "next_attempt_at"),
)

# Boxes per group and state per day (services/trend.py): the fleet page's trend chart. group_key 0: no group.
daily_counts = Table(
    "daily_counts", metadata,
    Column("day", String(10), primary_key=True),
    Column("group_key", Integer, primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("n", Integer, nullable=False),
)

# Per-process counters (check-ins by result …), added up by every server process every few seconds.
counters = Table(
    "counters", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False, default=0),
)
