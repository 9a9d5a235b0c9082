"""Webhooks: a generic JSON POST per transition, signed with HMAC-SHA256, retried with backoff.

Deliveries are queued in the same transaction as the transition (an outbox: ``services/transitions.py``),
so none is lost when a server process dies; any server process may deliver them (a lease stops two from
sending the same one).
Headers: ``X-ExposureGuard-Event``, ``X-ExposureGuard-Delivery`` (id), ``X-ExposureGuard-Timestamp``
(epoch seconds) and ``X-ExposureGuard-Signature: sha256=HEX`` = HMAC-SHA256(secret, timestamp + "." + body).

A receiver is not trusted: each delivery goes only to addresses ``webhook_target`` checked (and connects to
the checked address itself), has one total deadline (connect, TLS, request and answer together), reads no
more of the answer than its status line and records only the status code — never the answer's text, which
could carry an internal service's data into the Admin page. Deliveries run in a small pool of their own
threads, at most one per webhook at a time, so a slow receiver delays neither other webhooks nor the
housekeeping thread (the stale sweep).
"""

from __future__ import annotations

import base64
import http
import logging
import random
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Set

from sqlalchemy import Engine, or_, select, update

from exposure_guard import __version__
from exposure_guard_server.addresses import parse_networks
from exposure_guard_server.db import models as m
from exposure_guard_server.db.engine import WRITE
from exposure_guard_server.security import sign_webhook
from exposure_guard_server.webhook_formats import ntfy_target
from exposure_guard_server.webhook_target import Address, BlockedTarget, Target, parse_target, resolve

log = logging.getLogger("exposure_guard_server.webhooks")

MAX_ATTEMPTS = 8
MAX_STATUS_LINE = 1024  # bytes read of an answer: its status line, nothing more
ROUND = 1.0  # seconds between two looks for due deliveries (sooner when a delivery finishes)


def retry_delay(attempts: int, base: float) -> float:
    ceiling = min(3600.0, base * (2 ** max(0, attempts - 1)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class DeliveryError(Exception):
    """A delivery that got no HTTP answer; the message is ours (short, no text from the receiver)."""


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise DeliveryError("timed out after %g s" % self.seconds)
        return left


def post(target: Target, addresses: List[Address], body: bytes, headers: Dict[str, str], timeout: float,
         live: Optional[Set[socket.socket]] = None) -> int:
    """POST ``body`` to ``target`` at one of the checked ``addresses`` (tried in order) within ``timeout``
    seconds in all; the answer's status code. ``live`` collects the open socket (so a closing server can cut
    it short)."""
    deadline = _Deadline(timeout)
    raw: Optional[socket.socket] = None
    failure: Optional[OSError] = None
    for address in addresses:
        try:
            raw = socket.create_connection((str(address), target.port), timeout=deadline.left())
            break
        except OSError as exc:
            failure = exc
    if raw is None:
        raise DeliveryError(_describe(failure)) if failure is not None else DeliveryError("no address")
    live = set() if live is None else live
    sock = raw
    live.add(raw)
    try:
        if target.scheme == "https":
            raw.settimeout(deadline.left())  # CPython bounds the whole handshake by one socket timeout
            sock = ssl.create_default_context().wrap_socket(raw, server_hostname=target.host)
            live.add(sock)
        lines = ["POST %s HTTP/1.1" % target.path, "Host: %s" % target.host_header,
                 "Content-Length: %d" % len(body), "Connection: close"]
        if target.userinfo is not None:
            lines.append("Authorization: Basic " + base64.b64encode(("%s:%s" % target.userinfo).encode()).decode())
        lines += ["%s: %s" % item for item in headers.items()]
        sock.settimeout(deadline.left())
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)
        answer = b""
        while b"\n" not in answer and len(answer) < MAX_STATUS_LINE:
            sock.settimeout(deadline.left())  # each read gets what is left of the one deadline
            chunk = sock.recv(MAX_STATUS_LINE - len(answer))
            if not chunk:
                break
            answer += chunk
        return _status(answer)
    except DeliveryError:
        raise
    except OSError as exc:
        if isinstance(exc, socket.timeout):
            raise DeliveryError("timed out after %g s" % timeout) from None
        raise DeliveryError(_describe(exc)) from None
    finally:
        live.discard(raw)
        live.discard(sock)
        sock.close()


def _status(answer: bytes) -> int:
    parts = answer.split(b"\n", 1)[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not (parts[1].isdigit() and len(parts[1]) == 3):
        raise DeliveryError("not an HTTP answer" if answer else "connection closed without an answer")
    return int(parts[1])


def _describe(exc: Optional[BaseException]) -> str:
    """A short, fixed description of a network error (no text from the receiver)."""
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate not trusted: %s" % (exc.verify_message or "verification failed")[:100]
    if isinstance(exc, ssl.SSLError):
        return "TLS error (%s)" % (exc.reason or exc.__class__.__name__)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()[:100]
    return exc.__class__.__name__ if exc is not None else "failed"


def status_text(status: int) -> str:
    """``HTTP 500 Internal Server Error``: the code and the standard phrase for it, not the receiver's."""
    try:
        return "HTTP %d %s" % (status, http.HTTPStatus(status).phrase)
    except ValueError:
        return "HTTP %d" % status


class WebhookSender:
    def __init__(self, engine: Engine, *, backoff_base: float = 10.0, timeout: float = 10.0, allow: str = "",
                 workers: int = 4) -> None:
        """``timeout``: total seconds per delivery; ``allow``: internal networks deliveries may reach anyway
        (comma separated; see webhook_target); ``workers``: deliveries in flight at once (``start``)."""
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)
        self.backoff_base = backoff_base
        self.timeout = timeout
        self.allow = parse_networks(allow)
        self.workers = workers
        self.lease = max(60.0, 2 * timeout + 30)  # outlives any delivery: no second process sends it meanwhile
        self._live: Set[socket.socket] = set()
        self._busy: Set[int] = set()  # webhooks with a delivery in flight in this process
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._thread: Optional[threading.Thread] = None

    # -- in the background: a dispatcher thread and a pool --------------------------------------------
    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="eg-webhook")
        self._thread = threading.Thread(target=self._dispatch_loop, name="eg-webhooks", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop sending; deliveries in flight are cut short (their lease runs out and they are sent again)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in list(self._live):
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the raw socket, also under TLS
            except OSError:
                pass
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatch()
            except Exception:  # the database may be briefly unavailable; the next round retries
                log.exception("webhook dispatch failed")
            self._wake.wait(ROUND)
            self._wake.clear()

    def dispatch(self, now: Optional[float] = None) -> int:
        """Hand due deliveries to the pool, at most one per webhook and none beyond free workers; how many."""
        assert self._pool is not None, "start() first"
        now = time.time() if now is None else now
        with self._lock:
            free, busy = self.workers - len(self._busy), set(self._busy)
        if free <= 0:
            return 0
        handed = 0
        for delivery_id, webhook_id in self._due(now, free * 5, busy):
            if handed >= free or webhook_id in busy:
                continue
            claim = self._claim(delivery_id, now)
            if claim is None:
                continue
            busy.add(webhook_id)
            with self._lock:
                self._busy.add(webhook_id)
            self._pool.submit(self._send_in_pool, claim)
            handed += 1
        return handed

    def _send_in_pool(self, claim: Dict[str, Any]) -> None:
        try:
            self._send(claim)
        except Exception:
            log.exception("webhook delivery %s failed", claim["id"])
        finally:
            with self._lock:
                self._busy.discard(claim["webhook_id"])
            self._wake.set()

    # -- one at a time, in the caller's thread (tests, tools) -------------------------------------------
    def run_due(self, now: Optional[float] = None, limit: int = 20) -> int:
        """Send what is due, one after another; returns how many were attempted."""
        now = time.time() if now is None else now
        sent = 0
        for delivery_id, _webhook_id in self._due(now, limit, set()):
            claim = self._claim(delivery_id, now)
            if claim is None:
                continue
            self._send(claim)
            sent += 1
        return sent

    def _due(self, now: float, limit: int, skip: Set[int]) -> List[Any]:
        w = m.webhook_deliveries.c
        query = select(w.id, w.webhook_id).where(
            w.status == "pending", w.next_attempt_at <= now, or_(w.lease_until.is_(None), w.lease_until < now))
        if skip:
            query = query.where(w.webhook_id.notin_(sorted(skip)))
        with self.engine.connect() as conn:
            return list(conn.execute(query.order_by(w.id).limit(limit)).all())

    def _claim(self, delivery_id: int, now: float) -> Optional[Dict[str, Any]]:
        w, h = m.webhook_deliveries.c, m.webhooks.c
        with self.writer.begin() as conn:
            claimed = conn.execute(update(m.webhook_deliveries).where(
                w.id == delivery_id, w.status == "pending",
                or_(w.lease_until.is_(None), w.lease_until < now)).values(
                lease_until=now + self.lease, attempts=w.attempts + 1)).rowcount
            if not claimed:
                return None
            row = conn.execute(select(w.id, w.webhook_id, w.event, w.payload, w.attempts, h.url, h.secret, h.enabled,
                                      h.format)
                               .join_from(m.webhook_deliveries, m.webhooks, w.webhook_id == h.id)
                               .where(w.id == delivery_id)).first()
        return dict(row._mapping) if row is not None else None

    def _send(self, claim: Dict[str, Any]) -> None:
        if not claim["enabled"]:
            self._finish(claim, {"status": "failed", "last_error": "webhook disabled", "lease_until": None})
            return
        url, payload = claim["url"], claim["payload"]
        if claim["format"] == "ntfy":  # ntfy's JSON publish: to the server's root, the topic in the body
            url, payload = ntfy_target(url, payload)
        body = payload.encode("utf-8")
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
            target = parse_target(url)
            addresses = resolve(target, self.allow)  # checked now, and only these are connected to
            status = post(target, addresses, body, headers, self.timeout, self._live)
            if not 200 <= status < 300:
                error = status_text(status)
        except (ValueError, BlockedTarget, DeliveryError) as exc:
            error = "refused: %s" % exc if isinstance(exc, BlockedTarget) else str(exc)
        except OSError as exc:  # the name did not resolve
            error = "cannot resolve the host name (%s)" % _describe(exc)
        if self._stop.is_set() and error:
            return  # cut short by close(): not the receiver's fault; the lease runs out and it is sent again
        now = time.time()
        values: Dict[str, Any] = {"last_status": status, "last_error": error[:300], "lease_until": None}
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
