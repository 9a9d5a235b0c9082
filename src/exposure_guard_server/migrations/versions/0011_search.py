"""Indexed device search: devices.search_text (the searched fields, lowered) with a pg_trgm GIN index on
PostgreSQL, or an FTS5 trigram table kept in step by triggers on SQLite (services/search.py).

Without the pg_trgm extension (not installed, or not allowed to create it) or without FTS5's trigram
tokenizer (SQLite before 3.34) the migration still succeeds: search then scans, and says so in the log.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

from exposure_guard_server.db.models import SEARCH_FTS_TABLE, SEARCH_TEXT_SQL, SEARCH_TRGM_INDEX

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

log = logging.getLogger("exposure_guard_server.search")

FIELDS_CHANGED = "old.id IS NOT new.id OR old.hostname IS NOT new.hostname OR old.device_id IS NOT new.device_id " \
                 "OR old.model IS NOT new.model OR old.lan_addresses IS NOT new.lan_addresses"
# An external-content FTS5 table: it keeps only the index; a row leaves it with the values it was indexed
# with (old.search_text, computed from the old row) and enters with the new ones. A check-in rewrites the
# host name, model and addresses with the same values: the WHEN clause keeps that away from the index.
SQLITE_TRIGGERS = {
    "device_search_ai": "AFTER INSERT ON devices BEGIN "
                        "INSERT INTO device_search (rowid, search_text) VALUES (new.id, new.search_text); END",
    "device_search_ad": "AFTER DELETE ON devices BEGIN "
                        "INSERT INTO device_search (device_search, rowid, search_text) "
                        "VALUES ('delete', old.id, old.search_text); END",
    "device_search_au": "AFTER UPDATE OF id, hostname, device_id, model, lan_addresses ON devices WHEN %s BEGIN "
                        "INSERT INTO device_search (device_search, rowid, search_text) "
                        "VALUES ('delete', old.id, old.search_text); "
                        "INSERT INTO device_search (rowid, search_text) VALUES (new.id, new.search_text); END"
                        % FIELDS_CHANGED,
}


TRGM_FIX = "CREATE EXTENSION pg_trgm; CREATE INDEX %s ON devices USING gin (search_text gin_trgm_ops);" \
    % SEARCH_TRGM_INDEX


def _first_line(exc: sa.exc.DBAPIError) -> str:
    return (str(exc.orig).strip().splitlines() or [""])[0]


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild: see 0004). PostgreSQL stores it (filled for every row here);
    # SQLite adds it VIRTUAL: computed when read, nothing stored.
    persisted = True if op.get_bind().dialect.name == "postgresql" else None  # PostgreSQL 18 would make it virtual
    op.add_column("devices", sa.Column("search_text", sa.Text, sa.Computed(SEARCH_TEXT_SQL, persisted=persisted)))
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        _postgresql_index(conn)
    elif conn.dialect.name == "sqlite":
        _sqlite_fts(conn)


def _postgresql_index(conn: sa.Connection) -> None:
    try:
        with conn.begin_nested():  # a failed CREATE EXTENSION must not abort the migration's transaction
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("search: the pg_trgm extension could not be created (%s): the device search scans the devices "
                    "table. To index it, a superuser runs in this database: %s", _first_line(exc), TRGM_FIX)
        return
    conn.execute(sa.text("CREATE INDEX %s ON devices USING gin (search_text gin_trgm_ops)" % SEARCH_TRGM_INDEX))


def _sqlite_fts(conn: sa.Connection) -> None:
    try:
        with conn.begin_nested():
            conn.execute(sa.text("CREATE VIRTUAL TABLE %s USING fts5(search_text, content='devices', "
                                 "content_rowid='id', tokenize='trigram')" % SEARCH_FTS_TABLE))
    except sa.exc.DBAPIError as exc:
        log.warning("search: no FTS5 trigram tokenizer in this SQLite (%s; it needs 3.34 or later): the device "
                    "search scans the devices table", _first_line(exc))
        return
    for name, body in SQLITE_TRIGGERS.items():
        conn.execute(sa.text("CREATE TRIGGER %s %s" % (name, body)))
    # Index the devices already there.
    conn.execute(sa.text("INSERT INTO %s (%s) VALUES ('rebuild')" % (SEARCH_FTS_TABLE, SEARCH_FTS_TABLE)))


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute("DROP TRIGGER IF EXISTS %s" % name)
        op.execute("DROP TABLE IF EXISTS %s" % SEARCH_FTS_TABLE)
    else:
        op.execute("DROP INDEX IF EXISTS %s" % SEARCH_TRGM_INDEX)
        # pg_trgm stays: other databases' objects or the DBA may use it.
    # ALTER TABLE … DROP COLUMN (SQLite 3.35 and later): no table rebuild (see 0004).
    op.execute("ALTER TABLE devices DROP COLUMN search_text")
