"""Transitions (reportlogic.TRANSITION_KINDS) and the webhook outbox:
each transition queues one delivery per enabled webhook that wants its kind, in the same transaction, so
none is lost when a server process dies (``webhooks.WebhookSender`` delivers them)."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from sqlalchemy import Connection, insert, select

from exposure_guard import __version__
from exposure_guard_server.db import models as m
from exposure_guard_server.reportlogic import ONBOARDING_KINDS, format_time


def add_transition(conn: Connection, device_pk: int, kind: str, now: float, report_pk: Optional[int],
                   detail: Dict[str, Any]) -> int:
    """Record a transition and queue it for every enabled webhook that wants this kind (same transaction)."""
    text = json.dumps(detail, sort_keys=True)
    transition_id = conn.execute(insert(m.transitions).values(
        device_pk=device_pk, kind=kind, at=now, report_pk=report_pk, detail=text).returning(m.transitions.c.id)).scalar_one()
    hooks = conn.execute(select(m.webhooks.c.id, m.webhooks.c.events).where(m.webhooks.c.enabled.is_(True))).all()
    wanted = [hook.id for hook in hooks if wants(hook.events, kind)]
    if wanted:
        payload = build_payload(conn, transition_id)
        conn.execute(insert(m.webhook_deliveries), [
            {"webhook_id": hook_id, "transition_id": transition_id, "event": kind, "payload": payload,
             "status": "pending", "attempts": 0, "next_attempt_at": now, "last_error": "", "created_at": now}
            for hook_id in wanted])
    return transition_id


def wants(events: str, kind: str) -> bool:
    """Whether a webhook subscribed to ``events`` (its stored list) gets ``kind``: "*" is every kind but the
    onboarding ones, which are sent only when named."""
    chosen = events.split(",")
    return kind in chosen or ("*" in chosen and kind not in ONBOARDING_KINDS)


def build_payload(conn: Connection, transition_id: int) -> str:
    """The JSON body every webhook receives for this transition."""
    t, d = m.transitions.c, m.devices.c
    row = conn.execute(select(t.id, t.kind, t.at, t.detail, d.device_id, d.hostname, d.model, d.firmware, d.verdict,
                              d.last_seen_at, m.groups.c.name.label("group"))
                       .select_from(m.transitions.join(m.devices, t.device_pk == d.id)
                                    .outerjoin(m.groups, d.group_id == m.groups.c.id))
                       .where(t.id == transition_id)).first()
    if row is None:
        return "{}"
    return json.dumps({
        "event": row.kind,
        "transition_id": row.id,
        "at": format_time(row.at),
        "device": {"device_id": row.device_id, "hostname": row.hostname, "model": row.model,
                   "firmware": row.firmware, "verdict": row.verdict, "last_seen_at": format_time(row.last_seen_at),
                   "group": row.group or ""},
        "detail": json.loads(row.detail or "{}"),
        "source": "exposure-guard-server/%s" % __version__,
    }, sort_keys=True)
