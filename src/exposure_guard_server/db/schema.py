"""The schema version: Alembic migrations (``exposure_guard_server/migrations``) create and upgrade it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import Engine

from exposure_guard_server.db.engine import WRITE, DatabaseError
from exposure_guard_server.db.lock import schema_lock

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(None)).get_current_head() or ""


def current_revision(engine: Engine) -> Optional[str]:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine, *, locked: bool = False) -> str:
    """Create or upgrade the schema to the newest revision; returns it. Several processes may call this at
    once: they take turns (``locked``: the caller already holds ``schema_lock``)."""
    from alembic import command

    with contextlib.nullcontext() if locked else schema_lock(engine), \
            engine.connect().execution_options(**WRITE) as connection:
        command.upgrade(alembic_config(connection), "head")
        connection.commit()
    return current_revision(engine) or ""


def require_current(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DatabaseError(
            "the database schema is at revision %s but this server needs %s: run `exposure-guard-server init "
            "--db URL` first (it creates or migrates the database)" % (current or "none (empty database)", head))
