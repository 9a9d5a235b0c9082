"""SSDP on loopback only: a unicast fake responder stands in for the multicast group."""

from __future__ import annotations

import threading
import time

from exposure_guard.upnp import ssdp
from exposure_guard.upnp.audit import find_gateways
from exposure_guard.upnp.models import SEARCH_TARGETS
from tests.support.fakeigd import FakeIgd, FakeSsdp
from tests.support.paths import IGD_FIXTURES
from tests.support.wait import wait_for

REAL = (IGD_FIXTURES / "ssdp-msearch-response-0.txt").read_bytes()


def test_real_miniupnpd_answer_parses():
    headers = ssdp.parse_answer(REAL.replace(b"\n", b"\r\n"))
    assert headers["LOCATION"] == "http://10.77.0.1:5000/rootDesc.xml"
    assert "MiniUPnPd/2.3.1" in headers["SERVER"]


def test_msearch_asks_for_both_igd_versions_and_the_connection_services():
    assert {"urn:schemas-upnp-org:device:InternetGatewayDevice:1", "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
            "urn:schemas-upnp-org:service:WANIPConnection:1", "urn:schemas-upnp-org:service:WANPPPConnection:1"} <= \
        set(SEARCH_TARGETS)
    packet = ssdp.msearch(SEARCH_TARGETS[0]).decode()
    assert packet.startswith("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n")
    assert 'MAN: "ssdp:discover"' in packet and packet.endswith("\r\n\r\n")


def test_not_answers_are_ignored():
    assert ssdp.parse_answer(b"NOTIFY * HTTP/1.1\r\nLOCATION: http://x/\r\n\r\n") is None
    assert ssdp.parse_answer(b"\x00\x01garbage") is None
    assert ssdp.parse_answer(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 5000) is None  # oversize datagram


def test_discovery_finds_the_fake_and_deduplicates_its_answers():
    with FakeIgd("igd1") as igd, FakeSsdp(igd.location) as responder:
        found = ssdp.discover(timeout=60.0, interfaces=["127.0.0.1"], group=responder.address)
        # the responder may still be reading the last datagrams when discovery has its answer
        wait_for("the responder to read every M-SEARCH", lambda: len(responder.requests) >= 2 * len(SEARCH_TARGETS))
    assert [a.location for a in found.answers] == [igd.location]  # 2 rounds x 5 targets, kept once
    assert len(responder.requests) == 2 * len(SEARCH_TARGETS)
    assert found.seconds < 30  # stops when the answers go quiet (0.4 s), not at the full 60 s timeout


def test_discovery_with_no_answer_ends_at_the_timeout():
    with FakeSsdp("http://127.0.0.1:1/", answer=b"garbage") as responder:
        started = time.monotonic()
        found = ssdp.discover(timeout=0.5, interfaces=["127.0.0.1"], group=responder.address)
        took = time.monotonic() - started
    assert found.answers == [] and 0.45 <= took < 20, took  # the upper bound is generous: it catches a hang


def test_location_on_another_host_or_scheme_is_dropped():
    # Dropped answers do not end a search early: each runs its whole timeout, long enough for the responder's
    # answer to arrive on a loaded machine; the three searches run side by side.
    locations = ("http://203.0.113.5:5000/rootDesc.xml", "file:///etc/passwd", "notaurl")
    found = {}

    def search(location):
        with FakeSsdp(location) as responder:
            found[location] = ssdp.discover(timeout=1.5, interfaces=["127.0.0.1"], group=responder.address)

    threads = [threading.Thread(target=search, args=(location,)) for location in locations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for location in locations:
        assert found[location].answers == [] and found[location].dropped, location


def test_find_gateways_follows_discovery_to_the_description():
    with FakeIgd("ppp") as igd, FakeSsdp(igd.location, st="urn:schemas-upnp-org:service:WANPPPConnection:1") as r:
        audit = find_gateways(timeout=30.0, interfaces=["127.0.0.1"], group=r.address)  # ends once answered
    assert audit.source == "ssdp" and [g.location for g in audit.gateways] == [igd.location]
    assert audit.gateways[0].server == "Fake/1 UPnP/1.1 FakeIGD/1"


def test_a_responder_with_a_broken_description_is_a_problem_not_a_crash():
    with FakeIgd("igd1", description=b"<root><oops") as igd, FakeSsdp(igd.location) as r:
        audit = find_gateways(timeout=30.0, interfaces=["127.0.0.1"], group=r.address)  # ends once answered
    assert audit.gateways == [] and "not well-formed" in audit.problems[0]


def test_bad_interface_is_an_error_entry():
    found = ssdp.discover(timeout=0.2, interfaces=["192.0.2.123"], group=("127.0.0.1", 9))
    assert found.errors and found.answers == []
