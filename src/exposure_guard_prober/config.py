"""Prober settings: one frozen value built by the CLI (or a test) and read everywhere else."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Where routers commonly serve their IGD description (port, path). miniupnpd picks a port at start
# unless configured (5000 is common); the SSDP answer's LOCATION, when it points at the caller, is tried first.
DEFAULT_IGD_PROBES: Tuple[Tuple[int, str], ...] = (
    (5000, "/rootDesc.xml"),
    (49000, "/igddesc.xml"),
    (52869, "/picsdesc.xml"),
    (49152, "/gatedesc.xml"),
    (1780, "/InternetGatewayDevice.xml"),
    (2869, "/upnphost/udhisapi.dll?content=uuid:00000000-0000-0000-0000-000000000000"),
)


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return ("[%s]:%d" % (self.host, self.port)) if ":" in self.host else ("%s:%d" % (self.host, self.port))


@dataclass(frozen=True)
class ProberConfig:
    listen: Tuple[Listen, ...] = (Listen("127.0.0.1", 8443),)
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tokens: Tuple[str, ...] = ()
    lab_allow: Tuple[IPNetwork, ...] = ()  # non-empty = lab mode: these networks may be probed
    trusted_proxies: Tuple[IPNetwork, ...] = ()
    metrics_allow: Tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    # limits
    max_ports: int = 16
    rate_per_minute: float = 6.0  # probe requests per source (IPv4 address / IPv6 /64)
    burst: int = 4
    per_client_inflight: int = 2
    max_concurrent: int = 32  # probe jobs at once, all sources
    queue_wait: float = 2.0  # how long a request may wait for a free slot before 503
    max_connections: int = 512  # inbound connections at once, counted from accept (before any TLS handshake)
    max_connections_per_source: int = 8  # the same, per IPv4 address / IPv6 /64 (trusted proxies exempt)
    max_outbound: int = 512  # outbound probe sockets at once
    # timeouts (seconds)
    connect_timeout: float = 3.0
    tls_timeout: float = 3.0
    io_timeout: float = 3.0
    deadline: float = 10.0  # whole probe job
    head_timeout: float = 5.0  # from accept to the end of the request head (TLS handshake included)
    request_timeout: float = 10.0  # from accept to the end of the body
    # reads
    read_cap: int = 64 * 1024
    body_cap: int = 4096
    header_cap: int = 8192
    # WAN-side UPnP test
    upnp: bool = True
    ssdp_port: int = 1900
    ssdp_timeout: float = 1.5
    igd_probes: Tuple[Tuple[int, str], ...] = DEFAULT_IGD_PROBES
    # logging
    log_connects: bool = False

    @property
    def lab_mode(self) -> bool:
        return bool(self.lab_allow)


def parse_listen(text: str) -> Listen:
    """``HOST:PORT`` or ``[IPv6]:PORT``."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("expected [IPv6]:PORT, got %r" % text)
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError("expected HOST:PORT or [IPv6]:PORT, got %r" % text)
    try:
        number = int(port)
    except ValueError:
        raise ValueError("port must be a number in %r" % text) from None
    if not 0 <= number < 65536:
        raise ValueError("port out of range in %r" % text)
    return Listen(host or "0.0.0.0", number)


def parse_networks(values: List[str]) -> Tuple[IPNetwork, ...]:
    """Repeatable, comma-separated CIDRs (a bare address = a single host)."""
    out: List[IPNetwork] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part:
                out.append(ipaddress.ip_network(part, strict=False))
    return tuple(out)
