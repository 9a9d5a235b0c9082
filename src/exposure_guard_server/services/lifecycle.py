"""A box's lifecycle: a note and tags, retiring it (hidden from every list and count, its history kept; a
check-in brings it back) and deleting it with its whole history. Each change is in the audit log."""

from __future__ import annotations

import re
import time
from typing import Any, Dict, List, Optional, Sequence, Union

from sqlalchemy import Connection, Engine, delete, insert, select, update

from exposure_guard_server.db import models as m
from exposure_guard_server.db.engine import WRITE
from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import CONTROL_CHARACTERS
from exposure_guard_server.roles import Caller
from exposure_guard_server.services.audit import actor_name, record

TAG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MAX_TAGS = 20
MAX_NOTE = 2000


def parse_tags(tags: Union[str, Sequence[Any], None]) -> List[str]:
    """Tags from a list or a comma/space separated string: lower case, 1–32 of a-z 0-9 . _ -, at most 20."""
    items = re.split(r"[,\s]+", tags) if isinstance(tags, str) else list(tags or [])
    out: List[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ApiError(400, "tags must be strings")
        tag = item.strip().lower()
        if not tag:
            continue
        if not TAG.match(tag):
            raise ApiError(400, "tag %r: use 1 to 32 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
                           % tag[:40])
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise ApiError(400, "at most %d tags per box" % MAX_TAGS)
    return sorted(out)


def check_note(note: Any) -> str:
    if not isinstance(note, str):
        raise ApiError(400, "note must be text")
    note = note.replace("\r\n", "\n").strip()
    if len(note) > MAX_NOTE:
        raise ApiError(400, "note must be at most %d characters" % MAX_NOTE)
    if CONTROL_CHARACTERS.search(note.replace("\n", " ").replace("\t", " ")):
        raise ApiError(400, "note must not hold control characters")
    return note


class Lifecycle:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)

    def _device(self, conn: Connection, device_id: str, caller: Optional[Caller]) -> Any:
        d = m.devices.c
        row = conn.execute(select(d.id, d.group_id, d.retired_at, d.note).where(d.device_id == device_id)
                           .with_for_update()).first()
        if row is None or (caller is not None and not caller.sees_group(row.group_id)):
            raise ApiError(404, "no device %r" % device_id[:128])
        return row

    def update(self, device_id: str, caller: Optional[Caller], *, note: Optional[str] = None,
               tags: Union[str, Sequence[Any], None] = None, retired: Optional[bool] = None,
               now: Optional[float] = None) -> Dict[str, Any]:
        """Change what is given (None: leave it); returns the box's note, tags and retired time."""
        now = time.time() if now is None else now
        new_note = check_note(note) if note is not None else None
        new_tags = parse_tags(tags) if tags is not None else None
        d, t = m.devices.c, m.device_tags.c
        with self.writer.begin() as conn:
            row = self._device(conn, device_id, caller)
            target = "device:" + device_id
            actor = actor_name(caller)
            if new_note is not None and new_note != row.note:
                conn.execute(update(m.devices).where(d.id == row.id).values(note=new_note))
                record(conn, actor, "device.note", target, group_id=row.group_id, now=now, note=new_note[:200])
            if new_tags is not None:
                before = sorted(r[0] for r in conn.execute(select(t.tag).where(t.device_pk == row.id)))
                if before != new_tags:
                    conn.execute(delete(m.device_tags).where(t.device_pk == row.id))
                    if new_tags:
                        conn.execute(insert(m.device_tags), [{"device_pk": row.id, "tag": g} for g in new_tags])
                    record(conn, actor, "device.tags", target, group_id=row.group_id, now=now, tags=new_tags,
                           before=before)
            if retired is not None and retired != (row.retired_at is not None):
                conn.execute(update(m.devices).where(d.id == row.id).values(retired_at=now if retired else None))
                record(conn, actor, "device.retire" if retired else "device.unretire", target, group_id=row.group_id,
                       now=now)
            current = conn.execute(select(d.note, d.retired_at).where(d.id == row.id)).one()
            tags_now = sorted(r[0] for r in conn.execute(select(t.tag).where(t.device_pk == row.id)))
        return {"device_id": device_id, "note": current.note, "tags": tags_now, "retired_at": current.retired_at}

    def delete(self, device_id: str, caller: Optional[Caller]) -> int:
        """Delete a box and its whole history (reports, events, tags, pending re-enrollments); returns how
        many reports went with it. Its node key stops working: the box must enroll again."""
        d, r = m.devices.c, m.reports.c
        with self.writer.begin() as conn:
            row = self._device(conn, device_id, caller)
            reports = conn.execute(select(r.id).where(r.device_pk == row.id)).all()
            # Explicitly, child tables first: SQLite cascades only with PRAGMA foreign_keys (set by our engine,
            # but not by every tool that may open the file).
            for table in (m.device_tags, m.device_failing, m.enroll_requests, m.transitions, m.reports):
                conn.execute(delete(table).where(table.c.device_pk == row.id))
            conn.execute(delete(m.devices).where(d.id == row.id))
            record(conn, actor_name(caller), "device.delete", "device:" + device_id, group_id=row.group_id,
                   reports=len(reports))
        return len(reports)
