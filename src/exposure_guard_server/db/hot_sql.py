"""The check-in path's statements, compiled once for the dialect and run on the driver's cursor:
SQLAlchemy's per-execution bookkeeping costs several times what SQLite takes to run them."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from sqlalchemy import bindparam, insert, null, select, update

from exposure_guard_server.db import models as m


class HotSql:
    """The statements by name (``whoami``, ``pending_key``, ``seen``, ``device_for_update``, ``unretire``,
    ``insert_report``, ``update_seen``, ``update_latest``); ``run`` executes one with named parameters."""

    def __init__(self, dialect: Any) -> None:
        d, r = m.devices.c, m.reports.c
        seen_cols = ("last_seen_at", "stale_base", "stale", "interval_s", "report_count")
        latest_cols = seen_cols + ("last_generated_at", "last_report_pk", "verdict", "risk", "fail_count", "failing",
                                   "hostname", "hostname_key", "model", "firmware", "build", "lan_addresses", "agent_version")
        statements = {
            "whoami": select(d.id, d.device_id).where(d.node_key_hash == bindparam("h")),
            # Only after whoami found nothing: is the key one that waits for an operator's approval?
            "pending_key": select(d.device_id).join_from(m.enroll_requests, m.devices,
                                                         m.enroll_requests.c.device_pk == d.id)
            .where(m.enroll_requests.c.node_key_hash == bindparam("h")),
            "seen": select(r.device_pk, r.body_sha256, r.verdict).where(r.report_id == bindparam("rid")),
            "device_for_update": select(d.id, d.interval_s, d.last_generated_at, d.verdict, d.failing, d.stale,
                                        d.report_count, d.retired_at).where(d.id == bindparam("pk")).with_for_update(),
            # Checks accepted on the server for this box or its group (services/acceptances.py).
            "accepted": select(m.acceptances.c.check_id).where(
                m.acceptances.c.ended_at.is_(None),
                (m.acceptances.c.device_pk == bindparam("pk")) | (m.acceptances.c.group_id == select(d.group_id).where(
                    d.id == bindparam("pk2")).scalar_subquery())),
            "unretire": update(m.devices).where(d.id == bindparam("pk")).values(retired_at=null()),
            "insert_report": insert(m.reports).values(
                {c: bindparam(c) for c in ("report_id", "device_pk", "generated_at", "received_at", "verdict",
                                           "fail_count", "body_sha256", "body")}).returning(r.id),
            "update_seen": update(m.devices).where(d.id == bindparam("pk"))
            .values({c: bindparam(c) for c in seen_cols}),
            "update_latest": update(m.devices).where(d.id == bindparam("pk"))
            .values({c: bindparam(c) for c in latest_cols}),
        }
        self.compiled: Dict[str, Tuple[str, Optional[List[str]]]] = {}
        for name, statement in statements.items():
            compiled = statement.compile(dialect=dialect)
            order = list(compiled.positiontup or []) if compiled.positional else None
            self.compiled[name] = (compiled.string, order)

    def run(self, cursor: Any, name: str, **params: Any) -> Any:
        """Execute on a DBAPI cursor (inside the SQLAlchemy connection's transaction); returns the cursor."""
        text, order = self.compiled[name]
        cursor.execute(text, tuple(params[key] for key in order) if order is not None else params)
        return cursor
