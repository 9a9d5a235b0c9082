"""Webhooks against hostile targets and receivers (issue 15 item 9): internal addresses (also through DNS
answers that change between the check and the connection), receivers whose answer leaks internal data,
never comes, trickles in byte by byte or never ends; one slow receiver must not hold up the stale sweep or
other webhooks' deliveries. Every receiver listens on 127.0.0.0/8, which the tests allow explicitly."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, List, Optional

import pytest
from sqlalchemy import update
from tests.support.server import Api, device_identity
from tests.support.wait import wait_for

from exposure_guard_server.db import models as m
from exposure_guard_server.errors import ApiError
from exposure_guard_server.services.admin import Admin
from exposure_guard_server.webhooks import WebhookSender

LOOPBACK = "127.0.0.0/8"
SECRET_BODY = b"root:x:0:0 internal-metadata-token=AKIA-very-secret"


class Receiver:
    """A webhook receiver on ``host``: answers ``status`` with ``body``, records what it got."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, status: int = 204, body: bytes = b"") -> None:
        self.received: List[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                receiver.received.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.url = "http://%s:%d/hook" % (host, self.port)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RawReceiver:
    """Accepts connections and runs ``behave(connection)`` for each in its own thread; remembers them."""

    def __init__(self, behave: Any) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d/hook" % self.listener.getsockname()[1]
        self.connections: List[socket.socket] = []
        self.closed_by_peer: List[bool] = []
        self.sent: List[int] = []
        self.behave = behave
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            self.closed_by_peer.append(False)
            self.sent.append(0)
            threading.Thread(target=self.behave, args=(self, len(self.connections) - 1), daemon=True).start()

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


def _hold_silently(receiver: RawReceiver, index: int) -> None:
    """Read the request, never answer; note when the sender gives up (EOF)."""
    conn = receiver.connections[index]
    try:
        while conn.recv(65536):
            pass
        receiver.closed_by_peer[index] = True
    except OSError:
        receiver.closed_by_peer[index] = True


def _trickle(receiver: RawReceiver, index: int) -> None:
    """An answer one byte every 0.2 s, for a minute: each read is quick, the whole never ends."""
    conn = receiver.connections[index]
    conn.recv(65536)
    try:
        for byte in (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 400)[:300]:
            conn.sendall(bytes([byte]))
            receiver.sent[index] += 1
            time.sleep(0.2)
    except OSError:
        receiver.closed_by_peer[index] = True


def _flood(receiver: RawReceiver, index: int) -> None:
    """A 500 followed by 50 MB of body: what the sender reads of it is what it takes in."""
    conn = receiver.connections[index]
    conn.recv(65536)
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % (50 << 20)
    try:
        conn.sendall(head)
        chunk = SECRET_BODY + b"x" * (65536 - len(SECRET_BODY))
        for _ in range(800):
            conn.sendall(chunk)
            receiver.sent[index] += len(chunk)
    except OSError:
        receiver.closed_by_peer[index] = True


@pytest.fixture
def raw_receivers() -> Iterator[List[RawReceiver]]:
    made: List[RawReceiver] = []
    try:
        yield made
    finally:
        for r in made:
            r.close()


def _queue_delivery(api: Api, url: str, device: str = "dev-h", allow: str = LOOPBACK) -> int:
    """A webhook on ``url`` (every event, onboarding too) and one delivery queued for it (an enrollment)."""
    hook_id, _secret = Admin(api.server.engine, webhook_allow=allow).webhooks.create("h", url, ["*", "enrolled"])
    api.enroll_key(device_identity(device))
    return hook_id


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost:8080/", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/", "http://[fe80::1]/", "http://10.1.2.3/", "http://192.168.1.1/", "http://172.16.0.1/",
    "http://100.64.0.1/", "http://0.0.0.0/", "http://224.0.0.1/", "http://255.255.255.255/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:169.254.169.254]/", "http://[64:ff9b::a9fe:a9fe]/",
    "http://[fd00:ec2::254]/", "http://[fc00::1]/", "http://[ff02::1]/", "http://[::]/", "http://2130706433/",
    "http://0x7f.1/", "http://127.1/", "https://[2002:7f00:1::]/",
])
def test_internal_webhook_urls_are_refused_at_creation(api: Api, url: str) -> None:
    with pytest.raises(ApiError) as caught:
        Admin(api.server.engine).webhooks.create("internal", url, [])
    assert caught.value.status == 400 and "internal" in caught.value.detail


def test_public_and_explicitly_allowed_webhook_urls_are_accepted(api: Api) -> None:
    Admin(api.server.engine).webhooks.create("public", "https://93.184.215.14/hook", [])
    Admin(api.server.engine, webhook_allow="127.0.0.1/32").webhooks.create("local", "http://127.0.0.1:9/", [])
    with pytest.raises(ApiError):
        Admin(api.server.engine, webhook_allow="127.0.0.1/32").webhooks.create("other", "http://127.0.0.2:9/", [])


def test_a_webhook_target_is_checked_again_and_pinned_at_delivery(api: Api, monkeypatch: Any) -> None:
    """DNS rebinding: the name resolved to an allowed address when the webhook was created, and resolves to
    another (internal, not allowed) one later. The delivery connects only to an address it checked."""
    good = Receiver("127.0.0.1")
    trap = Receiver("127.0.0.2", port=good.port)  # same port, the address a second lookup would give
    answers = ["127.0.0.1", "127.0.0.1"]  # creation, first delivery; every later lookup: 127.0.0.2
    real = socket.getaddrinfo

    def fake_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.rebind.test":
            return real(host, port, *args, **kwargs)
        address = answers.pop(0) if answers else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 80)))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    try:
        _queue_delivery(api, "http://hooks.rebind.test:%d/hook" % good.port, allow="127.0.0.1/32")
        sender = WebhookSender(api.server.engine, timeout=10, allow="127.0.0.1/32")
        assert sender.run_due() == 1
        assert len(good.received) == 1 and trap.received == []  # pinned: no second lookup went to the trap
        api.enroll_key(device_identity("dev-h2"))
        assert sender.run_due() == 1
        assert len(good.received) == 1 and trap.received == []  # rebound to 127.0.0.2: refused, not sent
        last = api.admin.webhooks.deliveries()[0]
        assert last["status"] == "pending" and "127.0.0.2" in last["last_error"] and "internal" in last["last_error"]
    finally:
        good.close()
        trap.close()


def test_an_error_answer_is_shown_by_status_only(api: Api) -> None:
    receiver = Receiver(status=500, body=SECRET_BODY)
    try:
        _queue_delivery(api, receiver.url)
        assert WebhookSender(api.server.engine, allow=LOOPBACK).run_due() == 1
    finally:
        receiver.close()
    last = api.admin.webhooks.deliveries()[0]
    assert last["last_status"] == 500 and "HTTP 500" in last["last_error"]
    assert b"secret" not in (last["last_error"] or "").encode().lower()
    api.login()
    page = api.client.get("/admin").text
    assert "HTTP 500" in page and "internal-metadata-token" not in page and "root:x" not in page


def test_a_delivery_has_a_total_deadline(api: Api, raw_receivers: List[RawReceiver]) -> None:
    """Each byte of the answer comes quickly, the answer never completes: the delivery still ends."""
    trickle = RawReceiver(_trickle)
    raw_receivers.append(trickle)
    _queue_delivery(api, trickle.url)
    sender = WebhookSender(api.server.engine, timeout=1.0, allow=LOOPBACK)
    done = threading.Event()
    started = time.monotonic()
    threading.Thread(target=lambda: (sender.run_due(), done.set()), daemon=True).start()
    assert done.wait(30), "the delivery was still reading a trickling answer after 30 s"
    print("\ntrickling receiver: delivery ended after %.2f s (deadline 1 s), %d bytes of the answer sent" % (
        time.monotonic() - started, trickle.sent[0]))
    last = api.admin.webhooks.deliveries()[0]
    assert last["status"] == "pending" and "timed out" in last["last_error"]
    assert trickle.sent[0] < 300


def test_bytes_read_from_an_answer_are_capped(api: Api, raw_receivers: List[RawReceiver]) -> None:
    flood = RawReceiver(_flood)
    raw_receivers.append(flood)
    _queue_delivery(api, flood.url)
    assert WebhookSender(api.server.engine, timeout=30, allow=LOOPBACK).run_due() == 1
    wait_for("the receiver to notice the sender hung up", lambda: flood.closed_by_peer and flood.closed_by_peer[0])
    # What the receiver got out before the sender hung up is only what the sockets buffer (a few MB), not 50 MB.
    print("\nflooding receiver: %d of 52,428,800 body bytes left it before the sender hung up" % flood.sent[0])
    assert flood.sent[0] < (20 << 20)
    assert api.admin.webhooks.deliveries()[0]["last_status"] == 500


def test_a_silent_receiver_delays_neither_the_stale_sweep_nor_other_webhooks(db_url: str, admin: Admin,
                                                                               raw_receivers: List[RawReceiver]) -> None:
    from fastapi.testclient import TestClient

    from exposure_guard_server.app import create_app
    from exposure_guard_server.config import ServerConfig

    silent = RawReceiver(_hold_silently)
    raw_receivers.append(silent)
    fine = Receiver()
    config = ServerConfig(db_url=db_url, background=True, sweep_every=0.2)
    config.webhook_timeout = 120.0  # the silent receiver's delivery is in flight for the whole test
    config.webhook_allow = LOOPBACK
    _id, secret = admin.enroll_secrets.create("tests")
    app = create_app(config)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            server = app.state.server
            server.admin.webhooks.create("silent", silent.url, ["*", "enrolled"])
            server.admin.webhooks.create("fine", fine.url, ["*", "enrolled"])
            api = Api(client, admin, secret, server)
            api.enroll_key(device_identity("dev-s"))  # an "enrolled" delivery for each webhook
            wait_for("the silent receiver to get its delivery", lambda: silent.connections)
            held_from = time.monotonic()
            wait_for("the other webhook's delivery", lambda: fine.received)
            other_after = time.monotonic() - held_from
            with server.engine.begin() as conn:
                conn.execute(update(m.devices).values(stale_base=0))
            marked = time.monotonic()
            wait_for("the stale sweep", lambda: _stale(server))
            sweep_after = time.monotonic() - marked
            assert silent.closed_by_peer == [False], "the silent receiver's delivery ended before the others ran"
            wait_for("went_stale delivered too", lambda: len(fine.received) == 2)
            print("\nwith a delivery held by a silent receiver: the other webhook's delivery %.2f s after it, the "
                  "stale sweep %.2f s after the device went stale (sweep every 0.2 s), went_stale delivered %.2f s "
                  "after that" % (other_after, sweep_after, time.monotonic() - marked - sweep_after))
    finally:
        fine.close()


def _stale(server: Any) -> Optional[bool]:
    with server.engine.connect() as conn:
        return bool(conn.execute(m.devices.select().where(m.devices.c.stale.is_(True))).first())


def test_answers_stored_before_the_upgrade_are_not_shown_either(api: Api) -> None:
    """Rows written by the old sender carry the receiver's text ("HTTP 500: <body>"): the Admin page and
    the JSON API show only the status for them too."""
    _queue_delivery(api, "http://127.0.0.1:9/hook")
    with api.server.engine.begin() as conn:
        conn.execute(update(m.webhook_deliveries).values(
            attempts=1, last_status=500, last_error="HTTP 500: " + SECRET_BODY.decode()))
    assert api.admin.webhooks.deliveries()[0]["last_error"] == "HTTP 500 Internal Server Error"
    listed = api.client.get("/api/v1/webhooks", headers=api.auth).text
    api.login()
    page = api.client.get("/admin").text
    for shown in (listed, page):
        assert "HTTP 500" in shown and "internal-metadata-token" not in shown
