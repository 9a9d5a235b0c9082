"""Accepted risks on the server: an operator accepts a failing check for one box or a whole group, with a
reason, until a day (UTC). While accepted, the finding keeps status "fail" in the stored report but leaves
the box's verdict and failing checks; the box's state moves at once (``risk_accepted``) and moves back by
itself when the acceptance ends (``acceptance_expired``, from the housekeeping sweep) or is revoked
(``acceptance_revoked``). Every step is in the audit log. The agent's own ``[checks] … = accept`` is
separate (reportlogic.counts)."""

from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Any, Dict, FrozenSet, Iterable, List, Optional

from sqlalchemy import Connection, Engine, and_, insert, or_, select, update

from exposure_guard_server.db import models as m
from exposure_guard_server.db.lock import WriteLock
from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import CONTROL_CHARACTERS
from exposure_guard_server.reportlogic import RISK, failing_checks, format_time, verdict_of
from exposure_guard_server.roles import Caller
from exposure_guard_server.services.audit import SYSTEM, actor_name, record
from exposure_guard_server.services.transitions import add_transition

MAX_DAYS = 5 * 366


def end_of_day(text: str, now: float) -> float:
    """``YYYY-MM-DD`` → the epoch second the day ends (UTC); today or later, at most five years ahead."""
    try:
        day = _dt.date.fromisoformat((text or "").strip())
    except ValueError:
        raise ApiError(400, "until must be a day, YYYY-MM-DD") from None
    end = _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc).timestamp() + 86400
    if end <= now:
        raise ApiError(400, "until must be today or later")
    if end > now + MAX_DAYS * 86400:
        raise ApiError(400, "an acceptance may last at most five years")
    return end


def accepted_checks(conn: Connection, device_pk: int, group_id: Optional[int]) -> FrozenSet[str]:
    """The checks accepted right now for this box (for it, or for its group)."""
    a = m.acceptances.c
    scope = a.device_pk == device_pk if group_id is None else or_(a.device_pk == device_pk, a.group_id == group_id)
    return frozenset(r[0] for r in conn.execute(select(a.check_id).where(a.ended_at.is_(None), scope)))


class Acceptances:
    def __init__(self, engine: Engine, lock: WriteLock) -> None:
        self.engine = engine
        self.lock = lock

    def accept(self, check_id: str, reason: str, until: str, caller: Optional[Caller], *, device_id: str = "",
               group: str = "", now: Optional[float] = None) -> int:
        now = time.time() if now is None else now
        check_id = (check_id or "").strip()
        reason = (reason or "").strip()
        if not check_id or len(check_id) > 80:
            raise ApiError(400, "name the check to accept (check_id)")
        if not reason or len(reason) > 300 or CONTROL_CHARACTERS.search(reason):
            raise ApiError(400, "an acceptance needs a reason: one line of at most 300 characters")
        ends = end_of_day(until, now)
        if bool(device_id) == bool(group):
            raise ApiError(400, "accept for one box (device_id) or for a group (group), not both or neither")
        d, g = m.devices.c, m.groups.c
        with self.lock.begin() as conn:
            if device_id:
                row = conn.execute(select(d.id, d.group_id).where(d.device_id == device_id)).first()
                if row is None or (caller is not None and not caller.sees_group(row.group_id)):
                    raise ApiError(404, "no device %r" % device_id[:128])
                values: Dict[str, Any] = {"device_pk": row.id}
                target, group_id = "device:" + device_id, row.group_id
            else:
                group_id = conn.execute(select(g.id).where(g.name == group.strip())).scalar()
                if group_id is None or (caller is not None and not caller.sees_group(group_id)):
                    raise ApiError(404, "no group %r" % group[:100])
                values = {"group_id": group_id}
                target = "group:" + group.strip()
            new_id = conn.execute(insert(m.acceptances).values(
                check_id=check_id, reason=reason, until=ends, by=actor_name(caller), created_at=now, end_reason="",
                **values).returning(m.acceptances.c.id)).scalar_one()
            record(conn, actor_name(caller), "risk.accept", target, group_id=group_id, now=now, check_id=check_id,
                   reason=reason, until=format_time(ends))
            self._recompute(conn, self._devices(conn, values), now, "risk_accepted",
                            {"check_id": check_id, "reason": reason, "until": format_time(ends), "by": actor_name(caller)})
        return int(new_id)

    def revoke(self, acceptance_id: int, caller: Optional[Caller], now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        with self.lock.begin() as conn:
            row = self._active(conn, acceptance_id, caller)
            self._end(conn, [row], now, "revoked", actor_name(caller))

    def expire(self, now: Optional[float] = None) -> int:
        """End every acceptance whose day is over (the housekeeping sweep); returns how many."""
        now = time.time() if now is None else now
        a = m.acceptances.c
        with self.lock.begin() as conn:
            rows = conn.execute(select(m.acceptances).where(a.ended_at.is_(None), a.until <= now)
                                .with_for_update()).all()
            self._end(conn, rows, now, "expired", SYSTEM)
        return len(rows)

    def list(self, caller: Optional[Caller] = None, *, device_id: str = "", active: bool = True) -> List[Dict[str, Any]]:
        a, d, g = m.acceptances.c, m.devices.c, m.groups.c
        query = (select(a.id, a.check_id, a.reason, a.until, a.by, a.created_at, a.ended_at, a.end_reason,
                        d.device_id, g.name.label("group"), a.group_id, d.group_id.label("device_group"))
                 .select_from(m.acceptances.outerjoin(m.devices, a.device_pk == d.id)
                              .outerjoin(m.groups, a.group_id == g.id)).order_by(a.id.desc()).limit(1000))
        if active:
            query = query.where(a.ended_at.is_(None))
        if device_id:
            group_of = select(d.group_id).where(d.device_id == device_id).scalar_subquery()
            query = query.where(or_(d.device_id == device_id, and_(a.group_id.is_not(None), a.group_id == group_of)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        out = []
        for r in rows:
            owner = r.group_id if r.group_id is not None else r.device_group
            if caller is not None and not caller.sees_group(owner):
                continue
            out.append({"id": r.id, "check_id": r.check_id, "reason": r.reason, "until": format_time(r.until),
                        "by": r.by, "created_at": format_time(r.created_at), "device_id": r.device_id or "",
                        "group": r.group or "", "ended_at": format_time(r.ended_at), "end_reason": r.end_reason})
        return out

    # -- inside ------------------------------------------------------------------------------------------
    def _active(self, conn: Connection, acceptance_id: int, caller: Optional[Caller]) -> Any:
        a = m.acceptances.c
        row = conn.execute(select(m.acceptances).where(a.id == acceptance_id, a.ended_at.is_(None))
                           .with_for_update()).first()
        owner = None
        if row is not None:
            owner = row.group_id if row.group_id is not None else conn.execute(
                select(m.devices.c.group_id).where(m.devices.c.id == row.device_pk)).scalar()
        if row is None or (caller is not None and not caller.sees_group(owner)):
            raise ApiError(404, "no active acceptance %d" % acceptance_id)
        return row

    def _end(self, conn: Connection, rows: Iterable[Any], now: float, why: str, actor: str) -> None:
        a = m.acceptances.c
        for row in rows:
            conn.execute(update(m.acceptances).where(a.id == row.id).values(ended_at=now, end_reason=why))
            scope = {"device_pk": row.device_pk} if row.device_pk is not None else {"group_id": row.group_id}
            record(conn, actor, "risk." + ("expire" if why == "expired" else "revoke"), "acceptance:%d" % row.id,
                   group_id=row.group_id, now=now, check_id=row.check_id)
            self._recompute(conn, self._devices(conn, scope), now,
                            "acceptance_expired" if why == "expired" else "acceptance_revoked",
                            {"check_id": row.check_id, "reason": row.reason, "until": format_time(row.until)})

    def _devices(self, conn: Connection, scope: Dict[str, Any]) -> List[int]:
        d = m.devices.c
        cond = d.id == scope["device_pk"] if "device_pk" in scope else d.group_id == scope["group_id"]
        return [r[0] for r in conn.execute(select(d.id).where(cond))]

    def _recompute(self, conn: Connection, device_pks: List[int], now: float, kind: str, detail: Dict[str, Any]) -> None:
        """Derive each box's verdict and failing checks again from its latest report and what is accepted
        now; a box whose latest report fails the check gets a ``kind`` transition saying how it moved."""
        from exposure_guard_server.services.ingest import load_body, sync_failing

        d, r = m.devices.c, m.reports.c
        for pk in device_pks:
            dev = conn.execute(select(d.id, d.group_id, d.verdict, d.failing, d.last_report_pk).where(d.id == pk)
                               .with_for_update()).first()
            if dev is None or dev.last_report_pk is None:
                continue
            body = conn.execute(select(r.body).where(r.id == dev.last_report_pk)).scalar()
            if body is None:
                continue
            doc = load_body(body)
            accepted = accepted_checks(conn, pk, dev.group_id)
            failing = {k: v for k, v in failing_checks(doc).items() if k not in accepted}
            verdict = verdict_of(doc, accepted)
            before = {item[0]: item[1] for item in json.loads(dev.failing)}
            touched = detail["check_id"] in failing_checks(doc)
            if before == failing and verdict == dev.verdict and not touched:
                continue
            conn.execute(update(m.devices).where(d.id == pk).values(
                verdict=verdict, risk=RISK[verdict], fail_count=len(failing), failing=json.dumps(sorted(failing.items()))))
            if before != failing:
                sync_failing(conn, pk, before, failing)
            if touched:
                add_transition(conn, pk, kind, now, dev.last_report_pk,
                               dict(detail, previous_verdict=dev.verdict, verdict=verdict))

