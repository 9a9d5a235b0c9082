"""The IGD's device description: find the WAN connection services in nested devices and resolve their
control URLs (against URLBase, else the description's own URL), refusing URLs that leave its host."""

from __future__ import annotations

from typing import List, Optional, Tuple
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import Element

from exposure_guard.hostilehttp import DEFAULT_DEADLINE, check_url, fetch
from exposure_guard.upnp.errors import HostileResponse, UpnpError
from exposure_guard.upnp.models import CONNECTION_SERVICES, WANIPV6FC, Gateway, WanService
from exposure_guard.upnp.xmlsafe import child, local, parse_xml, text_of

MAX_DEVICES = 64
MAX_SERVICES = 256


def fetch_gateway(location: str, deadline: float = DEFAULT_DEADLINE, server: str = "") -> Gateway:
    """Download and parse the description at ``location``."""
    answer = fetch(location, deadline=deadline)
    if answer.status != 200:
        raise UpnpError("the device description %s answered HTTP %d" % (location, answer.status))
    return parse_description(answer.body, location, server=server)


def parse_description(data: bytes, location: str, server: str = "") -> Gateway:
    check_url(location)
    root = parse_xml(data, "the device description at %s" % location)
    if local(root.tag) != "root":
        raise UpnpError("%s is not a UPnP device description (root element <%s>)" % (location, local(root.tag)[:60]))
    device = child(root, "device")
    if device is None:
        raise UpnpError("the device description at %s has no <device>" % location)
    base = _base_url(text_of(root, "URLBase"), location)
    services: List[WanService] = []
    firewalls: List[WanService] = []
    refused: List[str] = []
    for dev in _devices(device):
        device_type = text_of(dev, "deviceType")
        service_list = child(dev, "serviceList")
        for service in list(service_list if service_list is not None else [])[:MAX_SERVICES]:
            if local(service.tag) != "service":
                continue
            service_type = text_of(service, "serviceType")
            if service_type not in CONNECTION_SERVICES and service_type != WANIPV6FC:
                continue
            raw = text_of(service, "controlURL", 2048)
            try:
                found = WanService(service_type, resolve_control_url(base, raw, location), device_type)
                (firewalls if service_type == WANIPV6FC else services).append(found)
            except HostileResponse as exc:
                refused.append(str(exc))
    if not services and refused:
        raise HostileResponse(refused[0])
    # The most capable service first: WANIPConnection:2, :1, then WANPPPConnection:1.
    services.sort(key=lambda s: CONNECTION_SERVICES.index(s.service_type))
    return Gateway(location=location, device_type=text_of(device, "deviceType"),
                   friendly_name=text_of(device, "friendlyName", 200), manufacturer=text_of(device, "manufacturer", 200),
                   model_name=text_of(device, "modelName", 200), udn=text_of(device, "UDN", 200),
                   services=tuple(services), server=server, ipv6_firewall=tuple(firewalls[:4]))


def _devices(device: Element) -> List[Element]:
    """The root device and every embedded device, breadth first, capped."""
    found: List[Element] = []
    queue = [device]
    while queue and len(found) < MAX_DEVICES:
        current = queue.pop(0)
        found.append(current)
        nested = child(current, "deviceList")
        if nested is not None:
            queue.extend(item for item in nested if local(item.tag) == "device")
    return found


def _base_url(url_base: str, location: str) -> str:
    """URLBase when it is a usable http(s) URL on the description's host, else the description URL."""
    if not url_base:
        return location
    try:
        check_url(url_base)
    except HostileResponse:
        return location
    return url_base if same_host(url_base, location) else location


def resolve_control_url(base: str, raw: str, location: str) -> str:
    if not raw:
        raise HostileResponse("a service in %s has an empty controlURL" % location)
    url = urljoin(base, raw)
    check_url(url)
    if not same_host(url, location):
        raise HostileResponse("refused control URL %s: it is not on the host of the description %s"
                              % (url[:200], location))
    return url


def same_host(url: str, other: str) -> bool:
    return _host(url) == _host(other)


def _host(url: str) -> Optional[Tuple[str]]:
    host = urlsplit(url).hostname
    return (host.lower(),) if host else None
