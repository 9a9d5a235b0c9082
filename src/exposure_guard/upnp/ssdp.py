"""SSDP discovery of Internet Gateway Devices: M-SEARCH on every IPv4 interface with a LAN address.

Searches for InternetGatewayDevice:1 and :2 and, as fallback for routers that only answer those, the
WANIPConnection / WANPPPConnection service types. Bounded time (the search ends at ``timeout`` or
``quiet`` seconds after the last new answer, whichever is first), answers capped in size and number,
de-duplicated by LOCATION. Answers whose LOCATION is not on the host that sent them are dropped:
anything on the LAN can answer SSDP, and we will only fetch from the device that answered.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from exposure_guard.netif import interface_ipv4_addresses
from exposure_guard.upnp.models import SEARCH_TARGETS, SsdpAnswer

SSDP_GROUP = ("239.255.255.250", 1900)
MAX_DATAGRAM = 8192
MAX_ANSWERS = 64  # distinct locations kept
MX = 1  # devices answer within MX seconds


@dataclass
class Discovery:
    """What one search saw: the kept answers and why others were dropped."""

    answers: List[SsdpAnswer] = field(default_factory=list)
    interfaces: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    seconds: float = 0.0
    last_answer_at: float = 0.0

    def to_dict(self) -> Dict[str, object]:
        return {"interfaces": list(self.interfaces), "answers": [a.to_dict() for a in self.answers],
                "dropped": self.dropped[:10], "errors": self.errors[:10], "seconds": round(self.seconds, 3),
                "search_targets": list(SEARCH_TARGETS)}


def msearch(st: str, group: Tuple[str, int] = SSDP_GROUP, mx: int = MX) -> bytes:
    return ("M-SEARCH * HTTP/1.1\r\nHOST: %s:%d\r\nMAN: \"ssdp:discover\"\r\nMX: %d\r\nST: %s\r\n"
            "USER-AGENT: ExposureGuard/1.0 UPnP/1.1\r\n\r\n" % (group[0], group[1], mx, st)).encode("ascii")


def parse_answer(data: bytes) -> Optional[Dict[str, str]]:
    """Headers of an SSDP answer (``HTTP/1.1 200 OK``), or None for anything else (NOTIFY, garbage)."""
    if len(data) > MAX_DATAGRAM:
        return None
    text = data.decode("latin-1")
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    if not lines or not lines[0].upper().startswith("HTTP/1.") or " 200" not in lines[0]:
        return None
    headers: Dict[str, str] = {}
    for line in lines[1:64]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers.setdefault(name.strip().upper(), value.strip()[:1024])
    return headers


def lan_interfaces() -> List[str]:
    """This host's IPv4 interface addresses that can reach a LAN (not loopback, not link-local)."""
    out: List[str] = []
    for text in interface_ipv4_addresses():
        address = ipaddress.ip_address(text)
        if address.is_loopback or address.is_link_local or address.is_unspecified:
            continue
        if text not in out:
            out.append(text)
    return out


def discover(timeout: float = 2.0, interfaces: Optional[Sequence[str]] = None,
             group: Tuple[str, int] = SSDP_GROUP, targets: Sequence[str] = SEARCH_TARGETS,
             quiet: float = 0.4) -> Discovery:
    """Send M-SEARCH for ``targets`` from each interface address; collect answers until ``timeout``
    (total) or ``quiet`` seconds without a new location once at least one arrived.

    ``group`` and ``interfaces`` exist for tests (a unicast fake on 127.0.0.1)."""
    started = time.monotonic()
    result = Discovery()
    addresses = list(interfaces) if interfaces is not None else lan_interfaces()
    result.interfaces = addresses
    sockets: Dict[socket.socket, str] = {}
    try:
        for address in addresses:
            try:
                sock = _open(address, group)
            except OSError as exc:
                result.errors.append("cannot search from %s: %s" % (address, exc.strerror or exc))
                continue
            sockets[sock] = address
        for repeat in range(2):  # UDP may be lost: the whole search is sent twice
            for sock in sockets:
                for st in targets:
                    try:
                        sock.sendto(msearch(st, group), group)
                    except OSError as exc:
                        if repeat == 0:
                            result.errors.append("cannot send from %s: %s" % (sockets[sock], exc.strerror or exc))
            if repeat == 0:
                _collect(sockets, result, started + min(0.1, timeout), quiet=None)
        deadline = started + timeout
        _collect(sockets, result, deadline, quiet)
    finally:
        for sock in sockets:
            sock.close()
    result.seconds = time.monotonic() - started
    return result


def _open(address: str, group: Tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setblocking(False)
        if ipaddress.ip_address(group[0]).is_multicast:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sock.bind((address, 0))
    except OSError:
        sock.close()
        raise
    return sock


def _collect(sockets: Dict[socket.socket, str], result: Discovery, deadline: float,
             quiet: Optional[float]) -> None:
    seen = {a.location for a in result.answers}
    while sockets:
        now = time.monotonic()
        end = deadline
        if quiet is not None and result.answers:
            end = min(end, result.last_answer_at + quiet)
        if now >= end:
            return
        readable, _, _ = select.select(list(sockets), [], [], end - now)
        for sock in readable:
            try:
                data, peer = sock.recvfrom(MAX_DATAGRAM + 1)
            except OSError:
                continue
            answer = _accept(data, peer[0], sockets[sock], result)
            if answer is None or answer.location in seen:
                continue
            if len(result.answers) >= MAX_ANSWERS:
                result.dropped.append("more than %d devices answered; ignored the rest" % MAX_ANSWERS)
                return
            seen.add(answer.location)
            result.answers.append(answer)
            result.last_answer_at = time.monotonic()


def _accept(data: bytes, sender: str, interface: str, result: Discovery) -> Optional[SsdpAnswer]:
    headers = parse_answer(data)
    if headers is None:
        return None
    location = headers.get("LOCATION", "")
    if not all(char.isprintable() and not char.isspace() for char in location):
        # Raw bytes from anyone on the LAN: an ESC here would travel into the plan, the journal and the terminal.
        result.dropped.append("%s answered with a LOCATION holding control characters or spaces (%r); not followed"
                              % (sender, location[:120]))
        return None
    try:
        parts = urlsplit(location)
        host = parts.hostname or ""
    except ValueError:
        host, parts = "", None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        result.dropped.append("%s answered with an unusable LOCATION %r" % (sender, location[:120]))
        return None
    if host != sender:
        result.dropped.append("%s answered with LOCATION on another host (%s); not followed" % (sender, host[:80]))
        return None
    return SsdpAnswer(location=location, st=headers.get("ST", "")[:200], usn=headers.get("USN", "")[:300],
                      server=headers.get("SERVER", "")[:200], sender=sender, interface=interface)
