"""The mapping walk pinned: where the list ends, paging boundaries, the cap, and every field of an entry.

A missed entry here is a false "pass" on an exposed NAS, so each way a router can end, page or garble the list
has a test. The routers are scripted (a function from action and arguments to an answer); the real miniupnpd
walk is in tests/lab."""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional

import pytest

from exposure_guard.hostilehttp import new_session
from exposure_guard.upnp import soap
from exposure_guard.upnp.errors import HostileResponse, SoapFault, UpnpError
from exposure_guard.upnp.models import WANIP1, WANIP2, PortMapping, WanService
from tests.support.fakeigd import ENVELOPE, FakeIgd, Mapping
from tests.support.net import TcpServer

URL = "http://10.77.0.1:5000/ctl/IPConn"
Answer = Callable[[str, Dict[str, object]], Dict[str, str]]


class ScriptedClient:
    """A SoapClient stand-in: ``answer(action, args)`` returns output arguments or raises a SoapFault."""

    def __init__(self, answer: Answer, service_type: str = WANIP1) -> None:
        self.service = WanService(service_type, URL)
        self.answer = answer
        self.log: List[Dict[str, object]] = []

    def call(self, action: str, **args: object) -> Dict[str, str]:
        self.log.append(dict(args, action=action))
        return self.answer(action, args)


def entry(port: int, proto: str = "TCP", client: str = "10.77.0.10", enabled: str = "1",
          remote: str = "") -> Dict[str, str]:
    return {"NewRemoteHost": remote, "NewExternalPort": str(port), "NewProtocol": proto,
            "NewInternalPort": str(port), "NewInternalClient": client, "NewEnabled": enabled,
            "NewPortMappingDescription": "m%d" % port, "NewLeaseDuration": "0"}


def table(entries: List[Dict[str, str]], end: int = soap.END_OF_LIST, fault_at: Optional[int] = None,
          fault_code: int = 501) -> Answer:
    """A router answering GetGenericPortMappingEntry from ``entries``, ``end`` past the last one and
    ``fault_code`` at index ``fault_at``."""

    def answer(action: str, args: Dict[str, object]) -> Dict[str, str]:
        assert action == "GetGenericPortMappingEntry"
        index = int(str(args["NewPortMappingIndex"]))
        if index == fault_at:
            raise SoapFault(action, fault_code, "ActionFailed", URL)
        if index >= len(entries):
            raise SoapFault(action, end, "", URL)
        return entries[index]

    return answer


def ports(mappings: List[PortMapping]) -> List[int]:
    return [m.external_port for m in mappings]


# ---------------------------------------------------------------- GetGenericPortMappingEntry loop
@pytest.mark.parametrize("end", [713, 714])
def test_the_index_loop_ends_at_713_or_714_with_every_entry(end):
    client = ScriptedClient(table([entry(p) for p in (80, 443, 8080)], end=end))
    mappings, method, truncated = soap.list_mappings(client)
    assert (ports(mappings), method, truncated) == ([80, 443, 8080], "GetGenericPortMappingEntry", False)
    assert [c["NewPortMappingIndex"] for c in client.log] == [0, 1, 2, 3]


@pytest.mark.parametrize("fault_at", [0, 1, 2])
def test_any_other_fault_in_the_walk_is_an_error_not_the_end_of_the_list(fault_at):
    # ending quietly at a 501 would report a partial table as the whole one
    client = ScriptedClient(table([entry(p) for p in (80, 443, 8080)], fault_at=fault_at))
    with pytest.raises(SoapFault) as info:
        soap.list_mappings(client)
    assert info.value.code == 501


def test_402_past_the_first_entry_ends_the_list_but_402_at_entry_0_is_an_error():
    client = ScriptedClient(table([entry(80), entry(443)], end=402))
    assert soap.list_mappings(client)[:2] == ([soap.mapping_from_args(entry(80)), soap.mapping_from_args(entry(443))],
                                              "GetGenericPortMappingEntry")
    with pytest.raises(SoapFault) as info:
        soap.list_mappings(ScriptedClient(table([], end=402)))
    assert info.value.code == 402


def test_an_empty_table_is_an_empty_list_not_truncated():
    assert soap.list_mappings(ScriptedClient(table([]))) == ([], "GetGenericPortMappingEntry", False)


@pytest.mark.parametrize("count,truncated", [(4, False), (5, True), (9, True)])
def test_the_index_loop_cap_is_exact(count, truncated):
    client = ScriptedClient(table([entry(1000 + i) for i in range(count)]))
    mappings, _method, cut = soap.list_mappings(client, cap=4)
    assert (len(mappings), cut) == (4, truncated)
    assert ports(mappings) == [1000, 1001, 1002, 1003]
    assert len(client.log) == 5  # entries 0-3 and the probe of index 4; never more


def test_a_router_repeating_one_entry_forever_is_cut_at_the_cap_and_listed_once():
    client = ScriptedClient(lambda action, args: entry(8080))
    mappings, _method, truncated = soap.list_mappings(client, cap=soap.MAX_MAPPINGS)
    assert (ports(mappings), truncated) == ([8080], True)
    assert len(client.log) == soap.MAX_MAPPINGS + 1


# ---------------------------------------------------------------- GetListOfPortMappings pages
def listing(entries: List[Dict[str, str]]) -> Dict[str, str]:
    rename = {"NewPortMappingDescription": "NewDescription", "NewLeaseDuration": "NewLeaseTime"}
    body = "".join("<p:PortMappingEntry>%s</p:PortMappingEntry>" % "".join(
        "<p:%s>%s</p:%s>" % (rename.get(k, k), v, rename.get(k, k)) for k, v in e.items()) for e in entries)
    return {"NewPortListing": '<p:PortMappingList xmlns:p="urn:schemas-upnp-org:gw:WANIPConnection">%s'
                              '</p:PortMappingList>' % body}


def ranged(entries: List[Dict[str, str]], mix_protocols: bool = False,
           order: Callable[[List[Dict[str, str]]], List[Dict[str, str]]] = lambda e: e) -> Answer:
    """A router answering GetListOfPortMappings in port order (``mix_protocols``: ignoring NewProtocol)."""

    def answer(action: str, args: Dict[str, object]) -> Dict[str, str]:
        assert action == "GetListOfPortMappings"
        start, end, count = (int(str(args[k])) for k in ("NewStartPort", "NewEndPort", "NewNumberOfPorts"))
        chosen = sorted((e for e in entries if start <= int(e["NewExternalPort"]) <= end
                         and (mix_protocols or e["NewProtocol"] == args["NewProtocol"])),
                        key=lambda e: int(e["NewExternalPort"]))
        return listing(order(chosen[:count]))

    return answer


def test_pages_follow_on_from_the_highest_port_and_miss_nothing_at_a_boundary():
    # 1,200 TCP entries: pages of 500; the entry right after each page boundary must be in the result
    entries = [entry(1000 + i) for i in range(1200)] + [entry(53, "UDP")]
    client = ScriptedClient(ranged(entries), WANIP2)
    mappings, method, truncated = soap.list_mappings(client)
    assert (method, truncated) == ("GetListOfPortMappings", False)
    assert ports(mappings) == list(range(1000, 2200)) + [53]
    starts = [(c["NewProtocol"], c["NewStartPort"]) for c in client.log]
    assert starts == [("TCP", 0), ("TCP", 1500), ("TCP", 2000), ("UDP", 0)]
    assert {c["NewEndPort"] for c in client.log} == {65535}
    assert {c["NewNumberOfPorts"] for c in client.log} == {soap.LIST_PAGE}


def test_a_full_page_of_mixed_protocols_is_not_mistaken_for_the_last_page():
    # a router ignoring NewProtocol: 500 entries per page of which only half are TCP
    entries = [entry(1000 + i, "TCP" if i % 2 else "UDP") for i in range(1000)] + [entry(5000)]
    client = ScriptedClient(ranged(entries, mix_protocols=True), WANIP2)
    mappings, _method, _cut = soap.list_mappings(client)
    assert 5000 in ports(mappings)
    assert len(mappings) == 1001
    assert sorted((m.protocol, m.external_port) for m in mappings) == sorted(
        (e["NewProtocol"], int(e["NewExternalPort"])) for e in entries)


def test_a_page_out_of_port_order_falls_back_to_the_index_loop():
    entries = [entry(1000 + i) for i in range(soap.LIST_PAGE + 20)]

    def answer(action: str, args: Dict[str, object]) -> Dict[str, str]:
        if action == "GetListOfPortMappings":
            return ranged(entries, order=lambda e: list(reversed(e)))(action, args)
        return table(entries)(action, args)

    client = ScriptedClient(answer, WANIP2)
    mappings, method, truncated = soap.list_mappings(client)
    assert (method, truncated, len(mappings)) == ("GetGenericPortMappingEntry", False, soap.LIST_PAGE + 20)


def test_a_page_below_the_asked_start_falls_back_to_the_index_loop():
    entries = [entry(1000 + i) for i in range(soap.LIST_PAGE)] + [entry(9000)]

    def answer(action: str, args: Dict[str, object]) -> Dict[str, str]:
        if action == "GetListOfPortMappings":
            return listing(entries[:soap.LIST_PAGE])  # the same first page whatever the start
        return table(entries)(action, args)

    mappings, method, _cut = soap.list_mappings(ScriptedClient(answer, WANIP2))
    assert method == "GetGenericPortMappingEntry" and 9000 in ports(mappings)


@pytest.mark.parametrize("count,truncated", [(3, False), (4, True)])
def test_the_list_cap_is_exact(count, truncated):
    client = ScriptedClient(ranged([entry(1000 + i) for i in range(count)]), WANIP2)
    mappings, method, cut = soap.list_mappings(client, cap=3)
    assert (ports(mappings), method, cut) == ([1000, 1001, 1002], "GetListOfPortMappings", truncated)


def test_a_hostile_listing_is_refused_not_retried_with_the_loop():
    many = [entry(1 + i % 60000, "TCP") for i in range(soap.MAX_MAPPINGS + 1)]
    client = ScriptedClient(lambda action, args: listing(many) if action == "GetListOfPortMappings" else {}, WANIP2)
    with pytest.raises(HostileResponse) as info:
        soap.list_mappings(client)
    assert str(info.value) == "the port listing from %s holds more than 4096 entries; refused" % URL
    assert [c["action"] for c in client.log] == ["GetListOfPortMappings"]


def test_igd1_never_asks_for_the_list_action_and_prefer_list_false_skips_it():
    client = ScriptedClient(table([entry(80)]))
    soap.list_mappings(client)
    both = ScriptedClient(table([entry(80)]), WANIP2)
    assert soap.list_mappings(both, prefer_list=False)[1] == "GetGenericPortMappingEntry"
    assert {c["action"] for c in client.log + both.log} == {"GetGenericPortMappingEntry"}


# ---------------------------------------------------------------- one entry's fields
@pytest.mark.parametrize("value", ["0", "false", "no", "FALSE", " No ", "False"])
def test_disabled_entries_are_parsed_as_disabled(value):
    assert soap.mapping_from_args(entry(8080, enabled=value)).enabled is False


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", ""])
def test_enabled_or_unsaid_entries_are_enabled(value):
    assert soap.mapping_from_args(entry(8080, enabled=value)).enabled is True
    args = entry(8080)
    del args["NewEnabled"]
    assert soap.mapping_from_args(args).enabled is True


def test_remote_host_is_kept_stripped_and_an_override_wins():
    assert soap.mapping_from_args(entry(8080, remote=" 198.51.100.9 ")).remote_host == "198.51.100.9"
    assert soap.mapping_from_args(entry(8080, remote="198.51.100.9"), remote_host="").remote_host == ""
    assert soap.mapping_from_args(entry(8080), remote_host=" 203.0.113.5 ").remote_host == "203.0.113.5"


@pytest.mark.parametrize("field", ["NewExternalPort", "NewInternalPort"])
@pytest.mark.parametrize("value,ok", [("0", True), ("65535", True), (" 443 ", True), ("65536", False),
                                      ("-1", False), ("", False), ("0x50", False)])
def test_port_bounds(field, value, ok):
    args = dict(entry(8080), **{field: value})
    if ok:
        assert getattr(soap.mapping_from_args(args), "external_port" if field == "NewExternalPort"
                       else "internal_port") == int(value)
    else:
        with pytest.raises(UpnpError, match=field):
            soap.mapping_from_args(args)


def test_protocol_client_description_and_lease_are_normalised():
    args = dict(entry(8080), NewProtocol=" tcp ", NewInternalClient=" 10.77.0.010 ".replace("010", "10"),
                NewPortMappingDescription=" " + "d" * 300 + " ", NewLeaseDuration="99999999999")
    mapping = soap.mapping_from_args(args)
    assert (mapping.protocol, mapping.internal_client) == ("TCP", "10.77.0.10")
    assert mapping.description == "d" * 256
    assert mapping.lease_duration == 2 ** 32 - 1
    assert soap.mapping_from_args(dict(entry(1), NewLeaseDuration="soon")).lease_duration == 0
    assert soap.mapping_from_args(dict(entry(1), NewLeaseDuration="-5")).lease_duration == 0
    assert soap.mapping_from_args(dict(entry(1), NewInternalClient="nas.lan ")).internal_client == "nas.lan"
    with pytest.raises(UpnpError, match="protocol 'ICMP'"):
        soap.mapping_from_args(dict(entry(1), NewProtocol="icmp"))
    # IGD:2 list entries name the description and lease differently
    listed = {"NewExternalPort": "1", "NewProtocol": "UDP", "NewInternalPort": "2", "NewInternalClient": "10.0.0.2",
              "NewDescription": "plex", "NewLeaseTime": "60"}
    assert soap.mapping_from_args(listed) == PortMapping("", 1, "UDP", 2, "10.0.0.2", True, "plex", 60)


def test_a_fault_without_upnp_detail_keeps_the_faultstring_and_code_0():
    body = (ENVELOPE % "<s:Fault><faultcode>s:Server</faultcode><faultstring>Router busy</faultstring></s:Fault>")
    with pytest.raises(SoapFault) as info:
        soap.parse_response(body.encode(), 500, "GetGenericPortMappingEntry", URL)
    assert (info.value.code, info.value.description) == (0, "Router busy")
    assert str(info.value) == "GetGenericPortMappingEntry failed with UPnP error 0 Router busy at " + URL


def test_a_fault_with_a_garbled_code_is_code_0_with_its_description():
    body = ENVELOPE % ("<s:Fault><faultstring>UPnPError</faultstring><detail><UPnPError><errorCode>x7</errorCode>"
                       "<errorDescription>Odd</errorDescription></UPnPError></detail></s:Fault>")
    with pytest.raises(SoapFault) as info:
        soap.parse_response(body.encode(), 500, "AddPortMapping", URL)
    assert (info.value.code, info.value.description) == (0, "Odd")


def test_re_adding_a_disabled_mapping_keeps_it_disabled():
    # undo of a deleted mapping re-adds it: a mapping the owner had switched off must not come back on
    disabled = PortMapping("", 8443, "TCP", 443, "127.0.0.1", False, "owner's, switched off", 0)
    with FakeIgd("igd1") as igd:
        client = soap.SoapClient(WanService(igd.service_type, "http://127.0.0.1:%d/ctl/IPConn" % igd.port))
        try:
            soap.add_mapping(client, disabled)
            assert soap.specific_mapping(client, "", 8443, "TCP") == disabled
            soap.delete_mapping(client, disabled)
            assert soap.specific_mapping(client, "", 8443, "TCP") is None
        finally:
            client.close()
    assert [m.enabled for m in igd.mappings] == []


def test_soap_arguments_are_sent_escaped_in_order_with_booleans_as_digits():
    with FakeIgd("igd1", mappings=[Mapping(80, "127.0.0.1", 80)]) as igd:
        seen: List[List[tuple]] = []
        original = igd.soap

        def spy(action: str, args: Dict[str, str], client: str):
            seen.append(list(args.items()))
            return original(action, args, client)

        igd.soap = spy  # type: ignore[method-assign]
        client = soap.SoapClient(WanService(igd.service_type, "http://127.0.0.1:%d/ctl/IPConn" % igd.port))
        try:
            soap.add_mapping(client, PortMapping("", 81, "TCP", 81, "127.0.0.1", False, "a<b&c", 7))
        finally:
            client.close()
    assert seen == [[("NewRemoteHost", ""), ("NewExternalPort", "81"), ("NewProtocol", "TCP"),
                     ("NewInternalPort", "81"), ("NewInternalClient", "127.0.0.1"), ("NewEnabled", "0"),
                     ("NewPortMappingDescription", "a<b&c"), ("NewLeaseDuration", "7")]]
    assert [(m.ext, m.desc, m.lease, m.enabled) for m in igd.mappings] == [(80, "", 3600, True), (81, "a<b&c", 7, False)]


# ---------------------------------------------------------------- more walk edges
def test_402_at_index_1_ends_a_one_entry_list():
    assert soap.list_mappings(ScriptedClient(table([entry(80)], end=402)))[0] == [soap.mapping_from_args(entry(80))]


def test_the_last_page_may_end_exactly_at_port_65535_and_65535_itself_is_asked_for():
    # a full page ending at 65534, then the one mapping at 65535 on a page of its own; after a page ending at
    # 65535 nothing more is asked
    full = [entry(65535 - soap.LIST_PAGE + i) for i in range(soap.LIST_PAGE)]  # 65035 ... 65534
    client = ScriptedClient(ranged(full + [entry(65535)]), WANIP2)
    mappings, _method, _cut = soap.list_mappings(client)
    assert ports(mappings)[-1] == 65535 and len(mappings) == soap.LIST_PAGE + 1
    assert [c["NewStartPort"] for c in client.log if c["NewProtocol"] == "TCP"] == [0, 65535]
    top = ScriptedClient(ranged([entry(65536 - soap.LIST_PAGE + i) for i in range(soap.LIST_PAGE)]), WANIP2)
    soap.list_mappings(top)
    assert [c["NewStartPort"] for c in top.log if c["NewProtocol"] == "TCP"] == [0]


def test_list_requests_ask_for_every_mapping_not_only_our_own():
    client = ScriptedClient(ranged([entry(80)]), WANIP2)
    soap.list_mappings(client)
    assert client.log[0] == {"action": "GetListOfPortMappings", "NewStartPort": 0, "NewEndPort": 65535,
                             "NewProtocol": "TCP", "NewManage": 1, "NewNumberOfPorts": soap.LIST_PAGE}


def test_an_answer_without_a_listing_is_an_empty_table_and_duplicates_count_once():
    client = ScriptedClient(lambda action, args: {}, WANIP2)
    assert soap.list_mappings(client) == ([], "GetListOfPortMappings", False)
    twice = ScriptedClient(lambda action, args: listing([entry(80), entry(80)] if args["NewProtocol"] == "TCP" else []),
                           WANIP2)
    assert ports(soap.list_mappings(twice)[0]) == [80]


def test_a_listing_of_exactly_the_cap_is_accepted():
    exactly = listing([entry(1 + i) for i in range(soap.MAX_MAPPINGS)])["NewPortListing"]
    assert len(soap.parse_port_listing(exactly, URL)) == soap.MAX_MAPPINGS
    with pytest.raises(HostileResponse) as info:
        soap.parse_port_listing(listing([entry(1 + i) for i in range(soap.MAX_MAPPINGS + 1)])["NewPortListing"], URL)
    assert str(info.value) == "the port listing from %s holds more than 4096 entries; refused" % URL


def test_a_broken_listing_names_where_it_came_from():
    with pytest.raises(UpnpError, match="^the port listing from the router is not well-formed"):
        soap.parse_port_listing("<p:PortMappingList><p:Port")
    with pytest.raises(UpnpError, match="^the port listing from %s is not well-formed" % URL):
        soap.parse_port_listing("<p:PortMappingList><p:Port", URL)


# ---------------------------------------------------------------- missing fields and exact messages
@pytest.mark.parametrize("field,error", [("NewExternalPort", "NewExternalPort '' is not a port number"),
                                         ("NewInternalPort", "NewInternalPort '' is not a port number"),
                                         ("NewProtocol", "mapping of port 8080 has protocol '' (expected TCP or UDP)")])
def test_a_missing_required_field_is_a_named_error(field, error):
    args = entry(8080)
    del args[field]
    with pytest.raises(UpnpError) as info:
        soap.mapping_from_args(args)
    assert str(info.value) == error


def test_missing_optional_fields_have_the_spec_defaults():
    mapping = soap.mapping_from_args({"NewExternalPort": "1", "NewProtocol": "TCP", "NewInternalPort": "2"})
    assert mapping == PortMapping("", 1, "TCP", 2, "", True, "", 0)


def test_exact_port_and_protocol_messages_cut_what_the_router_sent():
    with pytest.raises(UpnpError) as info:
        soap.mapping_from_args(dict(entry(1), NewExternalPort="9" * 50 + "x"))
    assert str(info.value) == "NewExternalPort %r is not a port number" % ("9" * 40)
    with pytest.raises(UpnpError) as info:
        soap.mapping_from_args(dict(entry(1), NewInternalPort="70000"))
    assert str(info.value) == "NewInternalPort 70000 is outside 0-65535"
    with pytest.raises(UpnpError) as info:
        soap.mapping_from_args(dict(entry(1), NewProtocol="p" * 30))
    assert str(info.value) == "mapping of port 1 has protocol %r (expected TCP or UDP)" % ("P" * 20)


def test_internal_client_addresses_are_normalised_and_names_cut():
    assert soap.mapping_from_args(dict(entry(1), NewInternalClient="FE80::0:1")).internal_client == "fe80::1"
    assert soap.mapping_from_args(dict(entry(1), NewInternalClient="h" * 300)).internal_client == "h" * 255


@pytest.mark.parametrize("answer,expected", [({"NewExternalIPAddress": " 203.0.113.7 "}, "203.0.113.7"), ({}, ""),
                                             ({"NewExternalIPAddress": "a" * 100}, "a" * 64)])
def test_external_ip_is_stripped_cut_and_empty_when_missing(answer, expected):
    assert soap.external_ip(ScriptedClient(lambda action, args: answer)) == expected


def test_delete_and_specific_entry_name_the_remote_host():
    mapping = PortMapping("198.51.100.9", 8080, "TCP", 8080, "10.0.0.2", True, "", 0)
    client = ScriptedClient(lambda action, args: entry(8080) if action == "GetSpecificPortMappingEntry" else {})
    soap.delete_mapping(client, mapping)
    found = soap.specific_mapping(client, "198.51.100.9", 8080, "TCP")
    soap.add_mapping(client, mapping)
    assert [c.get("NewRemoteHost") for c in client.log] == ["198.51.100.9"] * 3
    assert found is not None and found.remote_host == "198.51.100.9"


@pytest.mark.parametrize("body,status,error", [
    (b"", 500, "the X answer from %s is empty (HTTP 500)" % URL),
    (b"<a/>", 200, "the X answer from %s is not a SOAP envelope (HTTP 200)" % URL),
    ((ENVELOPE % '<u:XResponse xmlns:u="urn:x"/>').encode(), 404, "the X answer from %s: HTTP 404 without a SOAP fault" % URL),
    ((ENVELOPE % '<u:YResponse xmlns:u="urn:x"/>').encode(), 200, "the X answer from %s has no <XResponse> element" % URL),
    (b"<a>", 200, "the X answer from %s is not well-formed XML" % URL),
])
def test_unusable_answers_have_exact_messages(body, status, error):
    with pytest.raises(UpnpError) as info:
        soap.parse_response(body, status, "X", URL)
    assert str(info.value).startswith(error)


def test_fault_texts_are_cut_at_200_characters():
    long = "d" * 300
    body = ENVELOPE % ("<s:Fault><faultstring>%s</faultstring><detail><UPnPError><errorCode>501</errorCode>"
                       "<errorDescription>%s</errorDescription></UPnPError></detail></s:Fault>" % (long, long))
    with pytest.raises(SoapFault) as info:
        soap.parse_response(body.encode(), 500, "X", URL)
    assert info.value.description == "d" * 200
    no_detail = ENVELOPE % ("<s:Fault><faultstring>%s</faultstring></s:Fault>" % long)
    with pytest.raises(SoapFault) as info:
        soap.parse_response(no_detail.encode(), 500, "X", URL)
    assert info.value.description == "d" * 200


def test_answer_arguments_are_not_cut_below_the_body_cap():
    value = "v" * 10000
    body = ENVELOPE % '<u:XResponse xmlns:u="urn:x"><NewPortListing>%s</NewPortListing></u:XResponse>' % value
    assert soap.parse_response(body.encode(), 200, "X", URL) == {"NewPortListing": value}


# ---------------------------------------------------------------- the request on the wire
def test_the_request_on_the_wire_byte_for_byte():
    received: List[bytes] = []
    answer = (ENVELOPE % '<u:AddPortMappingResponse xmlns:u="%s"/>' % WANIP1).encode()

    def handle(conn) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += conn.recv(65536)
        received.append(head + b"\r\n\r\n" + body)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))

    with TcpServer(handle) as server:
        session = new_session()
        sent: List[str] = []
        original = session.request

        def counting(method, url, **kwargs):
            sent.append(method)
            return original(method, url, **kwargs)

        session.request = counting  # type: ignore[method-assign]
        client = soap.SoapClient(WanService(WANIP1, "http://127.0.0.1:%d/ctl/IPConn" % server.port), session=session)
        soap.add_mapping(client, PortMapping("", 8080, "TCP", 80, "10.0.0.2", True, "a<b", 0))
        assert client.call("AddPortMapping", NewRemoteHost=None, NewEnabled=False) == {}
        client.close()
    assert sent == ["POST", "POST"] and client.calls == 2  # through the client's own session
    head, _, body = received[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /ctl/IPConn HTTP/1.1"
    assert b'Content-Type: text/xml; charset="utf-8"' in lines
    assert b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"' in lines
    assert body == (
        b'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        b's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        b'<u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewRemoteHost></NewRemoteHost>'
        b"<NewExternalPort>8080</NewExternalPort><NewProtocol>TCP</NewProtocol><NewInternalPort>80</NewInternalPort>"
        b"<NewInternalClient>10.0.0.2</NewInternalClient><NewEnabled>1</NewEnabled>"
        b"<NewPortMappingDescription>a&lt;b</NewPortMappingDescription><NewLeaseDuration>0</NewLeaseDuration>"
        b"</u:AddPortMapping></s:Body></s:Envelope>\r\n")
    assert b"<NewRemoteHost></NewRemoteHost><NewEnabled>0</NewEnabled>" in received[1]
