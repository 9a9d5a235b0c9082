"""The Alembic migrations build exactly the schema in db/models.py, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from exposure_guard_server import db
from exposure_guard_server.db.models import is_search_object, metadata
from exposure_guard_server.db.schema import alembic_config


def test_migrated_schema_matches_models(engine: object) -> None:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        # The search index is made outside the metadata (one engine's kind each): db/models.py.
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": lambda name, _type, _parents:
                                                         not is_search_object(name or "")})
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


def test_groups_migration_keeps_every_row_and_fills_the_natural_name_key(engine: object) -> None:
    """0004 adds columns in place: a device's secret, reports and transitions survive the upgrade and the
    downgrade (a table rebuild on SQLite would delete them through ON DELETE CASCADE / SET NULL)."""
    from alembic import command
    from sqlalchemy import text

    from exposure_guard_server.db.schema import alembic_config

    with engine.connect() as conn:  # type: ignore[attr-defined]
        command.downgrade(alembic_config(conn), "0003")
        conn.commit()
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("INSERT INTO enroll_secrets (id, name, secret_hash, prefix, created_at, enrolled_count) "
                          "VALUES (7, 's', 'hash', 'egs_', 0, 2)"))
        for pk, host in ((1, "NAS10"), (2, "nas2")):
            conn.execute(text("INSERT INTO devices (id, device_id, node_key_hash, enroll_secret_id, enrolled_at, "
                              "hostname, model, firmware, build, lan_addresses, agent_version, interval_s, verdict, "
                              "risk, fail_count, failing, stale_base, stale, report_count) VALUES (:pk, :d, :h, 7, 0, "
                              ":host, '', '', '', '[]', '', 3600, 'ok', 1, 0, '[]', 0, false, 1)"),
                         {"pk": pk, "d": "dev-%d" % pk, "h": "key-%d" % pk, "host": host})
            conn.execute(text("INSERT INTO reports (id, report_id, device_pk, generated_at, received_at, verdict, "
                              "fail_count, body_sha256, body) VALUES (:pk, :r, :pk, 1, 1, 'ok', 0, 's', :b)"),
                         {"pk": pk, "r": "r-%d" % pk, "b": b"x"})
            conn.execute(text("INSERT INTO transitions (device_pk, kind, at, detail) VALUES (:pk, 'enrolled', 0, '{}')"),
                         {"pk": pk})

    def rows() -> tuple:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            return (conn.execute(text("SELECT id, enroll_secret_id FROM devices ORDER BY id")).all(),
                    conn.execute(text("SELECT count(*) FROM reports")).scalar(),
                    conn.execute(text("SELECT count(*) FROM transitions")).scalar())

    before = rows()
    assert before == ([(1, 7), (2, 7)], 2, 2)
    db.migrate(engine)  # type: ignore[arg-type]
    assert rows() == before
    with engine.connect() as conn:  # type: ignore[attr-defined]
        keys = conn.execute(text("SELECT hostname FROM devices ORDER BY hostname_key")).scalars().all()
        assert keys == ["nas2", "NAS10"]
        command.downgrade(alembic_config(conn), "0003")
        conn.commit()
    assert rows() == before
