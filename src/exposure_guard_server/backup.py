"""Backup and restore of the server's database, with each engine's own tools: SQLite's online backup API (a
consistent copy while the server runs) and PostgreSQL's pg_dump / pg_restore (custom format).

A backup is one file, readable only by its owner. Restoring puts it into a database, refusing one that
already holds devices unless told to replace them, then migrates it to this server's schema (a backup made
by an older version is upgraded)."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Dict, List, Optional, Tuple

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from exposure_guard_server.db.engine import DatabaseError, create_private_file, is_sqlite, make_engine
from exposure_guard_server.db.lock import schema_lock
from exposure_guard_server.db.schema import migrate

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


def backup(db_url: str, target: Path) -> str:
    """Write a backup of ``db_url`` to ``target`` (created 0600, replaced atomically); returns its kind."""
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    _private_empty(partial)
    try:
        if is_sqlite(db_url):
            _sqlite_backup(_sqlite_path(db_url), partial)
            kind = "sqlite"
        else:
            _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "--file", str(partial),
                  "--dbname", _libpq_url(db_url)], _libpq_env(db_url), "pg_dump")
            kind = "postgresql"
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()
    return kind


BACKUP_NAME = re.compile(r"^eg-(\d{8}T\d{6}Z)(?:-(\d+))?\.backup$")


def backup_into(db_url: str, directory: Path, keep: int, now: Optional[float] = None) -> Tuple[Path, str, List[Path]]:
    """A backup named by its UTC time in ``directory`` (made 0700 if missing), then the oldest of the backups
    there removed so that ``keep`` remain (the new one among them; only files named as this function names
    them are counted or removed). Returns (the new file, its kind, the files removed)."""
    if keep < 1:
        raise BackupError("--keep must be 1 or more (the backup just written is one of them)")
    directory = Path(directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError("cannot make the backup directory %s: %s" % (directory, exc.strerror)) from None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = directory / ("eg-%s.backup" % stamp)
    sequence = 0
    while target.exists():  # two backups in one second: eg-STAMP-1.backup, -2, ...
        sequence += 1
        target = directory / ("eg-%s-%d.backup" % (stamp, sequence))
    kind = backup(db_url, target)
    return target, kind, _prune(directory, keep)


def _prune(directory: Path, keep: int) -> List[Path]:
    named = []
    for path in directory.iterdir():
        match = BACKUP_NAME.match(path.name)
        if match and path.is_file() and not path.is_symlink():
            named.append(((match.group(1), int(match.group(2) or 0)), path))
    named.sort()
    removed = [path for _key, path in named[:-keep]]
    for path in removed:
        path.unlink()
    return removed


def restore(db_url: str, source: Path, *, replace: bool = False) -> Tuple[str, int]:
    """Restore the backup ``source`` into ``db_url`` and migrate it; returns (schema revision, devices)."""
    source = Path(source)
    try:
        with open(source, "rb") as handle:
            magic = handle.read(16)
    except OSError as exc:
        raise BackupError("cannot read the backup %s: %s" % (source, exc.strerror)) from None
    kind = "sqlite" if magic.startswith(SQLITE_MAGIC) else "postgresql" if magic.startswith(PG_MAGIC) else ""
    if not kind:
        raise BackupError("%s is not a backup made by `exposure-guard-server backup` (neither a SQLite database nor a "
                          "pg_dump custom-format file)" % source)
    target = "sqlite" if is_sqlite(db_url) else "postgresql"
    if kind != target:
        raise BackupError("%s is a %s backup and the database is %s: restore it into the same kind of database"
                          % (source, kind, target))
    if kind == "sqlite":
        _check_sqlite_backup(source)
    engine = make_engine(db_url)
    try:
        with schema_lock(engine):
            devices = _devices(engine)
            if devices and not replace:
                raise BackupError("the database already holds %d device(s): stop every server on it and add "
                                  "--replace to overwrite it with the backup" % devices)
            if kind == "sqlite":
                engine.dispose()  # no connection of ours may hold the file while it is overwritten
                _sqlite_backup(str(source), Path(_sqlite_path(db_url)))
            else:
                engine.dispose()  # psql empties the schema: no connection of ours may hold a lock in it
                _pg_restore(db_url, source)
            revision = migrate(engine, locked=True)
        return revision, _devices(engine)
    finally:
        engine.dispose()


def _devices(engine: Engine) -> int:
    if "devices" not in inspect(engine).get_table_names():
        return 0
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM devices")).scalar() or 0)


def _sqlite_path(db_url: str) -> str:
    database = make_url(db_url).database or ""
    if not database or database == ":memory:":
        raise BackupError("an in-memory database has nothing to back up or restore")
    return database


def _sqlite_backup(source: str, target: Path) -> None:
    """Copy a SQLite database page by page with its online backup API: consistent while others write."""
    if not os.path.exists(source):
        raise BackupError("no database at %s" % source)
    create_private_file(Path(target))
    src = sqlite3.connect("file:%s?mode=ro" % source, uri=True, timeout=30)
    try:
        dst = sqlite3.connect(str(target), timeout=30)
        try:
            src.backup(dst, pages=4096)
            if _is_wal(dst):  # a restored file is used by the server in WAL mode again
                dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError("SQLite backup from %s to %s failed: %s" % (source, target, exc)) from None
    finally:
        src.close()


def _is_wal(conn: sqlite3.Connection) -> bool:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


def _check_sqlite_backup(source: Path) -> None:
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % source, uri=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError("%s is not a readable SQLite database: %s" % (source, exc)) from None
    if result != "ok":
        raise BackupError("%s is damaged (SQLite quick_check: %s)" % (source, result))
    if not {"alembic_version", "devices"} <= tables:
        raise BackupError("%s is a SQLite database but not an ExposureGuard server's" % source)


def _pg_restore(db_url: str, source: Path) -> None:
    """Empty the public schema and restore the dump in ONE transaction, so a restore that fails (a truncated
    file, a role that may not create pg_trgm) leaves the database as it was. pg_restore turns the dump into
    SQL, which this process relays to psql running it after the DROP SCHEMA under --single-transaction.
    The relay is what makes a failure safe: psql commits at the end of its input, so when pg_restore fails
    psql is killed before it sees that end, and PostgreSQL rolls the transaction back. (An empty schema
    first, because --clean alone leaves tables the backup does not have, a newer schema's.)"""
    for tool in ("pg_restore", "psql"):
        _require(tool)
    env = _libpq_env(db_url)
    with tempfile.TemporaryFile() as dump_errors, tempfile.TemporaryFile() as load_errors:
        dump = subprocess.Popen(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--file", "-",
                                 str(source)], env=env, stdout=subprocess.PIPE, stderr=dump_errors)
        load = subprocess.Popen(["psql", "--no-psqlrc", "--quiet", "--single-transaction", "--set", "ON_ERROR_STOP=1",
                                 "--dbname", _libpq_url(db_url),
                                 "--command", "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public",
                                 "--file", "-"], env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=load_errors)
        assert dump.stdout is not None and load.stdin is not None
        sql, into = dump.stdout, load.stdin
        psql_stopped = False
        try:
            for chunk in iter(lambda: sql.read(1 << 20), b""):
                into.write(chunk)
        except BrokenPipeError:  # psql stopped at an error (and rolled back): pg_restore has no reader now
            psql_stopped = True
            dump.kill()
        dump_status = dump.wait()
        if psql_stopped or dump_status != 0:
            load.kill()  # before psql reads the end of its input, which would commit what it got
        else:
            try:
                into.close()
            except BrokenPipeError:
                psql_stopped = True
        load_status = load.wait()
        sql.close()
        if psql_stopped or (load_status != 0 and dump_status == 0):
            reason = _tail(load_errors) or "psql exited %d" % load_status
        elif dump_status != 0:  # psql was killed by us, above
            reason = _tail(dump_errors) or "pg_restore exited %d" % dump_status
        else:
            return
    raise BackupError("restore failed, the database is unchanged: %s" % reason)


def _tail(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read().decode("utf-8", "replace").strip()[-2000:]


def _libpq_url(db_url: str) -> str:
    """The URL in libpq's form (no driver name, no password: that goes in the environment, not argv)."""
    url = make_url(db_url).set(drivername="postgresql", password=None)
    return url.render_as_string(hide_password=False)


def _libpq_env(db_url: str) -> Dict[str, str]:
    env = dict(os.environ)
    password = make_url(db_url).password
    if password:
        env["PGPASSWORD"] = str(password)
    return env


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise BackupError("%s is not installed: install the PostgreSQL client tools (Debian: postgresql-client) "
                          "of the server's major version or newer" % tool)


def _run(command: List[str], env: Dict[str, str], tool: str) -> None:
    _require(command[0])
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=6 * 3600)
    except subprocess.TimeoutExpired:
        raise BackupError("%s did not finish in 6 hours" % tool) from None
    if result.returncode != 0:
        raise BackupError("%s failed (%d): %s" % (tool, result.returncode, result.stderr.strip()[-2000:]))


def _private_empty(path: Path) -> None:
    """A new empty file only the owner can read (a backup holds secrets and every report)."""
    if path.exists():
        path.unlink()
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise BackupError("cannot write %s: %s" % (path, exc.strerror)) from None
    os.chmod(path, 0o600)


__all__ = ["BackupError", "DatabaseError", "backup", "backup_into", "restore"]
