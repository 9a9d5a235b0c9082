"""The write lock: SQLite has one writer at a time. Queueing here (threads on a lock, processes on an flock
of a file next to the database) wakes the next writer at once; SQLite's busy handler polls with sleeps.
On PostgreSQL it is a plain write transaction.

The schema lock: one process at a time creates or migrates the schema (and makes the first admin login), so
server instances that start at once on one database neither race nor fail (a PostgreSQL advisory lock, an
flock of a file next to a SQLite database)."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Dict, Iterator, Optional

from sqlalchemy import Connection, Engine, text

from exposure_guard_server.db.engine import WRITE, is_sqlite

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

_FDS: Dict[str, int] = {}  # one open lock file per database per process


class WriteLock:
    def __init__(self, engine: Engine) -> None:
        self.writer = engine.execution_options(**WRITE)
        self._lock: Optional[threading.Lock] = None
        self._file = ""
        if is_sqlite(str(engine.url)):
            self._lock = threading.Lock()
            database = engine.url.database or ""
            if database and database != ":memory:":
                self._file = database + ".write-lock"

    @contextlib.contextmanager
    def begin(self, conn: Optional[Connection] = None) -> Iterator[Connection]:
        """A write transaction, holding the in-process and cross-process locks first (SQLite).

        With ``conn`` (a connection with the write option), the transaction is on that connection."""
        if self._lock is not None:
            self._lock.acquire()
        fd = -1
        try:
            fd = self._flock()
            if conn is not None:
                with conn.begin():
                    yield conn
            else:
                with self.writer.begin() as new:
                    yield new
        finally:
            if fd >= 0 and fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if self._lock is not None:
                self._lock.release()

    def _flock(self) -> int:
        if not self._file or fcntl is None:
            return -1
        fd = _FDS.get(self._file)
        if fd is None:
            fd = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o600)
            _FDS[self._file] = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd


SCHEMA_LOCK_KEY = 0x45475343  # "EGSC": the advisory lock id every ExposureGuard server takes to change the schema


@contextlib.contextmanager
def schema_lock(engine: Engine) -> Iterator[None]:
    """Held while the schema is created or migrated; others wait (they then find it at the newest revision)."""
    if is_sqlite(str(engine.url)):
        database = engine.url.database or ""
        if not database or database == ":memory:" or fcntl is None:
            yield
            return
        fd = os.open(database + ".schema-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock
        return
    # A session-level advisory lock on a connection of its own, outside any transaction: it lasts until unlocked
    # (or until the connection ends, when a process dies holding it).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
