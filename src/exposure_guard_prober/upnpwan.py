"""WAN-side UPnP test (the UPnProxy condition): does the caller's public address answer SSDP on UDP 1900,
or serve an IGD description / control URL? A router must only speak UPnP on its LAN side."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from exposure_guard.contracts.fingerprint import clean_text, header_fields, host_header
from exposure_guard_prober.config import ProberConfig
from exposure_guard_prober.connector import ConnectFiltered, Connector, ConnectRefused, close_writer, read_capped

SEARCH_TARGET = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
_TAG = "<{0}>([^<]{{0,400}})</{0}>"


def msearch(address: str, port: int) -> bytes:
    # Unicast M-SEARCH: sent to the caller only, never to a multicast group.
    return ("M-SEARCH * HTTP/1.1\r\nHOST: %s\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: %s\r\n\r\n"
            % (host_header(address, port), SEARCH_TARGET)).encode("ascii")


def parse_ssdp(datagram: bytes) -> Optional[Dict[str, str]]:
    lines = datagram.split(b"\r\n")
    if not re.match(rb"^HTTP/1\.\d\s+200", lines[0] if lines else b""):
        return None
    return header_fields(lines[1:40], ("location", "server", "st", "usn"), 300)


def _same_host(url: str, address: str) -> Optional[Tuple[int, str]]:
    """(port, path) of ``url`` when it points at ``address`` itself; None otherwise (never followed)."""
    try:
        parts = urlsplit(url)
        host = ipaddress.ip_address((parts.hostname or "").split("%")[0])
        port = parts.port or 80
    except ValueError:
        return None
    if parts.scheme != "http" or str(host) != address:
        return None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return port, path[:300]


def parse_description(body: str) -> Dict[str, Any]:
    def tag(name: str, text: str) -> str:
        match = re.search(_TAG.format(name), text, re.IGNORECASE)
        return clean_text(match.group(1)) if match else ""

    controls = []
    # Linear split, not a lazy regex: a hostile description of 64 KiB of unclosed tags must stay cheap.
    for chunk in body.split("<service>")[1:]:
        service = chunk.split("</service>", 1)[0]
        kind = tag("serviceType", service)
        if "WANIPConnection" in kind or "WANPPPConnection" in kind:
            controls.append({"service": kind, "control_url": tag("controlURL", service)})
    return {"device_type": tag("deviceType", body), "friendly_name": tag("friendlyName", body),
            "model": tag("modelName", body), "wan_connection_services": controls[:4]}


async def _exchange(connector: Connector, address: str, port: int, payload: bytes, cap: int,
                    config: ProberConfig) -> Optional[bytes]:
    """One plain-HTTP request/response with the caller, capped and under the I/O timeout."""
    loop = asyncio.get_running_loop()
    writer = None
    try:
        async with connector.tcp(address, port, config.connect_timeout) as sock:
            try:
                reader, writer = await asyncio.open_connection(sock=sock)
                writer.write(payload)
                await asyncio.wait_for(writer.drain(), config.io_timeout)
                deadline = loop.time() + config.io_timeout
                data = b""
                while len(data) < cap:  # descriptions have no <title>: read to the end, the cap or the deadline
                    chunk = await read_capped(reader, cap - len(data), deadline)
                    if not chunk:
                        break
                    data += chunk
                return data
            finally:
                await close_writer(writer)
    except (ConnectRefused, ConnectFiltered, OSError, asyncio.TimeoutError, ConnectionError):
        return None


async def _http_get(connector: Connector, address: str, port: int, path: str,
                    config: ProberConfig) -> Optional[Tuple[int, bytes]]:
    request = ("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: exposure-guard-prober\r\nConnection: close\r\n\r\n"
               % (path, host_header(address, port))).encode("ascii", "replace")
    data = await _exchange(connector, address, port, request, config.read_cap, config)
    match = re.match(rb"^HTTP/\d\.\d\s+(\d{3})", data or b"")
    if not match or data is None:
        return None
    return int(match.group(1)), data.partition(b"\r\n\r\n")[2]


async def _soap_external_ip(connector: Connector, address: str, port: int, path: str, service: str,
                            config: ProberConfig) -> Optional[str]:
    """Read-only GetExternalIPAddress on the control URL: does the WAN side accept UPnP control calls?"""
    body = ('<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            '<u:GetExternalIPAddress xmlns:u="%s"/></s:Body></s:Envelope>' % service).encode("ascii", "replace")
    head = ("POST %s HTTP/1.0\r\nHost: %s\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n"
            "SOAPAction: \"%s#GetExternalIPAddress\"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (path, host_header(address, port), service, len(body)))
    data = await _exchange(connector, address, port, head.encode("ascii", "replace") + body, 16384, config)
    if not data or not re.match(rb"^HTTP/\d\.\d\s+200", data):
        return None
    match = re.search(rb"<NewExternalIPAddress>([^<]{0,64})</NewExternalIPAddress>", data)
    return clean_text(match.group(1), 64) if match else ""


async def wan_upnp_test(connector: Connector, address: str, config: ProberConfig, result: Dict[str, Any]) -> None:
    ssdp: Dict[str, Any] = {"answered": False, "port": config.ssdp_port}
    result["ssdp"] = ssdp
    try:
        answers = await connector.udp_exchange(address, config.ssdp_port, msearch(address, config.ssdp_port),
                                               config.ssdp_timeout)
    except ConnectRefused:
        answers = []
        ssdp["error"] = "port unreachable"
    except OSError as exc:
        answers = []
        ssdp["error"] = clean_text(str(exc))
    for datagram in answers:
        headers = parse_ssdp(datagram)
        if headers is not None:
            ssdp.update(answered=True, **headers)
            break
    candidates: List[Tuple[int, str]] = []
    if ssdp.get("location"):
        target = _same_host(ssdp["location"], address)
        if target:
            candidates.append(target)
        else:
            ssdp["location_not_followed"] = "LOCATION does not point at the caller's address"
    candidates += [probe for probe in config.igd_probes if probe not in candidates]
    fetched = await asyncio.gather(*(_http_get(connector, address, port, path, config) for port, path in candidates))
    igd: Dict[str, Any] = {"found": False, "tried": ["%d%s" % (p, path[:40]) for p, path in candidates]}
    for (port, path), answer in zip(candidates, fetched):
        if answer is None or answer[0] != 200:
            continue
        text = answer[1].decode("utf-8", "replace")
        if "InternetGatewayDevice" not in text and "WANIPConnection" not in text:
            continue
        igd.update(found=True, port=port, path=path, **parse_description(text))
        for service in igd["wan_connection_services"]:
            control = service["control_url"]
            target = (port, control) if control.startswith("/") else _same_host(control, address)
            if target is None:
                continue
            external = await _soap_external_ip(connector, address, target[0], target[1], service["service"], config)
            if external is not None:
                igd["control_reachable"] = True
                igd["external_ip"] = external
                break
        break
    result["igd"] = igd
    result["exposed"] = bool(ssdp["answered"] or igd["found"])
