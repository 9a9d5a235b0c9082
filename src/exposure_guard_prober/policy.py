"""Who may be probed, and who the caller is: the TCP peer, or an X-Forwarded-For from a trusted proxy."""

from __future__ import annotations

import ipaddress
import time
from typing import Dict, Optional, Sequence, Tuple, Union

from exposure_guard_prober.config import IPNetwork

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class PolicyError(Exception):
    """The request is refused; ``code`` is the API error code, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def parse_address(text: str) -> IPAddress:
    """An address as seen on a socket or in a header; IPv4-mapped IPv6 becomes IPv4; zone ids are dropped."""
    address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def refusal(address: IPAddress, lab_allow: Sequence[IPNetwork]) -> Optional[str]:
    """Why ``address`` must not be probed, or None. Lab networks are allowed explicitly; everything else
    must be globally routable unicast (no loopback, private, link-local, multicast, reserved, shared
    CGNAT, documentation or benchmark ranges)."""
    if in_networks(address, lab_allow):
        return None
    for attribute, reason in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(address, attribute):
            return reason
    if not address.is_global:
        return "not globally routable"
    return None


def client_address(peer: str, forwarded_for: Optional[str],
                   trusted: Sequence[IPNetwork]) -> Tuple[IPAddress, bool, bool]:
    """(address to probe, via a trusted proxy, an X-Forwarded-For was ignored).

    X-Forwarded-For is believed only when the TCP peer is a trusted proxy; then the right-most entry that
    is not itself a trusted proxy is the client (entries further left are whatever the client claimed)."""
    peer_address = parse_address(peer)
    if forwarded_for is None:
        return peer_address, False, False
    if not in_networks(peer_address, trusted):
        return peer_address, False, True
    entries = [item.strip() for item in forwarded_for.split(",") if item.strip()]
    if not entries or len(entries) > 32:
        raise PolicyError("bad_forwarded_for", "X-Forwarded-For from the trusted proxy is empty or too long")
    parsed = []
    for item in entries:
        try:
            parsed.append(parse_address(item))
        except ValueError:
            raise PolicyError("bad_forwarded_for", "X-Forwarded-For holds something that is not an address") from None
    for address in reversed(parsed):
        if not in_networks(address, trusted):
            return address, True, False
    return parsed[0], True, False


def rate_key(address: IPAddress) -> str:
    """One bucket per IPv4 address and per IPv6 /64 (one site usually holds a whole /64)."""
    if address.version == 6:
        return str(ipaddress.ip_network("%s/64" % address, strict=False))
    return str(address)


class RateLimiter:
    """Token bucket per source: ``burst`` requests at once, refilled at ``per_minute``."""

    def __init__(self, per_minute: float, burst: int, clock=time.monotonic, max_keys: int = 100000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: Dict[str, Tuple[float, float]] = {}

    def allow(self, key: str) -> Tuple[bool, float]:
        """(allowed, seconds until the next token when refused)."""
        now = self.clock()
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._prune(now)
            return True, 0.0
        self._buckets[key] = (tokens, now)
        wait = (1.0 - tokens) / self.rate if self.rate > 0 else 3600.0
        return False, wait

    def _prune(self, now: float) -> None:
        if len(self._buckets) <= self.max_keys:
            return
        # Forget sources whose bucket has refilled: they are indistinguishable from new ones.
        full_after = self.burst / self.rate if self.rate > 0 else float("inf")
        for key in [k for k, (_t, stamp) in self._buckets.items() if now - stamp >= full_after]:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            self._buckets.pop(next(iter(self._buckets)))
