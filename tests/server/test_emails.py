"""Email alerts against a real SMTP server on loopback (aiosmtpd): an alert on became-exposed for each
subscriber allowed to see the box, delivered exactly once through a server that refuses, stalls and comes
back; a daily digest queued once per user and day even by two server processes. SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from typing import Any, Iterator, List

import pytest
from tests.support.server import ADMIN_PASSWORD, Api, device_identity, make_report

pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402

from exposure_guard_server.db import models as m  # noqa: E402
from exposure_guard_server.services.emails import Mailer  # noqa: E402


class Inbox:
    """aiosmtpd handler: keeps every message; answers 451 to the next ``refuse`` messages first."""

    def __init__(self) -> None:
        self.messages: List[Any] = []
        self.refuse = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Staller:
    """Accepts connections and never says a word (an SMTP server that hangs)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.held: List[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        try:
            while True:
                conn, _ = self.sock.accept()
                self.held.append(conn)
        except OSError:
            return

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread, which holds the socket open
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
def mailer(api: Api) -> Iterator[Mailer]:
    server = api.server
    yield Mailer(server.engine, server.reader, server.events, server.acceptances, timeout=1.5, backoff_base=1.0)


def _configure(api: Api, port: int, **extra: str) -> None:
    for name, value in dict({"smtp_host": "127.0.0.1", "smtp_port": str(port), "smtp_security": "none",
                             "smtp_from": "eg@example.com", "public_url": "https://eg.example.com"}, **extra).items():
        api.server.settings.set(name, value)


def _expose(api: Api, device_id: str, secret: str = "") -> None:
    ident = device_identity(device_id, "host-" + device_id)
    key = api.enroll(ident, secret or None).json()["node_key"]
    assert api.checkin(key, make_report(ident, ["router.upnp-mappings"], exposed=True)).status_code == 201


def _statuses(api: Api) -> List[Any]:
    with api.server.engine.connect() as conn:
        return [(r.status, r.attempts, r.last_error) for r in conn.execute(m.email_deliveries.select()
                                                                            .order_by(m.email_deliveries.c.id))]


def test_an_alert_reaches_each_subscriber_exactly_once_through_refusal_stall_and_recovery(
        api: Api, mailer: Mailer, port: int) -> None:
    _configure(api, port)
    api.admin.groups.create("Acme")
    api.admin.set_password("acme-viewer", ADMIN_PASSWORD, "viewer", ["Acme"])
    api.admin.set_alerts("admin", "ops@example.com", "became_exposed", False)
    api.admin.set_alerts("acme-viewer", "acme@example.com", ["became_exposed"], False)
    acme_secret = api.admin.enroll_secrets.create("acme", "Acme")[1]
    _expose(api, "acme-1", acme_secret)
    _expose(api, "loose-1")  # in no group: the Acme viewer is not told
    assert sorted(r.recipient for r in _rows(api)) == ["acme@example.com", "ops@example.com", "ops@example.com"]

    now = time.time()
    # 1. Nothing listens: refused, retried later.
    assert mailer.run_due(now) == 3
    assert {s[2] for s in _statuses(api)} == {"connection refused"}
    # 2. A server that accepts the connection and never answers: timed out, retried later.
    staller = Staller(port)
    try:
        assert mailer.run_due(now + 3600) == 3
    finally:
        staller.close()
    assert {s[2] for s in _statuses(api)} == {"no answer in time or connection lost"}
    # 3. It comes back, refusing the first message once (451), then takes them all.
    inbox = Inbox()
    inbox.refuse = 1
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        deadline = time.time() + 60
        later = now + 7200
        while any(s[0] == "pending" for s in _statuses(api)) and time.time() < deadline:
            mailer.run_due(later)
            later += 3600
    finally:
        controller.stop()
    assert [s[0] for s in _statuses(api)] == ["delivered"] * 3
    assert len(inbox.messages) == 3  # each once
    assert len({msg["Message-ID"] for msg in inbox.messages}) == 3
    subjects = sorted((msg["To"], msg["Subject"]) for msg in inbox.messages)
    assert subjects[0] == ("acme@example.com", "[ExposureGuard] host-acme-1 (Acme) became exposed: now failing "
                                               "router.upnp-mappings")
    assert [msg["To"] for msg in inbox.messages].count("ops@example.com") == 2
    body = inbox.messages[0].get_content()
    assert "Open it: https://eg.example.com/devices/" in body
    assert mailer.run_due(later + 10 ** 6) == 0  # nothing is sent twice


def _rows(api: Api) -> List[Any]:
    with api.server.engine.connect() as conn:
        return list(conn.execute(m.email_deliveries.select()))


def test_the_daily_digest_is_queued_once_per_user_and_day(api: Api, mailer: Mailer, port: int) -> None:
    now = time.time()
    _configure(api, port, digest_hour=str(time.gmtime(now).tm_hour))
    api.admin.set_alerts("admin", "ops@example.com", "", True)
    _expose(api, "dig-1")
    other_process = Mailer(api.server.engine, api.server.reader, api.server.events, api.server.acceptances)
    assert mailer.queue_digests(now) == 1
    assert other_process.queue_digests(now + 60) == 0 and mailer.queue_digests(now + 120) == 0
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert mailer.run_due(now) == 1
    finally:
        controller.stop()
    message = inbox.messages[0]
    assert message["Subject"] == "[ExposureGuard] daily: 1 exposed, 0 at risk, 0 stale"
    text = message.get_content()
    assert "host-dig-1: became exposed" in text and "Silent boxes (0)" in text


def test_no_smtp_server_no_outbox_and_bad_settings_are_refused(api: Api) -> None:
    from exposure_guard_server.errors import ApiError

    api.admin.set_alerts("admin", "ops@example.com", "became_exposed", True)
    _expose(api, "quiet-1")
    assert _rows(api) == []
    for name, value in (("smtp_port", "x"), ("smtp_security", "ssl3"), ("digest_hour", "24"),
                        ("smtp_from", "nobody"), ("smtp_host", "a b")):
        with pytest.raises(ApiError):
            api.server.settings.set(name, value)
    with pytest.raises(ApiError):
        api.admin.set_alerts("admin", "not-an-address", "", False)
    with pytest.raises(ApiError):
        api.admin.set_alerts("admin", "ops@example.com", "enrolled", False)
    api.server.settings.set("smtp_password", "hunter2hunter2")
    assert api.server.settings.all()["smtp_password"] == "set"
