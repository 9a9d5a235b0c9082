"""Per-process counters (check-ins by result, enrollments): counted in memory on the hot path, added to the
shared ``counters`` table every few seconds, so /metrics shows the totals of every server process."""

from __future__ import annotations

import threading
from typing import Dict

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from exposure_guard_server.db import models as m
from exposure_guard_server.db.engine import WRITE


class Counters:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: Dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._pending[name] = self._pending.get(name, 0) + n

    def flush(self) -> None:
        """Add what this process counted since the last flush to the shared table."""
        with self._lock:
            deltas, self._pending = self._pending, {}
        try:
            self._add(deltas)
        except Exception:
            for name, value in deltas.items():  # keep them for the next flush
                self.count(name, value)
            raise

    def totals(self) -> Dict[str, int]:
        """Every process's flushed counts plus this process's unflushed ones."""
        with self.engine.connect() as conn:
            totals = {row.name: int(row.value) for row in conn.execute(select(m.counters.c.name, m.counters.c.value))}
        with self._lock:
            for name, value in self._pending.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def _add(self, deltas: Dict[str, int]) -> None:
        if not deltas:
            return
        c = m.counters.c
        writer = self.engine.execution_options(**WRITE)
        for attempt in range(3):
            try:
                with writer.begin() as conn:
                    for name in sorted(deltas):
                        changed = conn.execute(update(m.counters).where(c.name == name).values(
                            value=c.value + deltas[name])).rowcount
                        if not changed:
                            conn.execute(insert(m.counters).values(name=name, value=deltas[name]))
                return
            except IntegrityError:
                if attempt == 2:
                    raise
