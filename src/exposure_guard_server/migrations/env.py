"""Alembic environment: run by ``exposure_guard_server.db.schema.migrate`` with a live connection."""

from __future__ import annotations

from alembic import context

from exposure_guard_server.db.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through db.schema.migrate
    raise RuntimeError("run migrations with `exposure-guard-server init --db URL`")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
