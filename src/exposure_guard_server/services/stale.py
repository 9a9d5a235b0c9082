"""The stale sweep: a device not seen for 2 × its interval + the grace becomes stale, once, with a
``went_stale`` transition (and its webhooks). Reads compute staleness from ``stale_base`` on their own."""

from __future__ import annotations

import time
from typing import Optional

from sqlalchemy import update

from exposure_guard_server.db import models as m
from exposure_guard_server.db.lock import WriteLock
from exposure_guard_server.services.transitions import add_transition


class StaleSweep:
    def __init__(self, lock: WriteLock, *, grace: float = 600) -> None:
        self.lock = lock
        self.grace = grace

    def run(self, now: Optional[float] = None) -> int:
        """Mark what went stale since the last sweep; returns how many devices."""
        now = time.time() if now is None else now
        cutoff = now - self.grace
        d = m.devices.c
        with self.lock.begin() as conn:
            rows = conn.execute(update(m.devices).where(d.stale.is_(False), d.stale_base < cutoff, d.retired_at.is_(None)).values(
                stale=True).returning(d.id, d.last_seen_at, d.interval_s)).fetchall()
            for row in rows:
                add_transition(conn, row.id, "went_stale", now, None, {
                    "last_seen_at": row.last_seen_at, "interval_s": row.interval_s, "grace_s": self.grace})
        return len(rows)
