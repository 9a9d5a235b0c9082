"""SOAP: real miniupnpd answers, faults, the mapping loop, GetListOfPortMappings, IGD:1 / PPP-only fakes."""

from __future__ import annotations

import re
import threading
import time

import pytest

from exposure_guard.upnp import audit as upnp_audit
from exposure_guard.upnp import soap
from exposure_guard.upnp.audit import find_gateways, read_tables
from exposure_guard.upnp.errors import HostileResponse, SoapFault, UpnpError
from exposure_guard.upnp.models import WANIP2, PortMapping, WanService
from tests.support.fakeigd import BOMB, ENVELOPE, FakeIgd, Mapping
from tests.support.net import TcpServer
from tests.support.paths import IGD_FIXTURES as IGD

URL = "http://10.77.0.1:5000/ctl/IPConn"


def sample(name: str) -> bytes:
    """A captured answer without the request comments the capture put in front of it."""
    text = (IGD / name).read_text("utf-8")
    return re.sub(r"^(\s*<!--.*?-->\s*)+", "", text, flags=re.S).encode("utf-8")


def test_real_generic_entry_answer_parses_into_a_mapping():
    args = soap.parse_response(sample("soap-GetGenericPortMappingEntry-0-200.xml"), 200,
                               "GetGenericPortMappingEntry", URL)
    assert soap.mapping_from_args(args) == PortMapping("", 8080, "TCP", 8080, "10.77.0.10", True, "py-raw", 3600)


def test_real_external_ip_answer():
    args = soap.parse_response(sample("soap-GetExternalIPAddress-200.xml"), 200, "GetExternalIPAddress", URL)
    assert args["NewExternalIPAddress"] == "198.51.100.1"


@pytest.mark.parametrize("name,code", [("soap-GetGenericPortMappingEntry-empty-500.xml", 713),
                                       ("soap-AddPortMapping-otherhost-500.xml", 718),
                                       ("soap-AddPortMapping-port80-500.xml", 606)])
def test_real_faults_become_soap_faults_with_code_and_meaning(name, code):
    action = "GetGenericPortMappingEntry" if "Generic" in name else "AddPortMapping"
    with pytest.raises(SoapFault) as info:
        soap.parse_response(sample(name), 500, action, URL)
    assert info.value.code == code
    assert str(code) in str(info.value) and action in str(info.value) and URL in str(info.value)


def test_real_port_listing_with_cdata():
    args = soap.parse_response(sample("soap-GetListOfPortMappings-200.xml"), 200, "GetListOfPortMappings", URL)
    assert soap.parse_port_listing(args["NewPortListing"]) == [
        PortMapping("", 8080, "TCP", 8080, "10.77.0.10", True, "py-raw", 3600)]


def test_real_specific_entry_and_empty_answers():
    args = soap.parse_response(sample("soap-GetSpecificPortMappingEntry-200.xml"), 200,
                               "GetSpecificPortMappingEntry", URL)
    assert soap.mapping_from_args(args, 8080, "TCP", "").internal_client == "10.77.0.10"
    assert soap.parse_response(sample("soap-DeletePortMapping-200.xml"), 200, "DeletePortMapping", URL) == {}


@pytest.mark.parametrize("body,status,match", [
    (b"", 200, "is empty"), (b"<html>oops</html>", 200, "not a SOAP envelope"),
    (ENVELOPE.encode() % b'<u:OtherResponse xmlns:u="urn:x"/>', 200, "no <GetExternalIPAddressResponse>"),
    (ENVELOPE.encode() % b"", 404, "HTTP 404 without a SOAP fault"),
])
def test_unusable_answers_are_clear_errors(body, status, match):
    with pytest.raises(UpnpError, match=match):
        soap.parse_response(body, status, "GetExternalIPAddress", URL)


@pytest.mark.parametrize("field,value", [("NewExternalPort", "eighty"), ("NewInternalPort", "70000"),
                                         ("NewProtocol", "SCTP")])
def test_garbage_mapping_fields_are_errors(field, value):
    args = {"NewExternalPort": "80", "NewProtocol": "TCP", "NewInternalPort": "80", "NewInternalClient": "10.0.0.2"}
    args[field] = value
    with pytest.raises(UpnpError):
        soap.mapping_from_args(args)


def test_bomb_in_a_soap_answer_is_refused():
    with pytest.raises(HostileResponse):
        soap.parse_response(BOMB, 200, "GetExternalIPAddress", URL)


def _table(n):
    return [Mapping(10000 + i, "192.168.1.%d" % (2 + i % 200), 10000 + i, "TCP" if i % 3 else "UDP", "m%d" % i)
            for i in range(n)]


@pytest.mark.parametrize("variant,method", [("igd2", "GetListOfPortMappings"), ("igd1", "GetGenericPortMappingEntry"),
                                            ("ppp", "GetGenericPortMappingEntry")])
def test_audit_reads_every_mapping_of_each_gateway_kind(variant, method):
    table = _table(23)
    with FakeIgd(variant, table) as igd:
        audit = read_tables(find_gateways(igd.location))
    (item,) = audit.services
    assert item.error == "" and item.method == method and item.external_ip == "203.0.113.7"
    assert {(m.external_port, m.protocol, m.internal_client) for m in item.mappings} == \
        {(m.ext, m.proto, m.client) for m in table}
    if method == "GetGenericPortMappingEntry":
        assert igd.calls.count("GetGenericPortMappingEntry") == 24  # 23 entries + the 713 that ends the list
    else:
        assert "GetGenericPortMappingEntry" not in igd.calls


def test_list_action_is_paged(monkeypatch):
    monkeypatch.setattr(soap, "LIST_PAGE", 10)
    with FakeIgd("igd2", _table(45)) as igd:
        audit = read_tables(find_gateways(igd.location))
    assert len(audit.services[0].mappings) == 45
    assert igd.calls.count("GetListOfPortMappings") >= 5


def test_igd2_without_list_action_falls_back_to_the_loop():
    with FakeIgd("igd2", _table(5), list_action=False) as igd:
        audit = read_tables(find_gateways(igd.location))
    assert audit.services[0].method == "GetGenericPortMappingEntry" and len(audit.services[0].mappings) == 5


def test_mapping_loop_is_capped_against_an_endless_table():
    endless = ENVELOPE % ('<u:GetGenericPortMappingEntryResponse xmlns:u="%s"><NewRemoteHost></NewRemoteHost>'
                          "<NewExternalPort>8080</NewExternalPort><NewProtocol>TCP</NewProtocol><NewInternalPort>8080"
                          "</NewInternalPort><NewInternalClient>10.0.0.9</NewInternalClient><NewEnabled>1</NewEnabled>"
                          "<NewPortMappingDescription>x</NewPortMappingDescription><NewLeaseDuration>0"
                          "</NewLeaseDuration></u:GetGenericPortMappingEntryResponse>" % WANIP2)
    with FakeIgd("igd2", list_action=False,
                 soap_override={"GetGenericPortMappingEntry": (200, endless.encode())}) as igd:
        audit = read_tables(find_gateways(igd.location), cap=50)
    item = audit.services[0]
    assert item.truncated and len(item.mappings) == 1  # the same entry again and again, de-duplicated
    assert igd.calls.count("GetGenericPortMappingEntry") == 51
    assert "more than 50 mappings" in item.warnings[0]


def test_unreadable_table_is_reported_not_raised():
    with FakeIgd("igd1", soap_override={"GetGenericPortMappingEntry": (500, b"<nonsense")}) as igd:
        audit = read_tables(find_gateways(igd.location))
    assert "not well-formed" in audit.services[0].error


class _Clock:
    """Stands in for the ``time`` module of exposure_guard.upnp.audit (the budget's clock) only: the HTTP
    transport keeps the real clock and its real per-call deadlines."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class _Stalling(FakeIgd):
    """A device that holds its answer to ``action`` until the ``with`` block ends (it never answers in time)."""

    def __init__(self, action: str, variant: str, table) -> None:
        super().__init__(variant, table)
        self.stalled_action = action
        self.released = threading.Event()

    def soap(self, action, args, client):
        if action == self.stalled_action:
            self.released.wait(120)
        return super().soap(action, args, client)

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        super().__exit__(*exc)


def test_total_budget_stops_a_slow_table(monkeypatch):
    # Every answer of this device takes 25 s on the budget's clock (simulated: no sleeping, so the outcome
    # does not depend on how loaded the machine is); 100 s of budget are spent after 4 answers.
    clock = _Clock()
    monkeypatch.setattr(upnp_audit, "time", clock)

    class Slow(FakeIgd):
        def soap(self, action, args, client):
            clock.now += 25.0
            return super().soap(action, args, client)

    with Slow("igd1", _table(100)) as igd:
        audit = read_tables(find_gateways(igd.location), budget=100.0)
    item = audit.services[0]
    assert "longer than 100 s in total" in item.error, item.error
    assert item.external_ip == "203.0.113.7" and item.mappings == []
    # nothing is asked once the budget is spent (the table has 100 entries)
    assert igd.calls == ["GetExternalIPAddress"] + ["GetGenericPortMappingEntry"] * 3


def test_the_budget_also_cuts_the_call_in_flight(monkeypatch):
    # A call never gets more time than the budget has left, whatever the per-call deadline (30 s here).
    deadlines = []
    real_fetch = soap.fetch

    def spy(*args, **kwargs):
        deadlines.append(kwargs["deadline"])
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(soap, "fetch", spy)
    with _Stalling("GetGenericPortMappingEntry", "igd1", _table(2)) as igd:  # the table read is never answered
        started = time.monotonic()
        audit = read_tables(find_gateways(igd.location), deadline=30.0, budget=1.0)
        took = time.monotonic() - started
    item = audit.services[0]
    assert item.error and item.external_ip == "203.0.113.7", item.error
    assert len(deadlines) == 2 and all(d <= 1.0 for d in deadlines), deadlines
    assert "longer than 1 s in total" in item.error or "did not finish answering within" in item.error, item.error
    assert took < 20, took  # generous: cut at the 1 s budget, not at the 30 s per-call deadline


def test_delete_add_and_specific_entry_round_trip():
    with FakeIgd("igd1", [Mapping(8080, "127.0.0.1", 8080, desc="nas admin", lease=0)], secure_client="127.0.0.1") as igd:
        client = soap.SoapClient(WanService("urn:schemas-upnp-org:service:WANIPConnection:1",
                                            "http://127.0.0.1:%d/ctl/IPConn" % igd.port))
        mapping = soap.specific_mapping(client, "", 8080, "TCP")
        assert mapping == PortMapping("", 8080, "TCP", 8080, "127.0.0.1", True, "nas admin", 0)
        soap.delete_mapping(client, mapping)
        assert soap.specific_mapping(client, "", 8080, "TCP") is None
        with pytest.raises(SoapFault) as info:
            soap.delete_mapping(client, mapping)
        assert info.value.code == 714
        soap.add_mapping(client, mapping)
        assert soap.specific_mapping(client, "", 8080, "TCP") == mapping
        other = PortMapping("", 9000, "TCP", 9000, "10.9.9.9", True, "", 0)
        with pytest.raises(SoapFault, match="718"):
            soap.add_mapping(client, other)
        assert client.calls == 7


def test_bomb_inside_the_port_listing_is_refused_not_worked_around():
    listing = BOMB.decode().replace('<?xml version="1.0"?>\n', "")
    answer = ENVELOPE % ('<u:GetListOfPortMappingsResponse xmlns:u="%s"><NewPortListing><![CDATA[%s]]>'
                         "</NewPortListing></u:GetListOfPortMappingsResponse>" % (WANIP2, listing))
    with FakeIgd("igd2", _table(3), soap_override={"GetListOfPortMappings": (200, answer.encode())}) as igd:
        audit = read_tables(find_gateways(igd.location))
    assert "XML we refuse" in audit.services[0].error
    assert "GetGenericPortMappingEntry" not in igd.calls  # a hostile answer is reported, not retried around


def test_a_stalling_control_url_is_cut_at_the_per_call_deadline():
    with _Stalling("GetGenericPortMappingEntry", "igd1", _table(2)) as igd:  # the table read is never answered
        started = time.monotonic()
        audit = read_tables(find_gateways(igd.location), deadline=0.5)
        took = time.monotonic() - started
    item = audit.services[0]
    assert "did not finish answering within 0.5 s" in item.error and item.external_ip == "203.0.113.7", item.error
    assert took < 20, took  # generous: the device would never have answered


def test_redirects_are_not_followed():
    with FakeIgd("igd1") as igd:
        target = igd.location

    def redirect(conn):
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % target.encode())

    with TcpServer(redirect) as server, pytest.raises(UpnpError, match="answered HTTP 302"):
        find_gateways("http://127.0.0.1:%d/rootDesc.xml" % server.port)
