"""Hostile devices on loopback: slow drips, silence, oversize, bombs, XXE, garbage, odd schemes."""

from __future__ import annotations

import time

import pytest

from exposure_guard.hostilehttp import MAX_BODY, check_url, fetch
from exposure_guard.upnp.description import fetch_gateway
from exposure_guard.upnp.errors import HostileResponse, UpnpError
from tests.support.fakeigd import BOMB, XXE, HostileServer
from tests.support.net import free_port


@pytest.mark.parametrize("mode", ["drip-body", "drip-headers", "silent"])
def test_total_deadline_holds_against_slow_and_silent_devices(mode):
    with HostileServer(mode, interval=0.05) as server:
        started = time.monotonic()
        with pytest.raises(HostileResponse, match="did not finish answering within 0.8 s"):
            fetch(server.url, deadline=0.8)
        took = time.monotonic() - started
    # the drip keeps every single read well inside requests' per-read timeout: only the total deadline ends it
    assert took < 3.0, took


def test_drip_body_gave_up_after_receiving_some_bytes():
    with HostileServer("drip-body", interval=0.02) as server:
        with pytest.raises(HostileResponse):
            fetch(server.url, deadline=0.6)
        assert server.bytes_sent > 5  # it was really dripping, not refused at connect


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
    import threading

    results = {}

    def one(name, deadline):
        with HostileServer("drip-body", interval=0.05) as server:
            started = time.monotonic()
            try:
                fetch(server.url, deadline=deadline)
            except HostileResponse:
                results[name] = time.monotonic() - started

    threads = [threading.Thread(target=one, args=("short", 0.4)), threading.Thread(target=one, args=("long", 1.2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # each exchange ends at its own deadline, not at the other's (generous upper bounds: loaded CI machines)
    assert 0.35 < results["short"] < results["long"] and 1.1 < results["long"] < 5, results


def test_a_finished_exchange_is_not_cut_by_its_old_deadline():
    # many quick exchanges with short deadlines: none may be shut down after it completed
    with HostileServer("body", body=b"<ok/>") as server:
        for _ in range(20):
            assert fetch(server.url, deadline=0.3).body == b"<ok/>"
        time.sleep(0.4)
        assert fetch(server.url, deadline=0.3).body == b"<ok/>"
