"""The probing engine: deadlines, filtered ports, capped reads, no redirects, the WAN-side UPnP test."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from exposure_guard_prober.config import ProberConfig
from exposure_guard_prober.connector import ConnectFiltered, Connector
from exposure_guard_prober.engine import NO_OUTBOUND_SLOT, PortRequest, run_job
from exposure_guard_prober.upnpwan import _same_host, parse_description, parse_ssdp
from tests.support.fakeigd import FakeIgd, FakeSsdp
from tests.support.net import TcpServer


def run(coro):
    return asyncio.run(coro)


class BlackholeConnector(Connector):
    """Every connect hangs (a DROP rule): the engine must give up at its own timeouts. Counts how many
    connects are in flight at once."""

    in_flight = 0
    most_in_flight = 0

    async def _connect(self, address, port, timeout):
        BlackholeConnector.in_flight += 1
        BlackholeConnector.most_in_flight = max(BlackholeConnector.most_in_flight, BlackholeConnector.in_flight)
        try:
            await asyncio.sleep(timeout)
        finally:
            BlackholeConnector.in_flight -= 1
            self._note("tcp", address, port, "filtered")
        raise ConnectFiltered("no answer within %.1f s" % timeout)


def test_all_filtered_job_takes_one_connect_timeout():
    config = ProberConfig(connect_timeout=0.5, deadline=5.0)
    BlackholeConnector.most_in_flight = 0

    async def job():
        connector = BlackholeConnector(config)
        return await run_job(connector, "192.0.2.1", [PortRequest(p) for p in range(1000, 1016)], config, False)

    started = time.monotonic()
    results, upnp, _seconds = run(job())
    elapsed = time.monotonic() - started
    assert [r["state"] for r in results] == ["filtered"] * 16
    assert upnp is None
    assert BlackholeConnector.most_in_flight == 16  # all 16 ports probed in parallel: one connect timeout in all
    assert elapsed < 8, elapsed  # a hang bound only (sequential would be 16 x 0.5 s)


def test_total_deadline_cuts_everything():
    config = ProberConfig(connect_timeout=30.0, deadline=0.4)

    async def job():
        return await run_job(BlackholeConnector(config), "192.0.2.1", [PortRequest(1)], config, False)

    started = time.monotonic()
    results, _upnp, _seconds = run(job())
    assert time.monotonic() - started < 15  # cut by the 0.4 s deadline, far before the 30 s connect timeout
    assert results[0]["state"] == "filtered"


class Server(TcpServer):
    """A TCP server on loopback that reads the request, then runs ``reply(conn)``; counts connections."""

    def __init__(self, reply) -> None:
        def handle(conn):
            conn.recv(4096)
            reply(conn)

        super().__init__(handle)


def test_reads_are_capped_and_redirects_not_followed():
    target = Server(lambda c: c.sendall(b"HTTP/1.0 200 OK\r\n\r\nnever"))
    sent = {"bytes": 0}

    def flood(conn):
        conn.sendall(b"HTTP/1.0 301 Moved\r\nLocation: http://127.0.0.1:%d/x\r\nServer: big\r\n\r\n" % target.port)
        chunk = b"A" * 65536
        try:
            for _ in range(160):  # 10 MiB
                conn.sendall(chunk)
                sent["bytes"] += len(chunk)
        except OSError:
            pass

    big = Server(flood)
    config = ProberConfig(io_timeout=2.0, read_cap=64 * 1024)

    async def job():
        return await run_job(Connector(config), "127.0.0.1", [PortRequest(big.port)], config, False)

    try:
        results, _u, _s = run(job())
    finally:
        big.close()
        target.close()
    result = results[0]
    assert result["http"]["status"] == 301 and result["http"]["location"] == "/x"
    assert target.hits == 0
    assert sent["bytes"] < 10 * 1024 * 1024  # the prober hung up long before the end


def test_silent_service_is_open_without_fingerprint():
    silent = Server(lambda c: time.sleep(1.0))
    config = ProberConfig(io_timeout=0.3, deadline=3.0)

    async def job():
        return await run_job(Connector(config), "127.0.0.1", [PortRequest(silent.port, probe="banner")], config, False)

    try:
        results, _u, _s = run(job())
    finally:
        silent.close()
    assert results[0]["state"] == "open" and results[0]["banner"] is None and results[0]["http"] is None


def test_tls_on_plain_port_reports_tls_error_but_open():
    plain = Server(lambda c: c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n"))
    config = ProberConfig(io_timeout=1.0)

    async def job():
        return await run_job(Connector(config), "127.0.0.1", [PortRequest(plain.port, tls=True)], config, False)

    try:
        results, _u, _s = run(job())
    finally:
        plain.close()
    assert results[0]["state"] == "open"
    assert results[0]["tls"]["sha256"] is None and results[0]["tls"]["error"]


# ---------------------------------------------------------------- WAN-side UPnP
def test_wan_upnp_finds_an_exposed_igd():
    with FakeIgd("igd2", external_ip="203.0.113.7") as igd, FakeSsdp(igd.location) as ssdp:
        config = ProberConfig(ssdp_port=ssdp.address[1], ssdp_timeout=1.0, io_timeout=1.0, igd_probes=())

        async def job():
            return await run_job(Connector(config), "127.0.0.1", [], config, True)

        _results, upnp, _s = run(job())
    assert upnp["exposed"] is True
    assert upnp["ssdp"]["answered"] and "FakeIGD" in upnp["ssdp"]["server"]
    assert upnp["igd"]["found"] and upnp["igd"]["port"] == igd.port
    assert upnp["igd"]["device_type"].endswith("InternetGatewayDevice:2")
    assert upnp["igd"]["control_reachable"] is True and upnp["igd"]["external_ip"] == "203.0.113.7"
    assert igd.calls == ["GetExternalIPAddress"]  # read-only: nothing else is called


def test_wan_upnp_description_on_a_common_port_without_ssdp():
    with FakeIgd("igd1") as igd:
        closed_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed_udp.bind(("127.0.0.1", 0))
        port = closed_udp.getsockname()[1]
        closed_udp.close()
        config = ProberConfig(ssdp_port=port, ssdp_timeout=0.3, io_timeout=1.0,
                              igd_probes=((igd.port, "/nothing.xml"), (igd.port, "/rootDesc.xml")))

        async def job():
            return await run_job(Connector(config), "127.0.0.1", [], config, True)

        _results, upnp, _s = run(job())
    assert upnp["ssdp"]["answered"] is False
    assert upnp["igd"]["found"] and upnp["igd"]["path"] == "/rootDesc.xml"
    assert upnp["exposed"] is True


def test_ssdp_location_elsewhere_is_not_followed():
    with FakeIgd("igd2") as igd, FakeSsdp(igd.location.replace("127.0.0.1", "127.0.0.9")) as ssdp:
        config = ProberConfig(ssdp_port=ssdp.address[1], ssdp_timeout=1.0, io_timeout=1.0, igd_probes=(),
                              log_connects=True)
        seen = []

        async def job():
            return await run_job(Connector(config, seen.append), "127.0.0.1", [], config, True)

        _results, upnp, _s = run(job())
    assert upnp["ssdp"]["answered"] and upnp["ssdp"]["location_not_followed"]
    assert upnp["igd"]["found"] is False and upnp["exposed"] is True  # answering SSDP at all is the problem
    assert {r["target"] for r in seen} == {"127.0.0.1"}
    assert igd.calls == []


def test_parsers_are_defensive():
    assert parse_ssdp(b"garbage") is None
    assert parse_ssdp(b"HTTP/1.1 200 OK\r\nLOCATION: http://x/\x00\x01" + b"a" * 5000 + b"\r\n")["location"]
    assert len(parse_ssdp(b"HTTP/1.1 200 OK\r\nSERVER: " + b"s" * 5000 + b"\r\n")["server"]) <= 300
    assert _same_host("http://127.0.0.1:5000/rootDesc.xml", "127.0.0.1") == (5000, "/rootDesc.xml")
    assert _same_host("http://127.0.0.2:5000/rootDesc.xml", "127.0.0.1") is None
    assert _same_host("https://127.0.0.1/x", "127.0.0.1") is None
    assert _same_host("http://[::1]:80/x?y=1", "::1") == (80, "/x?y=1")
    assert _same_host("http://name.example/x", "127.0.0.1") is None
    assert parse_description("<root>" + "<service>" * 10000)["wan_connection_services"] == []


@pytest.mark.parametrize("location", ["http://127.0.0.1:99999/x", "http://[zz]/", "javascript:alert(1)"])
def test_bad_locations(location):
    assert _same_host(location, "127.0.0.1") is None


def test_a_port_still_waiting_for_an_outbound_slot_says_so():
    config = ProberConfig(connect_timeout=30.0, deadline=0.5, max_outbound=1)

    async def job():
        return await run_job(BlackholeConnector(config), "192.0.2.1", [PortRequest(1), PortRequest(2)], config, False)

    results, _upnp, _seconds = run(job())
    assert [r["state"] for r in results] == ["filtered", "filtered"]
    # the first port held the only slot (connecting when the deadline came), the second never got one
    assert results[0]["error"] is None
    assert results[1]["error"] == NO_OUTBOUND_SLOT
