"""The email alerts queued with a transition (services/transitions.py asks ``subscribers`` and calls
``queue_alert`` in the transition's own transaction). Sending them, and the digests: services/emails.py."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from sqlalchemy import Connection, insert, select

from exposure_guard import __version__
from exposure_guard_server.db import models as m
from exposure_guard_server.webhook_formats import headline


def subscribers(conn: Connection, kind: str, group_id: Optional[int]) -> List[Any]:
    """Users with an address who want ``kind`` at once and may see a box of ``group_id``."""
    u = m.users.c
    rows = conn.execute(select(u.id, u.email, u.alert_kinds, u.groups_limited).where(u.email != "")).all()
    wanted = [r for r in rows if kind in r.alert_kinds.split(",")]
    limited = [r.id for r in wanted if r.groups_limited]
    allowed = set()
    if limited and group_id is not None:
        allowed = {r[0] for r in conn.execute(select(m.user_groups.c.user_id).where(
            m.user_groups.c.user_id.in_(limited), m.user_groups.c.group_id == group_id))}
    return [r for r in wanted if not r.groups_limited or r.id in allowed]


def queue_alert(conn: Connection, users: List[Any], transition_id: int, doc: Dict[str, Any], now: float) -> int:
    """Queue the alert for ``users`` (``subscribers``), inside the transition's transaction; returns how many."""
    subject = "[ExposureGuard] " + headline(doc)
    body = alert_text(doc)
    conn.execute(insert(m.email_deliveries), [
        {"user_id": u.id, "transition_id": transition_id, "kind": "alert", "digest_day": None, "recipient": u.email,
         "subject": subject[:300], "body": body, "status": "pending", "attempts": 0, "next_attempt_at": now,
         "last_error": "", "created_at": now} for u in users])
    return len(users)


def alert_text(doc: Dict[str, Any]) -> str:
    device, detail = doc["device"], doc.get("detail") or {}
    lines = [headline(doc), "",
             "Box:      %s (%s)" % (device.get("hostname", ""), device.get("device_id", "")),
             "Group:    %s" % (device.get("group") or "none"),
             "Model:    %s, firmware %s" % (device.get("model", ""), device.get("firmware", "")),
             "Verdict:  %s" % device.get("verdict", ""), "When:     %s" % doc.get("at", "")]
    if detail.get("newly_failing"):
        lines.append("Now failing: " + ", ".join(detail["newly_failing"]))
    if detail.get("no_longer_failing"):
        lines.append("No longer failing: " + ", ".join(detail["no_longer_failing"]))
    if doc.get("dashboard_url"):
        lines += ["", "Open it: " + doc["dashboard_url"]]
    lines += ["", "-- ", "ExposureGuard server %s. Change what you get on the Admin page." % __version__]
    return "\n".join(lines) + "\n"
