"""Transitions (reportlogic.TRANSITION_KINDS) and the webhook outbox:
each transition queues one delivery per enabled webhook that wants its kind, in the same transaction, so
none is lost when a server process dies (``webhooks.WebhookSender`` delivers them)."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from sqlalchemy import Connection, insert, select

from exposure_guard import __version__
from exposure_guard_server.db import models as m
from exposure_guard_server.reportlogic import ONBOARDING_KINDS, format_time
from exposure_guard_server.services import email_outbox
from exposure_guard_server.services.server_settings import read as read_setting
from exposure_guard_server.webhook_formats import device_link, render


def add_transition(conn: Connection, device_pk: int, kind: str, now: float, report_pk: Optional[int],
                   detail: Dict[str, Any]) -> int:
    """Record a transition and queue it for every enabled webhook that wants this kind (same transaction),
    in each webhook's format."""
    text = json.dumps(detail, sort_keys=True)
    transition_id = conn.execute(insert(m.transitions).values(
        device_pk=device_pk, kind=kind, at=now, report_pk=report_pk, detail=text).returning(m.transitions.c.id)).scalar_one()
    hooks = conn.execute(select(m.webhooks.c.id, m.webhooks.c.events, m.webhooks.c.format)
                         .where(m.webhooks.c.enabled.is_(True))).all()
    wanted = [hook for hook in hooks if wants(hook.events, kind)]
    readers = _email_subscribers(conn, kind, device_pk)
    if wanted or readers:
        doc = build_payload(conn, transition_id)  # once, for every webhook format and every email
        if readers:
            email_outbox.queue_alert(conn, readers, transition_id, doc, now)
        if wanted:
            conn.execute(insert(m.webhook_deliveries), [
                {"webhook_id": hook.id, "transition_id": transition_id, "event": kind,
                 "payload": render(hook.format, doc), "status": "pending", "attempts": 0, "next_attempt_at": now,
                 "last_error": "", "created_at": now} for hook in wanted])
    return transition_id


def _email_subscribers(conn: Connection, kind: str, device_pk: int) -> List[Any]:
    """Who gets this transition by email (services/email_outbox.py): nobody without an SMTP server, or for
    an onboarding kind."""
    if kind in ONBOARDING_KINDS or not read_setting(conn, "smtp_host"):
        return []
    group_id = conn.execute(select(m.devices.c.group_id).where(m.devices.c.id == device_pk)).scalar()
    return email_outbox.subscribers(conn, kind, group_id)


def wants(events: str, kind: str) -> bool:
    """Whether a webhook subscribed to ``events`` (its stored list) gets ``kind``: "*" is every kind but the
    onboarding ones, which are sent only when named."""
    chosen = events.split(",")
    return kind in chosen or ("*" in chosen and kind not in ONBOARDING_KINDS)


def build_payload(conn: Connection, transition_id: int) -> Dict[str, Any]:
    """Our JSON document for this transition (webhook_formats renders it per webhook). Times are RFC 3339
    UTC strings throughout."""
    t, d = m.transitions.c, m.devices.c
    row = conn.execute(select(t.id, t.kind, t.at, t.detail, d.device_id, d.hostname, d.model, d.firmware, d.verdict,
                              d.last_seen_at, m.groups.c.name.label("group"))
                       .select_from(m.transitions.join(m.devices, t.device_pk == d.id)
                                    .outerjoin(m.groups, d.group_id == m.groups.c.id))
                       .where(t.id == transition_id)).first()
    if row is None:
        return {}
    detail = json.loads(row.detail or "{}")
    if isinstance(detail.get("last_seen_at"), (int, float)):  # went_stale stores epoch seconds
        detail["last_seen_at"] = format_time(detail["last_seen_at"])
    return {
        "event": row.kind,
        "transition_id": row.id,
        "at": format_time(row.at),
        "device": {"device_id": row.device_id, "hostname": row.hostname, "model": row.model,
                   "firmware": row.firmware, "verdict": row.verdict, "last_seen_at": format_time(row.last_seen_at),
                   "group": row.group or ""},
        "detail": detail,
        "dashboard_url": device_link(read_setting(conn, "public_url"), row.device_id),
        "source": "exposure-guard-server/%s" % __version__,
    }
