"""Hostile devices on loopback: slow drips, silence, oversize, bombs, XXE, garbage, odd schemes."""

from __future__ import annotations

import threading
import time

import pytest

from exposure_guard.errors import PeerError
from exposure_guard.hostilehttp import MAX_BODY, check_url, fetch
from exposure_guard.upnp.description import fetch_gateway
from exposure_guard.upnp.errors import HostileResponse, UpnpError
from tests.support.fakeigd import BOMB, XXE, HostileServer
from tests.support.net import TcpServer, free_port


@pytest.mark.parametrize("mode", ["drip-body", "drip-headers", "silent"])
def test_total_deadline_holds_against_slow_and_silent_devices(mode):
    with HostileServer(mode, interval=0.05) as server:
        started = time.monotonic()
        with pytest.raises(HostileResponse, match="did not finish answering within 0.8 s"):
            fetch(server.url, deadline=0.8)
        took = time.monotonic() - started
    # the drip keeps every single read well inside requests' per-read timeout: only the total deadline ends it
    # (a drip-body device never stops, drip-headers would take 100000 * 0.05 s; the bound is generous)
    assert took < 20, took


def test_drip_body_gave_up_after_receiving_some_bytes():
    with HostileServer("drip-body", interval=0.02) as server:
        with pytest.raises(HostileResponse):
            fetch(server.url, deadline=4.0)  # 5 bytes take 0.1 s; the rest is room for a loaded machine
        assert server.bytes_sent > 5  # it was really dripping, not refused at connect


def test_connection_reset_in_the_body_is_a_named_peer_error():
    # urllib3 wraps a reset during the body read in its own ProtocolError, which is neither an OSError nor a
    # requests exception; it must still come out as our PeerError with a reason, never as a traceback
    with HostileServer("reset-body") as server, pytest.raises(PeerError, match="reset the connection"):
        fetch(server.url, deadline=5)


def test_oversize_body_is_refused_without_reading_it_all():
    with HostileServer("huge") as server, pytest.raises(HostileResponse, match="more than %d bytes" % MAX_BODY):
        fetch(server.url, deadline=5)


def test_announced_oversize_body_is_refused_before_reading():
    with HostileServer("huge-declared") as server, pytest.raises(HostileResponse, match="announced a 10485760-byte answer"):
        fetch(server.url, deadline=5)


def test_compressed_answers_are_refused():
    with HostileServer("gzip") as server, pytest.raises(HostileResponse, match="Content-Encoding 'gzip'"):
        fetch(server.url, deadline=5)


def test_garbage_instead_of_http_is_a_clear_error():
    with HostileServer("garbage") as server, pytest.raises(UpnpError, match="cannot talk to"):
        fetch(server.url, deadline=3)


@pytest.mark.parametrize("body,match", [(BOMB, "XML we refuse"), (XXE, "XML we refuse"),
                                        (b"<root><device>", "not well-formed"), (b"\x00\xff" * 50, "not well-formed"),
                                        (b"<html><body>router</body></html>", "not a UPnP device description"),
                                        (b"<a>" * 200 + b"</a>" * 200, "nests elements")])
def test_hostile_descriptions_are_refused_with_a_reason(body, match):
    with HostileServer("body", body=body) as server, pytest.raises(UpnpError, match=match):
        fetch_gateway(server.url, deadline=3)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://10.0.0.1/x", "gopher://1.2.3.4/", "http:///nohost",
                                 "javascript:alert(1)", "http://[::1:bad/"])
def test_only_http_urls_are_followed(url):
    with pytest.raises(HostileResponse):
        check_url(url)


def test_connection_refused_is_a_clear_error():
    port = free_port()
    with pytest.raises(UpnpError, match="connection refused"):
        fetch("http://127.0.0.1:%d/rootDesc.xml" % port, deadline=2)


def test_concurrent_exchanges_each_keep_their_own_deadline():
    results = {}
    finished = []

    def one(name, deadline):
        with HostileServer("drip-body", interval=0.05) as server:
            started = time.monotonic()
            try:
                fetch(server.url, deadline=deadline)
            except HostileResponse:
                results[name] = time.monotonic() - started
                finished.append(name)

    threads = [threading.Thread(target=one, args=("short", 0.3)), threading.Thread(target=one, args=("long", 6.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Each exchange ends at its own deadline, not at the other's: neither before its own (the long one is not
    # cut at the short one's), and the short one first (it does not wait for the long one's); the deadlines
    # are 5.7 s apart so that a loaded machine cannot swap them. The upper bound only catches a hang.
    assert finished == ["short", "long"], results
    assert results["short"] >= 0.3 and 6.0 <= results["long"] < 60, results


def test_a_finished_exchange_is_not_cut_by_its_old_deadline():
    # The deadlines of finished exchanges come due while a later exchange is still running: none of them may
    # shut it down. Every deadline is generous; the server holds the last answer until they have all passed.
    with HostileServer("body", body=b"<ok/>") as quick:
        for _ in range(20):
            last_started = time.monotonic()
            assert fetch(quick.url, deadline=5.0).body == b"<ok/>"  # 5 s: room for a loaded machine
    all_due = last_started + 5.0  # the last of the 20 deadlines has passed after this

    def answer_late(conn):
        conn.recv(65536)
        while time.monotonic() < all_due + 0.2:
            time.sleep(0.02)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n<ok/>")

    with TcpServer(answer_late) as late:
        assert fetch("http://127.0.0.1:%d/x" % late.port, deadline=30).body == b"<ok/>"


def test_a_socket_is_never_reused_for_the_next_exchange():
    # A device answering HTTP/1.1 without "Connection: close" and then ignoring the socket: reusing it would
    # send the next request into the void (with a device that closes instead, it is a reset, now and then).
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 4\r\n\r\nok\r\n"

    def handle(conn) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        conn.sendall(answer)
        server.stop.wait(30)  # keep the socket open, never read from it again

    from exposure_guard.hostilehttp import new_session

    with TcpServer(handle) as server:
        session = new_session()
        try:
            for _ in range(3):
                assert fetch("http://127.0.0.1:%d/x" % server.port, deadline=5, session=session).body == b"ok\r\n"
        finally:
            session.close()
        assert server.hits == 3
