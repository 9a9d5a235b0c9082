"""The Alembic migrations build exactly the schema in db/models.py, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from exposure_guard_server import db
from exposure_guard_server.db.models import metadata
from exposure_guard_server.db.schema import alembic_config


def test_migrated_schema_matches_models(engine: object) -> None:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []
    assert db.current_revision(engine) == db.head_revision()  # type: ignore[arg-type]


def test_migrate_is_idempotent_and_downgrade_works(engine: object) -> None:
    from alembic import command

    assert db.migrate(engine) == db.head_revision()  # type: ignore[arg-type]
    with engine.connect() as conn:  # type: ignore[attr-defined]
        command.downgrade(alembic_config(conn), "base")
        conn.commit()
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}  # type: ignore[arg-type]
    assert db.migrate(engine) == db.head_revision()  # type: ignore[arg-type]
    assert "devices" in inspect(engine).get_table_names()  # type: ignore[arg-type]


def test_require_current_refuses_an_empty_database(tmp_path: object) -> None:
    import pytest

    engine = db.make_engine("sqlite:///%s/empty.db" % tmp_path)
    with pytest.raises(db.DatabaseError, match="exposure-guard-server init"):
        db.require_current(engine)
