"""Where a webhook may be sent: its URL, and the addresses behind it.

A webhook URL is typed by an administrator, but the server then makes requests to it on its own, from
inside the network it runs in. So a URL naming an internal address (loopback, private, link-local and the
cloud metadata service at 169.254.169.254, carrier-grade NAT, multicast, IPv6 unique-local and link-local,
and IPv4 addresses written in IPv6 forms) is refused unless the server's ``--webhook-allow-internal``
networks include it. The check is made when the webhook is created and again at every delivery on every
address the host name resolves to; the delivery then connects to the checked address itself, so a DNS
answer that changes in between (rebinding) cannot take it elsewhere."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit

from exposure_guard_server.addresses import Network, parse_networks

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class BlockedTarget(Exception):
    """A webhook target that resolves to an internal address the settings do not allow."""


def _nets(*pairs: Tuple[str, str]) -> List[Tuple[Network, str]]:
    return [(ipaddress.ip_network(net), why) for net, why in pairs]


INTERNAL_V4 = _nets(
    ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local or cloud metadata"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"), ("192.0.2.0/24", "documentation"), ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"), ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
    ("168.63.129.16/32", "cloud metadata"),  # Azure's wire server, a public address inside every VM network
)
INTERNAL_V6 = _nets(
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("100::/64", "discard"), ("64:ff9b:1::/48", "local NAT64"),
    ("2001::/32", "Teredo"), ("2001:db8::/32", "documentation"), ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"), ("fec0::/10", "site-local"), ("ff00::/8", "multicast"),
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address an IPv6 address stands for: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d),
    NAT64 (64:ff9b::a.b.c.d) or 6to4 (2002:aabb:ccdd::)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def internal_reason(address: Address) -> Optional[str]:
    """Why ``address`` is internal (e.g. "loopback"), or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = internal_reason(inner)
            return None if reason is None else "%s, written as IPv6" % reason
        table = INTERNAL_V6
    else:
        table = INTERNAL_V4
    for network, why in table:
        if address in network:
            return why
    return None


def check_address(address: Address, allow: Sequence[Network]) -> None:
    """Raise BlockedTarget when ``address`` is internal and not in ``allow``."""
    reason = internal_reason(address)
    if reason is None:
        return
    candidates: List[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and embedded_ipv4(address) is not None:
        candidates.append(embedded_ipv4(address))  # type: ignore[arg-type]
    if any(a in network for a in candidates for network in allow if a.version == network.version):
        return
    raise BlockedTarget("%s is an internal address (%s); allow it with --webhook-allow-internal" % (address, reason))


@dataclass(frozen=True)
class Target:
    """A parsed webhook URL: what to connect to and what to send."""

    scheme: str
    host: str  # as in the URL (IDN encoded), no brackets
    port: int
    path: str  # with the query
    host_header: str
    userinfo: Optional[Tuple[str, str]]


def parse_target(url: str) -> Target:
    """``http(s)://host[:port]/path?query`` (ValueError with the reason otherwise)."""
    url = url.strip()
    if len(url) > 2000 or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in url):
        raise ValueError("webhook URL must be at most 2000 characters, ASCII without spaces or control characters "
                         "(percent-encode the rest)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("webhook URL must be an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("webhook URL has an invalid port") from None
    host = parts.hostname
    shown = "[%s]" % host if ":" in host else host
    if parts.port:
        shown += ":%d" % parts.port
    userinfo = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username is not None else None
    path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return Target(parts.scheme, host, port, path, shown, userinfo)


def resolve(target: Target, allow: Sequence[Network]) -> List[Address]:
    """Every address ``target``'s host stands for, each checked (BlockedTarget when any is internal and not
    allowed: a name that also points inward is not trusted); OSError when it does not resolve."""
    try:
        literal: Optional[Address] = ipaddress.ip_address(target.host.split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        addresses: List[Address] = [literal]
    else:
        infos = socket.getaddrinfo(target.host, target.port, 0, socket.SOCK_STREAM)  # looked up per call: tests patch it
        addresses = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise OSError("%s has no address" % target.host)
    for address in addresses:
        check_address(address, allow)
    return addresses


def check_url(url: str, allow: str) -> None:
    """At creation: a well-formed URL whose host is not internal (unless allowed). A name that does not
    resolve now is accepted: every delivery resolves and checks it again."""
    target = parse_target(url)
    networks = parse_networks(allow)
    try:
        resolve(target, networks)
    except OSError:
        pass
