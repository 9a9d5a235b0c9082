"""What the prober sends out obeys its own settings: ``--no-upnp`` skips the WAN-side UPnP step even when a
request asks for it, and never more than ``max_outbound`` outbound sockets are open at once."""

from __future__ import annotations

import json
import threading

import pytest
import requests

from exposure_guard_prober.cli import build_parser, config_from_args
from tests.support.fakeigd import FakeIgd, FakeSsdp
from tests.support.net import TcpServer

NONCE = "n0nce-0123456789"


def probe(url, body):
    return requests.post(url + "/v1/probe", data=json.dumps(body), headers={"Content-Type": "application/json"},
                         timeout=60)


def test_no_upnp_flag_reaches_the_config():
    assert config_from_args(build_parser().parse_args(["serve", "--no-upnp"])).upnp is False
    assert config_from_args(build_parser().parse_args(["serve"])).upnp is True


def test_no_upnp_never_runs_the_upnp_step(start_prober, validate):
    with FakeIgd("igd2") as igd, FakeSsdp(igd.location) as ssdp:
        prober = start_prober(upnp=False, ssdp_port=ssdp.address[1], igd_probes=((igd.port, "/rootDesc.xml"),))
        answer = probe(prober.url(), {"nonce": NONCE, "ports": [1], "upnp": True})
        assert answer.status_code == 200
        document = validate(answer.json(), "probe_response")
        # the same request to a prober without --no-upnp does reach both stand-ins (the test can fail)
        control = start_prober(ssdp_port=ssdp.address[1], igd_probes=((igd.port, "/rootDesc.xml"),))
        assert probe(control.url(), {"nonce": NONCE, "ports": [1], "upnp": True}).json()["upnp"]["exposed"] is True
        assert len(ssdp.requests) == 1 and igd.calls == ["GetExternalIPAddress"]
    upnp = document["upnp"]
    assert upnp["exposed"] is False and upnp["ssdp"] is None and upnp["igd"] is None
    assert "disabled" in upnp["error"]  # the agent reports 'unknown' with this reason, never a pass
    assert [c["proto"] for c in prober.connects()] == ["tcp"]  # the one requested port, nothing else
    assert prober.requests_logged(1)[-1]["upnp"] is False


class HeldSockets:
    """Outbound sockets the prober holds: counted around its connector's ``tcp`` context (from connected to
    closed), in the prober's own event loop."""

    def __init__(self) -> None:
        self.now = self.most = self.total = 0


def count_outbound_sockets(prober) -> HeldSockets:
    from contextlib import asynccontextmanager

    held = HeldSockets()
    connector = prober.server.connector
    original = connector.tcp

    @asynccontextmanager
    async def counted(*args, **kwargs):
        async with original(*args, **kwargs) as sock:
            held.now += 1
            held.total += 1
            held.most = max(held.most, held.now)
            try:
                yield sock
            finally:
                held.now -= 1

    connector.tcp = counted
    return held


class OpenCounter:
    """How many connections are open now over several listeners, and the most ever open at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.most_open = 0

    def hold(self, conn) -> None:
        """A listener's handler: says nothing and keeps the connection until the prober closes it."""
        with self.lock:
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        try:
            conn.settimeout(30)
            while conn.recv(4096):
                pass
        finally:
            with self.lock:
                self.open -= 1


@pytest.mark.slow
def test_max_outbound_caps_simultaneous_outbound_sockets(start_prober, validate):
    counter = OpenCounter()
    listeners = [TcpServer(counter.hold) for _ in range(4)]
    answers = []
    try:
        prober = start_prober(max_outbound=3, max_concurrent=8, per_client_inflight=8, io_timeout=0.5,
                              deadline=30.0)
        held = count_outbound_sockets(prober)
        ports = [{"port": listener.port, "probe": "banner"} for listener in listeners]
        threads = [threading.Thread(target=lambda: answers.append(probe(prober.url(), {"nonce": NONCE,
                                                                                     "ports": ports})))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for listener in listeners:
            listener.close()
    opened = sum(listener.hits for listener in listeners)
    # The listeners' own count can run one ahead on a busy machine (a handler thread may not yet have seen
    # the prober close a socket when the next one arrives): informative only. The cap is asserted where the
    # sockets are opened, in the prober's event loop (single-threaded: exact).
    print("\nmax_outbound=3: %d outbound connections from 4 concurrent probes, at most %d open at once "
          "(the listeners saw at most %d)" % (opened, held.most, counter.most_open))
    assert len(answers) == 4
    for answer in answers:
        assert [p["state"] for p in validate(answer.json(), "probe_response")["ports"]] == ["open"] * 4
    assert opened == 16 and held.total == 16
    assert 1 <= held.most <= 3  # never past the cap
    assert counter.most_open >= 1
