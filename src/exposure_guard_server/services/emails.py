"""Email alerts through the organisation's SMTP server (the standard library's smtplib: STARTTLS or TLS,
certificate checked, optional login). Users subscribe on the Admin page: an address, the event kinds they
want at once (e.g. became_exposed) and a daily digest at the hour set in Settings. What a user is told
follows their group limits.

Emails use an outbox like webhooks: an alert is queued in the same transaction as its transition
(services/email_outbox.py), a digest once per user and day (a unique key, so several server processes
queue it once); any process sends it under a lease, retries with backoff after a refusal, a stall or a lost
connection, and marks it delivered. An SMTP server that accepted a message but whose answer was lost may
get it again; each message has a Message-ID made from its delivery id, so mail systems can tell."""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Dict, FrozenSet, List, Optional, Set, Tuple

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from exposure_guard_server.db import models as m
from exposure_guard_server.db.engine import WRITE
from exposure_guard_server.reportlogic import KIND_LABEL, format_time
from exposure_guard_server.services.server_settings import read as read_setting
from exposure_guard_server.webhooks import retry_delay

log = logging.getLogger("exposure_guard_server.emails")
MAX_ATTEMPTS = 8
ROUND = 2.0


class Mailer:
    """Queues digests and sends the outbox."""

    def __init__(self, engine: Engine, reader: Any, events: Any, acceptances: Any, *, timeout: float = 20.0,
                 backoff_base: float = 30.0) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)
        self.reader, self.events, self.acceptances = reader, events, acceptances
        self.timeout = timeout
        self.backoff_base = backoff_base
        self.lease = max(120.0, 3 * timeout)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- settings ----------------------------------------------------------------------------------------
    def smtp(self) -> Dict[str, str]:
        with self.engine.connect() as conn:
            return {name: read_setting(conn, name) for name in
                    ("smtp_host", "smtp_port", "smtp_security", "smtp_user", "smtp_password", "smtp_from",
                     "smtp_ca_file", "digest_hour", "public_url")}

    # -- digests -------------------------------------------------------------------------------------------
    def queue_digests(self, now: Optional[float] = None) -> int:
        """At the digest hour (UTC), once per subscriber and day: counts, what changed in the last 24 h,
        silent boxes and acceptances that end within a week, all within the user's groups."""
        now = time.time() if now is None else now
        smtp = self.smtp()
        if not smtp["smtp_host"] or not smtp["digest_hour"] or time.gmtime(now).tm_hour != int(smtp["digest_hour"]):
            return 0
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        u = m.users.c
        with self.engine.connect() as conn:
            users = conn.execute(select(u.id, u.username, u.email, u.groups_limited)
                                 .where(u.email != "", u.digest.is_(True))).all()
            limits: Dict[int, Set[int]] = {r[0]: set() for r in users if r.groups_limited}
            for user_id, group_id in conn.execute(select(m.user_groups.c.user_id, m.user_groups.c.group_id)):
                if user_id in limits:
                    limits[user_id].add(group_id)
            done = {r[0] for r in conn.execute(select(m.email_deliveries.c.user_id).where(
                m.email_deliveries.c.digest_day == day))}
        queued = 0
        for user in users:
            if user.id in done:
                continue
            allowed = frozenset(limits[user.id]) if user.groups_limited else None
            subject, body = self.digest(allowed, now, smtp["public_url"])
            try:
                with self.writer.begin() as conn:
                    conn.execute(insert(m.email_deliveries).values(
                        user_id=user.id, transition_id=None, kind="digest", digest_day=day, recipient=user.email,
                        subject=subject, body=body, status="pending", attempts=0, next_attempt_at=now, last_error="",
                        created_at=now))
                queued += 1
            except IntegrityError:
                pass  # another server process queued it first
        return queued

    def digest(self, allowed: Optional[FrozenSet[int]], now: float, public_url: str = "") -> Tuple[str, str]:
        from exposure_guard_server.roles import Caller
        from exposure_guard_server.services.events import EventFilter
        from exposure_guard_server.services.fleet import DeviceFilter

        scope = DeviceFilter(allowed=allowed)
        summary = self.reader.summary(now, top=5, scope=scope)
        counts = summary["counts"]
        changes = self.events.list(EventFilter(since=now - 86400, allowed=allowed, limit=50,
                                               kinds=("became_exposed", "became_at_risk", "no_longer_exposed", "fixed",
                                                      "went_stale", "back", "acceptance_expired")))["transitions"]
        stale = self.reader.devices(DeviceFilter(allowed=allowed, state="stale", per_page=20), now)
        caller = Caller("session", "digest", "viewer", allowed)
        ending = [a for a in self.acceptances.list(caller) if a["until"] and a["until"] <= format_time(now + 7 * 86400)]
        subject = "[ExposureGuard] daily: %d exposed, %d at risk, %d stale" % (counts["exposed"], counts["at_risk"],
                                                                               counts["stale"])
        lines = ["ExposureGuard daily digest, %s UTC" % format_time(now)[:16].replace("T", " "), "",
                 "Boxes: %d exposed%s, %d at risk, %d OK, %d stale, %d without a report yet (of %d)" % (
                     counts["exposed"], (" (%d of them silent)" % summary["exposed_silent"])
                     if summary["exposed_silent"] else "", counts["at_risk"], counts["ok"], counts["stale"],
                     counts["pending"], summary["devices"])]
        if summary["failing_checks"]:
            lines.append("Most failing checks: " + ", ".join("%s (%d)" % (c["check_id"], c["devices"])
                                                             for c in summary["failing_checks"]))
        lines += ["", "What changed in the last 24 hours (%d):" % len(changes)]
        lines += ["  %s  %s%s: %s" % (e["at"][:16].replace("T", " "), e["hostname"] or e["device_id"],
                                      " (%s)" % e["group"] if e["group"] else "", KIND_LABEL.get(e["kind"], e["kind"]))
                  for e in changes] or ["  nothing"]
        lines += ["", "Silent boxes (%d):" % stale["total"]]
        lines += ["  %s, last seen %s" % (d["hostname"] or d["device_id"], d["last_seen_at"] or "never")
                  for d in stale["devices"]] or ["  none"]
        lines += ["", "Accepted risks ending within a week (%d):" % len(ending)]
        lines += ["  %s on %s until %s: %s" % (a["check_id"], a["device_id"] or "group " + a["group"], a["until"][:10],
                                              a["reason"]) for a in ending] or ["  none"]
        if public_url:
            lines += ["", "Dashboard: " + public_url]
        return subject[:300], "\n".join(lines) + "\n"

    # -- sending -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="eg-email", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
            except Exception:  # the database or the SMTP settings may be briefly wrong; the next round retries
                log.exception("email round failed")
            self._stop.wait(ROUND)

    def run_due(self, now: Optional[float] = None, limit: int = 20) -> int:
        """Send what is due; returns how many were tried."""
        now = time.time() if now is None else now
        e = m.email_deliveries.c
        with self.engine.connect() as conn:
            due = [r[0] for r in conn.execute(select(e.id).where(
                e.status == "pending", e.next_attempt_at <= now, or_(e.lease_until.is_(None), e.lease_until < now))
                .order_by(e.next_attempt_at, e.id).limit(limit))]
        smtp = self.smtp() if due else {}
        tried = 0
        for delivery_id in due:
            claim = self._claim(delivery_id, now)
            if claim is not None:
                tried += 1
                self._send(claim, smtp)
        return tried

    def _claim(self, delivery_id: int, now: float) -> Optional[Dict[str, Any]]:
        e = m.email_deliveries.c
        with self.writer.begin() as conn:
            claimed = conn.execute(update(m.email_deliveries).where(
                e.id == delivery_id, e.status == "pending", or_(e.lease_until.is_(None), e.lease_until < now))
                .values(lease_until=now + self.lease, attempts=e.attempts + 1)).rowcount
            if not claimed:
                return None
            row = conn.execute(select(m.email_deliveries).where(e.id == delivery_id)).first()
        return dict(row._mapping) if row is not None else None

    def _send(self, claim: Dict[str, Any], smtp: Dict[str, str]) -> None:
        error = ""
        try:
            send_message(smtp, claim["recipient"], claim["subject"], claim["body"], "<eg-%d@exposure-guard>" % claim["id"],
                         self.timeout)
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            error = describe(exc)
        now = time.time()
        values: Dict[str, Any] = {"last_error": error[:300], "lease_until": None}
        if not error:
            values.update(status="delivered", delivered_at=now)
        elif claim["attempts"] >= MAX_ATTEMPTS:
            values.update(status="failed")
            log.warning("email %s to %s failed for good: %s", claim["id"], claim["recipient"], error)
        else:
            values.update(next_attempt_at=now + retry_delay(claim["attempts"], self.backoff_base))
        with self.writer.begin() as conn:
            conn.execute(update(m.email_deliveries).where(m.email_deliveries.c.id == claim["id"]).values(**values))

    def log(self, limit: int = 50) -> List[Dict[str, Any]]:
        e, u = m.email_deliveries.c, m.users.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(e.id, e.kind, e.recipient, e.subject, e.status, e.attempts, e.last_error,
                                       e.created_at, e.delivered_at, u.username)
                                .join_from(m.email_deliveries, m.users, e.user_id == u.id)
                                .order_by(e.id.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]


def send_message(smtp: Dict[str, str], to: str, subject: str, body: str, message_id: str, timeout: float) -> None:
    """One message through the configured SMTP server (ValueError when none is set)."""
    host = smtp.get("smtp_host", "")
    if not host:
        raise ValueError("no SMTP server set (Admin page → Settings)")
    security = smtp.get("smtp_security") or "starttls"
    port = int(smtp.get("smtp_port") or (465 if security == "tls" else 587))
    context = ssl.create_default_context(cafile=smtp.get("smtp_ca_file") or None)
    message = EmailMessage()
    message["From"] = smtp.get("smtp_from") or "exposure-guard@localhost"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    message.set_content(body)
    client: smtplib.SMTP
    if security == "tls":
        client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(host, port, timeout=timeout)
    try:
        if security == "starttls":
            client.starttls(context=context)
        if smtp.get("smtp_user"):
            client.login(smtp["smtp_user"], smtp.get("smtp_password", ""))
        client.send_message(message)
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def describe(exc: BaseException) -> str:
    """Our own short reason (never the server's whole answer)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return "SMTP %d" % exc.smtp_code
    if isinstance(exc, (TimeoutError, smtplib.SMTPServerDisconnected)) or "timed out" in str(exc):
        return "no answer in time or connection lost"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return "TLS failed: %s" % (exc.reason or "handshake")
    return str(exc)[:200] or exc.__class__.__name__
