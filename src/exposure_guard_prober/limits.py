"""Inbound connection limits: connections are counted from accept to close, in total and per source,
before any TLS handshake; and the descriptor limit is raised at start and kept above everything the
prober may hold open at once, so a flood is refused cleanly instead of failing with EMFILE."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

from exposure_guard_prober.config import IPNetwork, ProberConfig
from exposure_guard_prober.policy import in_networks, parse_address, rate_key

# Descriptors that are not connections: stdio, the log file, listening sockets, the event loop's own,
# and one accepted socket on its way to being refused.
FD_RESERVE = 64


def raise_fd_limit(wanted: int) -> Optional[Tuple[int, int, int]]:
    """Raise the soft RLIMIT_NOFILE toward ``wanted`` (never past the hard limit, never lower it):
    (soft before, soft now, hard), or None where there is no such limit."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
        except (ValueError, OSError):
            pass
    return before, soft, hard


def fit_to_fd_limit(config: ProberConfig, soft_limit: int) -> ProberConfig:
    """``config`` with max_connections + max_outbound lowered (in proportion) to fit below the limit."""
    available = soft_limit - FD_RESERVE
    wanted = config.max_connections + config.max_outbound
    if wanted <= available:
        return config
    if available < 2:
        raise ValueError("the descriptor limit (%d) leaves no room for connections; raise `ulimit -n`"
                         % soft_limit)
    inbound = max(1, available * config.max_connections // wanted)
    return dataclasses.replace(config, max_connections=inbound, max_outbound=max(1, available - inbound))


class ConnectionGate:
    """Open inbound connections, in total and per source (an IPv4 address or an IPv6 /64). Trusted
    proxies carry many clients and have no per-source cap (the proxy limits its own clients)."""

    def __init__(self, total_cap: int, per_source_cap: int, exempt: Sequence[IPNetwork] = ()) -> None:
        self.total_cap, self.per_source_cap, self.exempt = total_cap, per_source_cap, tuple(exempt)
        self.total = 0
        self.by_source: Dict[str, int] = {}

    def admit(self, peer: str) -> Tuple[Optional[str], str]:
        """(why the connection is refused or None, its source key); an admitted connection is counted
        until ``release(key)``."""
        try:
            address = parse_address(peer)
            key = "" if in_networks(address, self.exempt) else rate_key(address)
        except ValueError:
            key = peer
        if self.total >= self.total_cap:
            return "total", key
        if key and self.by_source.get(key, 0) >= self.per_source_cap:
            return "per_source", key
        self.total += 1
        if key:
            self.by_source[key] = self.by_source.get(key, 0) + 1
        return None, key

    def release(self, key: str) -> None:
        self.total -= 1
        if key:
            self.by_source[key] -= 1
            if not self.by_source[key]:
                del self.by_source[key]
