"""Engines for SQLite (WAL, the embedded default) and PostgreSQL (psycopg 3), and database URLs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

WRITE = {"eg_write": True}


class DatabaseError(Exception):
    """The database URL is unusable or the schema is not at the version this server needs."""


def default_data_dir() -> Path:
    env = os.environ.get("EXPOSURE_GUARD_SERVER_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "exposure-guard-server"


def default_db_url() -> str:
    return os.environ.get("EXPOSURE_GUARD_SERVER_DB") or "sqlite:///%s" % (default_data_dir() / "exposure-guard.db")


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` as psycopg 3, and a bare path as a SQLite file."""
    url = url.strip()
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://"):]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    elif "://" not in url:
        url = "sqlite:///" + os.path.abspath(url)
    return url


def is_sqlite(url: str) -> bool:
    return normalise_url(url).startswith("sqlite")


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseError("not a database URL: %r (%s)" % (url, exc)) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            create_private_file(Path(database))
        engine = create_engine(url, echo=echo, poolclass=NullPool if database in ("", ":memory:") else None,
                               connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                             pool_recycle=1800)
    raise DatabaseError("unsupported database %r: use sqlite:///PATH or postgresql://..." % parsed.get_backend_name())


def create_private_file(path: Path) -> None:
    """Create the SQLite file 0600 (it holds webhook secrets and every report) and any folder on its way
    0700, before SQLite opens it; SQLite gives its -wal and -shm files the database file's mode. An existing
    file or folder is left as it is."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)  # whatever the umask
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return
    os.chmod(path, 0o600)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below) so write transactions can take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # BEGIN IMMEDIATE for writes: a deferred transaction that later wants to write can fail with
        # SQLITE_BUSY at once instead of waiting; IMMEDIATE queues on busy_timeout instead.
        if conn.get_execution_options().get("eg_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(normalise_url(url)).render_as_string(hide_password=True)
    except Exception:
        return "<database>"
