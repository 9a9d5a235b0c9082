"""SOAP control of a WAN connection service: one ``call(action, **args)`` plus small typed parsers.

Faults become :class:`SoapFault` with the UPnP error code (713 ends the mapping list, 718 is a
conflict, 606 a refusal). Every call has a total deadline and a size cap (see exposure_guard/hostilehttp.py)."""

from __future__ import annotations

import ipaddress
from typing import Dict, List, Optional, Tuple
from xml.sax.saxutils import escape

import requests

from exposure_guard.hostilehttp import DEFAULT_DEADLINE, MAX_BODY, fetch, new_session
from exposure_guard.upnp.errors import HostileResponse, SoapFault, UpnpError
from exposure_guard.upnp.models import PortMapping, WanService
from exposure_guard.upnp.xmlsafe import child, children_text, local, parse_xml, text_of, walk

MAX_MAPPINGS = 4096  # a router holding more is broken or hostile; we stop and say so
LIST_PAGE = 500  # GetListOfPortMappings entries asked for per call (fits well below the 256 KiB cap)
END_OF_LIST = 713  # SpecifiedArrayIndexInvalid
NO_SUCH_ENTRY = 714

_ENVELOPE = ('<?xml version="1.0"?>\r\n'
             '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
             's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
             '<u:{action} xmlns:u="{service}">{args}</u:{action}></s:Body></s:Envelope>\r\n')


class SoapClient:
    """Calls actions on one service's control URL."""

    def __init__(self, service: WanService, deadline: float = DEFAULT_DEADLINE,
                 session: Optional[requests.Session] = None) -> None:
        self.service = service
        self.deadline = deadline
        self.session = session or new_session()
        self.calls = 0

    def call(self, action: str, **args: object) -> Dict[str, str]:
        """Invoke ``action`` with ``args`` (in order); return the response's output arguments."""
        body = _ENVELOPE.format(action=action, service=self.service.service_type,
                                args="".join("<%s>%s</%s>" % (k, escape(_text(v)), k) for k, v in args.items()))
        headers = {"Content-Type": 'text/xml; charset="utf-8"',
                   "SOAPAction": '"%s#%s"' % (self.service.service_type, action)}
        self.calls += 1
        answer = fetch(self.service.control_url, method="POST", data=body.encode("utf-8"), headers=headers,
                       deadline=self.deadline, session=self.session)
        return parse_response(answer.body, answer.status, action, self.service.control_url)

    def close(self) -> None:
        self.session.close()


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)


def parse_response(data: bytes, status: int, action: str, url: str) -> Dict[str, str]:
    what = "the %s answer from %s" % (action, url)
    if not data.strip():
        raise UpnpError("%s is empty (HTTP %d)" % (what, status))
    root = parse_xml(data, what)
    body = next(walk(root, "Body"), None)
    if body is None:
        raise UpnpError("%s is not a SOAP envelope (HTTP %d)" % (what, status))
    fault = child(body, "Fault")
    if fault is not None:
        error = next(walk(fault, "UPnPError"), None)
        code_text = text_of(error, "errorCode") if error is not None else ""
        try:
            code = int(code_text)
        except ValueError:
            code = 0
        description = (text_of(error, "errorDescription", 200) if error is not None else "") or \
            text_of(fault, "faultstring", 200)
        raise SoapFault(action, code, description, url)
    if status != 200:
        raise UpnpError("%s: HTTP %d without a SOAP fault" % (what, status))
    response = next((item for item in body if local(item.tag) == action + "Response"), None)
    if response is None:
        raise UpnpError("%s has no <%sResponse> element" % (what, action))
    return children_text(response, limit=MAX_BODY)  # the body is already capped


# ---------------------------------------------------------------- typed parsers
def _port(value: str, what: str) -> int:
    try:
        port = int(value.strip())
    except ValueError:
        raise UpnpError("%s %r is not a port number" % (what, value[:40])) from None
    if not 0 <= port <= 65535:
        raise UpnpError("%s %d is outside 0-65535" % (what, port))
    return port


def _lease(value: str) -> int:
    """Seconds, clamped to the spec's ui4; empty or garbage is 0 (permanent, the spec's default)."""
    try:
        return max(0, min(int(value.strip()), 2 ** 32 - 1))
    except ValueError:
        return 0


def _client(value: str) -> str:
    text = value.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text[:255]  # a host name (allowed by the spec); shown as sent


def mapping_from_args(args: Dict[str, str], external_port: Optional[int] = None,
                      protocol: Optional[str] = None, remote_host: Optional[str] = None) -> PortMapping:
    """A PortMapping from GetGenericPortMappingEntry / GetSpecificPortMappingEntry / list-entry fields."""
    ext = external_port if external_port is not None else _port(args.get("NewExternalPort", ""), "NewExternalPort")
    proto = (protocol or args.get("NewProtocol", "")).strip().upper()
    if proto not in ("TCP", "UDP"):
        raise UpnpError("mapping of port %d has protocol %r (expected TCP or UDP)" % (ext, proto[:20]))
    enabled = args.get("NewEnabled", "1").strip().lower() not in ("0", "false", "no")
    description = args.get("NewPortMappingDescription", args.get("NewDescription", ""))
    lease = args.get("NewLeaseDuration", args.get("NewLeaseTime", "0"))
    return PortMapping(remote_host=(remote_host if remote_host is not None else args.get("NewRemoteHost", "")).strip(),
                       external_port=ext, protocol=proto,
                       internal_port=_port(args.get("NewInternalPort", ""), "NewInternalPort"),
                       internal_client=_client(args.get("NewInternalClient", "")), enabled=enabled,
                       description=description.strip()[:256], lease_duration=_lease(lease))


def parse_port_listing(listing: str, url: str = "") -> List[PortMapping]:
    """The ``NewPortListing`` of GetListOfPortMappings: an escaped ``<p:PortMappingList>`` document."""
    if not listing.strip():
        return []
    root = parse_xml(listing.encode("utf-8"), "the port listing from %s" % (url or "the router"))
    out: List[PortMapping] = []
    for entry in walk(root, "PortMappingEntry"):
        out.append(mapping_from_args(children_text(entry)))
        if len(out) > MAX_MAPPINGS:
            raise HostileResponse("the port listing from %s holds more than %d entries; refused" % (url, MAX_MAPPINGS))
    return out


# ---------------------------------------------------------------- actions
def external_ip(client: SoapClient) -> str:
    return client.call("GetExternalIPAddress").get("NewExternalIPAddress", "").strip()[:64]


def firewall_status(client: SoapClient) -> Tuple[Optional[bool], Optional[bool]]:
    """WANIPv6FirewallControl GetFirewallStatus: (FirewallEnabled, InboundPinholeAllowed); None where the
    answer has no usable 0/1."""
    answer = client.call("GetFirewallStatus")

    def flag(name: str) -> Optional[bool]:
        value = answer.get(name, "").strip()
        return {"1": True, "0": False, "true": True, "false": False}.get(value.lower())

    return flag("FirewallEnabled"), flag("InboundPinholeAllowed")


def list_mappings(client: SoapClient, cap: int = MAX_MAPPINGS,
                  prefer_list: bool = True) -> Tuple[List[PortMapping], str, bool]:
    """Every mapping: GetListOfPortMappings on a :2 service (one call per page), else the
    GetGenericPortMappingEntry loop until 713. Returns (mappings, method, truncated at ``cap``)."""
    if prefer_list and client.service.version >= 2:
        try:
            mappings, truncated = _list_by_range(client, cap)
            return mappings, "GetListOfPortMappings", truncated
        except HostileResponse:
            raise
        except UpnpError:
            pass  # not offered after all, refused (606), or the router choked: use the index loop
    mappings, truncated = _list_by_index(client, cap)
    return mappings, "GetGenericPortMappingEntry", truncated


def _list_by_index(client: SoapClient, cap: int) -> Tuple[List[PortMapping], bool]:
    """Entries 0, 1, 2 ... until the router says the list ended; an entry at index ``cap`` means truncated."""
    out: List[PortMapping] = []
    seen = set()
    index = 0
    while True:
        try:
            args = client.call("GetGenericPortMappingEntry", NewPortMappingIndex=index)
        except SoapFault as fault:
            # 713/714 end the list; some routers answer 402 (Invalid Args) past the last entry instead. Any
            # other fault, and 402 for entry 0, is an error: ending quietly would hide the rest of the table.
            if fault.code in (END_OF_LIST, NO_SUCH_ENTRY) or (index > 0 and fault.code == 402):
                return out, False
            raise
        if index == cap:
            return out, True
        mapping = mapping_from_args(args)
        if mapping.key not in seen:  # a router answering the same entry forever is caught by ``cap``
            seen.add(mapping.key)
            out.append(mapping)
        index += 1


def _list_by_range(client: SoapClient, cap: int) -> Tuple[List[PortMapping], bool]:
    """GetListOfPortMappings per protocol, a page of up to LIST_PAGE entries per call, each page starting after
    the highest port of the one before (the spec lists a range in port order)."""
    out: List[PortMapping] = []
    seen = set()
    url = client.service.control_url
    for protocol in ("TCP", "UDP"):
        start = 0
        while start <= 65535:
            args = client.call("GetListOfPortMappings", NewStartPort=start, NewEndPort=65535, NewProtocol=protocol,
                               NewManage=1, NewNumberOfPorts=LIST_PAGE)
            listed = parse_port_listing(args.get("NewPortListing", ""), url)
            ports = [m.external_port for m in listed]
            if ports != sorted(ports) or (ports and ports[0] < start):
                # paging on from the highest port would skip entries: the caller falls back to the index loop
                raise UpnpError("GetListOfPortMappings at %s answered ports out of order or below the asked "
                                "start %d; cannot page through it" % (url, start))
            for mapping in listed:
                if mapping.protocol == protocol and mapping.key not in seen:
                    seen.add(mapping.key)
                    out.append(mapping)
                    if len(out) > cap:
                        return out[:cap], True
            if len(listed) < LIST_PAGE:  # a short page is the last one (whatever protocols the router mixed in)
                break
            start = ports[-1] + 1
    return out, False


def specific_mapping(client: SoapClient, remote_host: str, external_port: int, protocol: str) -> Optional[PortMapping]:
    """The mapping for (remote host, external port, protocol), or None (714 NoSuchEntryInArray)."""
    try:
        args = client.call("GetSpecificPortMappingEntry", NewRemoteHost=remote_host, NewExternalPort=external_port,
                           NewProtocol=protocol)
    except SoapFault as fault:
        if fault.code in (NO_SUCH_ENTRY, END_OF_LIST):
            return None
        raise
    return mapping_from_args(args, external_port=external_port, protocol=protocol, remote_host=remote_host)


def delete_mapping(client: SoapClient, mapping: PortMapping) -> None:
    client.call("DeletePortMapping", NewRemoteHost=mapping.remote_host, NewExternalPort=mapping.external_port,
                NewProtocol=mapping.protocol)


def add_mapping(client: SoapClient, mapping: PortMapping) -> None:
    client.call("AddPortMapping", NewRemoteHost=mapping.remote_host, NewExternalPort=mapping.external_port,
                NewProtocol=mapping.protocol, NewInternalPort=mapping.internal_port,
                NewInternalClient=mapping.internal_client, NewEnabled=mapping.enabled,
                NewPortMappingDescription=mapping.description, NewLeaseDuration=mapping.lease_duration)

