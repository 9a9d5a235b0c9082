"""The audit log: who did what, written in the same transaction as the change it records."""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional

from sqlalchemy import Connection, Engine, insert, or_, select

from exposure_guard_server.db import models as m
from exposure_guard_server.reportlogic import format_time
from exposure_guard_server.roles import Caller

SYSTEM = "server"  # the actor of changes nobody asked for (an acceptance that expired)
CLI = "command line"


def actor_name(caller: Optional[Caller]) -> str:
    return caller.name if caller is not None else CLI


def record(conn: Connection, actor: str, action: str, target: str, *, group_id: Optional[int] = None,
           now: Optional[float] = None, **detail: Any) -> None:
    conn.execute(insert(m.audit_log).values(
        at=time.time() if now is None else now, actor=actor[:160], action=action[:40], target=target[:255],
        group_id=group_id, detail=json.dumps(detail, sort_keys=True, default=str)))


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def list(self, caller: Optional[Caller] = None, *, target: str = "", before: Optional[int] = None,
             limit: int = 100) -> Dict[str, Any]:
        """Newest first; a caller limited to groups sees the entries about its groups only."""
        a = m.audit_log.c
        query = select(a.id, a.at, a.actor, a.action, a.target, a.group_id, a.detail)
        if caller is not None and caller.groups is not None:
            query = query.where(a.group_id.in_(sorted(caller.groups)))
        if target:
            query = query.where(or_(a.target == target, a.target.like(target.replace("%", "") + ":%")))
        if before is not None:
            query = query.where(a.id < before)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(a.id.desc()).limit(limit + 1)).all()
        shown: List[Dict[str, Any]] = [{"id": r.id, "at": format_time(r.at), "at_epoch": r.at, "actor": r.actor,
                                        "action": r.action, "target": r.target, "detail": json.loads(r.detail)}
                                       for r in rows[:limit]]
        return {"entries": shown, "next_before": rows[limit - 1].id if len(rows) > limit else None}
