"""Backup and restore (`exposure-guard-server backup` / `restore`) on SQLite and on the real PostgreSQL: a
backup taken while the real server runs is restored into a new database, and a server started on it serves
the same fleet, the same admin login and the same agent keys."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import requests
from sqlalchemy import text
from tests.support.server import device_identity, make_report
from tests.support.serverproc import ADMIN_PASSWORD, ServerProcess, cli, free_port, pg_database

from exposure_guard_server.db import head_revision, make_engine
from exposure_guard_server.db.schema import current_revision


def _databases(engine_name: str, tmp_path: Path) -> Tuple[str, str]:
    if engine_name == "sqlite":
        return "sqlite:///%s" % (tmp_path / "live.db"), "sqlite:///%s" % (tmp_path / "restored" / "eg.db")
    live = pg_database("eg_backup_live_%d" % os.getpid())
    if live is None:
        pytest.skip("needs PostgreSQL: set EXPOSURE_GUARD_TEST_PG_URL (.ci/run starts one)")
    return live, pg_database("eg_backup_restored_%d" % os.getpid()) or ""


def _fleet(url: str, token: str) -> List[Tuple[str, str, str]]:
    answer = requests.get(url + "/api/v1/devices?limit=100", headers={"Authorization": "Bearer " + token}, timeout=30)
    assert answer.status_code == 200, answer.text
    return sorted((d["device_id"], d["hostname"], d["verdict"]) for d in answer.json()["devices"])


def _checkin(url: str, key: str, doc: Dict) -> int:
    return requests.post(url + "/api/v1/checkin", data=json.dumps(doc).encode(), timeout=30,
                         headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"}).status_code


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
def test_a_backup_taken_while_serving_restores_and_is_served(engine_name: str, tmp_path: Path) -> None:
    live_db, restored_db = _databases(engine_name, tmp_path)
    init = cli("init", "--db", live_db).stdout
    secret = init.split("first enrollment secret (shown once): ")[1].split()[0]
    token = cli("api-token", "create", "--db", live_db).stdout.strip().splitlines()[-1]
    live = ServerProcess(live_db, free_port(), tmp_path / "live.log")
    live.start()
    keys: Dict[str, str] = {}
    try:
        for i, failing in enumerate([[], ["service.telnet"], ["router.upnp-mappings"]]):
            ident = device_identity("qnap-backup-%d" % i, "backup-nas-%d" % i)
            answer = requests.post(live.url + "/api/v1/enroll", json={"enroll_secret": secret, "device": ident}, timeout=30)
            keys[ident["device_id"]] = answer.json()["node_key"]
            doc = make_report(ident, failing, exposed="router.upnp-mappings" in failing)
            assert _checkin(live.url, keys[ident["device_id"]], doc) == 201
        before = _fleet(live.url, token)
        backup_file = tmp_path / "eg.backup"
        out = cli("backup", "--db", live_db, str(backup_file)).stdout  # while the server runs
        assert "written to" in out
        assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600  # it holds secrets and every report
    finally:
        live.stop()
    assert [v for _d, _h, v in before] == ["ok", "at_risk", "exposed"]

    out = cli("restore", "--db", restored_db, str(backup_file)).stdout
    assert "3 device(s), schema revision %s" % head_revision() in out
    restored = ServerProcess(restored_db, free_port(), tmp_path / "restored.log")
    restored.start()
    try:
        assert _fleet(restored.url, token) == before  # the same fleet, through the same API token
        session = requests.Session()
        page = session.get(restored.url + "/login", timeout=30)
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        login = session.post(restored.url + "/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                                             "csrf": csrf, "next": "/"}, allow_redirects=False, timeout=30)
        assert login.status_code == 303
        # An agent goes on checking in with its key: the box that was exposed is fixed.
        ident = device_identity("qnap-backup-2", "backup-nas-2")
        assert _checkin(restored.url, keys["qnap-backup-2"], make_report(ident, [])) == 201
        assert ("qnap-backup-2", "backup-nas-2", "ok") in _fleet(restored.url, token)
    finally:
        restored.stop()

    # A database that holds devices is not overwritten unless asked; asked, it is.
    refused = cli("restore", "--db", restored_db, str(backup_file), check=False)
    assert refused.returncode != 0 and "already holds 3 device(s)" in refused.stderr and "--replace" in refused.stderr
    cli("restore", "--db", restored_db, str(backup_file), "--replace")
    _assert_holds_the_fleet(restored_db)

    # A restore that fails half-way (a cut-off backup) leaves the database as it was, even with --replace.
    cut = tmp_path / "cut.backup"
    whole = backup_file.read_bytes()
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    failed = cli("restore", "--db", restored_db, str(cut), "--replace", check=False)
    assert failed.returncode != 0, failed.stdout
    _assert_holds_the_fleet(restored_db)
    assert ("the database is unchanged" if engine_name == "postgresql" else "SQLite") in failed.stderr, failed.stderr


def _assert_holds_the_fleet(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM devices")).scalar() == 3
    finally:
        engine.dispose()


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    target = "sqlite:///%s" % (tmp_path / "target.db")
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a backup at all")
    result = cli("restore", "--db", target, str(junk), check=False)
    assert result.returncode != 0 and "not a backup made by" in result.stderr
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    result = cli("restore", "--db", target, str(other), check=False)
    assert result.returncode != 0 and "not an ExposureGuard server's" in result.stderr
    damaged = tmp_path / "damaged.db"
    cli("init", "--db", "sqlite:///%s" % (tmp_path / "good.db"))
    data = bytearray((tmp_path / "good.db").read_bytes())
    data[4096:8192] = b"\xff" * 4096  # a page of the schema's tables overwritten
    damaged.write_bytes(bytes(data))
    result = cli("restore", "--db", target, str(damaged), check=False)
    assert result.returncode != 0 and ("damaged" in result.stderr or "not a readable" in result.stderr), result.stderr
    pg_dump = tmp_path / "pg.backup"
    pg_dump.write_bytes(b"PGDMP" + b"\x00" * 100)
    result = cli("restore", "--db", target, str(pg_dump), check=False)
    assert result.returncode != 0 and "postgresql backup and the database is sqlite" in result.stderr
    assert not (tmp_path / "target.db").exists() or os.path.getsize(tmp_path / "target.db") == 0


def test_a_postgresql_restore_that_psql_stops_early_returns_and_changes_nothing(tmp_path: Path) -> None:
    """psql stops at the first failing statement while pg_restore still has megabytes to write: the restore
    must end (pg_restore is stopped too, not left blocked on a pipe nobody reads), say psql's reason and leave
    the database as it was."""
    target = pg_database("eg_backup_psql_stops_%d" % os.getpid())
    if target is None:
        pytest.skip("needs PostgreSQL: set EXPOSURE_GUARD_TEST_PG_URL (.ci/run starts one)")
    source = pg_database("eg_backup_psql_stops_src_%d" % os.getpid()) or ""
    cli("init", "--db", source)
    engine = make_engine(source)
    with engine.begin() as conn:  # a schema the target also has (psql stops there), then 4 MB of rows after it
        conn.execute(text("CREATE SCHEMA extra"))
        conn.execute(text("CREATE TABLE extra.filler AS SELECT g, repeat('x', 200) AS pad "
                          "FROM generate_series(1, 20000) AS g"))
    engine.dispose()
    dump = tmp_path / "clash.backup"
    cli("backup", "--db", source, str(dump))
    cli("init", "--db", target)
    engine = make_engine(target)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA extra"))
    engine.dispose()
    failed = cli("restore", "--db", target, str(dump), "--replace", check=False)  # cli's own timeout bounds a hang
    assert failed.returncode != 0 and "the database is unchanged" in failed.stderr, failed.stderr
    assert 'schema "extra" already exists' in failed.stderr, failed.stderr
    engine = make_engine(target)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
