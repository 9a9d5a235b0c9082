"""Webhooks: a generic JSON POST per transition, signed with HMAC-SHA256, retried with backoff.

Deliveries are queued in the same transaction as the transition (an outbox: ``services/transitions.py``),
so none is lost when a server process dies; any server process may deliver them (a lease stops two from
sending the same one).
Headers: ``X-ExposureGuard-Event``, ``X-ExposureGuard-Delivery`` (id), ``X-ExposureGuard-Timestamp``
(epoch seconds) and ``X-ExposureGuard-Signature: sha256=HEX`` = HMAC-SHA256(secret, timestamp + "." + body).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Dict, Optional

import requests
from sqlalchemy import Engine, or_, select, update

from exposure_guard import __version__
from exposure_guard_server.db import models as m
from exposure_guard_server.db.engine import WRITE
from exposure_guard_server.security import sign_webhook

log = logging.getLogger("exposure_guard_server.webhooks")

MAX_ATTEMPTS = 8
LEASE_SECONDS = 60.0


def retry_delay(attempts: int, base: float) -> float:
    ceiling = min(3600.0, base * (2 ** max(0, attempts - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class WebhookSender:
    def __init__(self, engine: Engine, *, backoff_base: float = 10.0, timeout: float = 10.0,
                 session: Optional[requests.Session] = None) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)
        self.backoff_base = backoff_base
        self.timeout = timeout
        self.session = session or requests.Session()

    def run_due(self, now: Optional[float] = None, limit: int = 20) -> int:
        """Send what is due; returns how many were attempted."""
        now = time.time() if now is None else now
        w = m.webhook_deliveries.c
        with self.engine.connect() as conn:
            due = conn.execute(select(w.id).where(
                w.status == "pending", w.next_attempt_at <= now,
                or_(w.lease_until.is_(None), w.lease_until < now)).order_by(w.id).limit(limit)).scalars().all()
        sent = 0
        for delivery_id in due:
            claim = self._claim(delivery_id, now)
            if claim is None:
                continue
            self._send(claim)
            sent += 1
        return sent

    def _claim(self, delivery_id: int, now: float) -> Optional[Dict[str, Any]]:
        w, h = m.webhook_deliveries.c, m.webhooks.c
        with self.writer.begin() as conn:
            claimed = conn.execute(update(m.webhook_deliveries).where(
                w.id == delivery_id, w.status == "pending",
                or_(w.lease_until.is_(None), w.lease_until < now)).values(
                lease_until=now + LEASE_SECONDS, attempts=w.attempts + 1)).rowcount
            if not claimed:
                return None
            row = conn.execute(select(w.id, w.event, w.payload, w.attempts, h.url, h.secret, h.enabled)
                               .join_from(m.webhook_deliveries, m.webhooks, w.webhook_id == h.id)
                               .where(w.id == delivery_id)).first()
        return dict(row._mapping) if row is not None else None

    def _send(self, claim: Dict[str, Any]) -> None:
        if not claim["enabled"]:
            self._finish(claim, {"status": "failed", "last_error": "webhook disabled", "lease_until": None})
            return
        body = claim["payload"].encode("utf-8")
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "exposure-guard-server/%s" % __version__,
            "X-ExposureGuard-Event": claim["event"],
            "X-ExposureGuard-Delivery": str(claim["id"]),
            "X-ExposureGuard-Timestamp": stamp,
            "X-ExposureGuard-Signature": sign_webhook(claim["secret"], stamp, body),
        }
        status: Optional[int] = None
        error = ""
        try:
            response = self.session.post(claim["url"], data=body, headers=headers, timeout=self.timeout,
                                         allow_redirects=False)
            status = response.status_code
            if not 200 <= status < 300:
                error = "HTTP %d: %s" % (status, (response.text or "")[:200])
        except requests.exceptions.RequestException as exc:
            error = "%s: %s" % (exc.__class__.__name__, str(exc)[:300])
        now = time.time()
        values: Dict[str, Any] = {"last_status": status, "last_error": error, "lease_until": None}
        if not error:
            values.update(status="delivered", delivered_at=now)
        elif claim["attempts"] >= MAX_ATTEMPTS:
            values.update(status="failed")
            log.warning("webhook delivery %s failed for good after %d attempts: %s", claim["id"], claim["attempts"],
                        error)
        else:
            values.update(next_attempt_at=now + retry_delay(claim["attempts"], self.backoff_base))
        self._finish(claim, values)

    def _finish(self, claim: Dict[str, Any], values: Dict[str, Any]) -> None:
        w = m.webhook_deliveries.c
        with self.writer.begin() as conn:
            conn.execute(update(m.webhook_deliveries).where(w.id == claim["id"]).values(**values))
