"""The event log: transitions filtered by time range, kind, group and device, newest first, paged with a
cursor (``before``: the id of the last event shown) so a page stays right while new events arrive."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from sqlalchemy import Engine, and_, false, select

from exposure_guard_server.db import models as m
from exposure_guard_server.errors import ApiError
from exposure_guard_server.reportlogic import TRANSITION_KINDS, format_time, parse_time
from exposure_guard_server.services.fleet import NO_GROUP

MAX_EVENTS = 500


def parse_moment(text: str, name: str, *, end_of_day: bool = False) -> Optional[float]:
    """A point in time from a query: RFC 3339, a date (``YYYY-MM-DD``, UTC; its end with ``end_of_day``) or
    epoch seconds; None when empty; 400 otherwise."""
    value = (text or "").strip()
    if not value:
        return None
    if len(value) == 10 and value[4] == "-" and value[7] == "-":
        try:
            day = _dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=_dt.timezone.utc)
        except ValueError:
            raise ApiError(400, "%s: %r is not a date (YYYY-MM-DD)" % (name, value[:40])) from None
        return (day + _dt.timedelta(days=1)).timestamp() if end_of_day else day.timestamp()
    try:
        number = float(value)
    except ValueError:
        moment = parse_time(value) if len(value) <= 40 else None
        if moment is None:
            raise ApiError(400, "%s must be a date (YYYY-MM-DD), a time (RFC 3339) or epoch seconds, not %r"
                           % (name, value[:40])) from None
        return moment
    if number != number or not 0 <= number < 1e11:
        raise ApiError(400, "%s: %r is out of range" % (name, value[:40]))
    return number


@dataclass
class EventFilter:
    since: Optional[float] = None  # at or after
    until: Optional[float] = None  # before
    kinds: Tuple[str, ...] = ()  # any of these; () for all
    group: str = ""  # group name, NO_GROUP, or "" for all
    device: str = ""  # a device id
    before: Optional[int] = None  # only events older than this event id (the next page)
    limit: int = 100
    allowed: Optional[FrozenSet[int]] = None  # the caller's groups (roles.py); None: every box

    def validate(self) -> EventFilter:
        unknown = [k for k in self.kinds if k not in TRANSITION_KINDS]
        if unknown:
            raise ApiError(400, "unknown event kind %r; known: %s" % (unknown[0][:40], ", ".join(TRANSITION_KINDS)))
        if not 1 <= self.limit <= MAX_EVENTS:
            raise ApiError(400, "limit must be 1 to %d" % MAX_EVENTS)
        if len(self.group) > 100 or len(self.device) > 128:
            raise ApiError(400, "filter value too long")
        return self

    def query_args(self, **changes: Any) -> Dict[str, str]:
        values = {"since": format_time(self.since), "until": format_time(self.until), "kind": ",".join(self.kinds),
                  "group": self.group, "device": self.device,
                  "before": "" if self.before is None else str(self.before)}
        values.update({k: ("" if v is None else str(v)) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v}


class EventLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def list(self, flt: EventFilter) -> Dict[str, Any]:
        """``{"transitions": [...], "next_before": id or None}`` (None: no older event matches)."""
        flt.validate()
        t, d, g = m.transitions.c, m.devices.c, m.groups.c
        conds: List[Any] = []
        if flt.allowed is not None:
            conds.append(d.group_id.in_(sorted(flt.allowed)) if flt.allowed else false())
        if flt.since is not None:
            conds.append(t.at >= flt.since)
        if flt.until is not None:
            conds.append(t.at < flt.until)
        if flt.kinds:
            conds.append(t.kind.in_(flt.kinds))
        if flt.device:
            conds.append(d.device_id == flt.device)
        if flt.group == NO_GROUP:
            conds.append(d.group_id.is_(None))
        elif flt.group:
            conds.append(g.name == flt.group)
        if flt.before is not None:
            conds.append(t.id < flt.before)
        joined = m.transitions.join(m.devices, t.device_pk == d.id).outerjoin(m.groups, d.group_id == g.id)
        query = (select(t.id, t.kind, t.at, t.detail, d.device_id, d.hostname, g.name.label("group"))
                 .select_from(joined).where(and_(True, *conds)).order_by(t.id.desc()).limit(flt.limit + 1))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        shown = rows[:flt.limit]
        return {
            "transitions": [{"id": r.id, "kind": r.kind, "at": format_time(r.at), "at_epoch": r.at,
                             "device_id": r.device_id, "hostname": r.hostname, "group": r.group or "",
                             "detail": json.loads(r.detail)} for r in shown],
            "next_before": shown[-1].id if len(rows) > flt.limit else None,
        }
