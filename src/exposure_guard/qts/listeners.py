"""What is really listening: TCP sockets in LISTEN state from ``/proc/net/tcp`` and ``tcp6``."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from exposure_guard.contracts import Value
from exposure_guard.qts.root import QtsRoot

_LISTEN = "0A"


class Listener(Value):
    __slots__ = ("address", "port", "family")

    def __init__(self, address: str, port: int, family: str) -> None:
        self.address = address
        self.port = port
        self.family = family  # "tcp" or "tcp6"

    @property
    def is_loopback_only(self) -> bool:
        return self.address in ("127.0.0.1", "::1") or self.address.startswith("127.")


def _hex_to_ipv4(raw: str) -> str:
    value = int(raw, 16)
    # /proc prints the address as a little-endian 32-bit word.
    return ".".join(str((value >> shift) & 0xFF) for shift in (0, 8, 16, 24))


def _hex_to_ipv6(raw: str) -> str:
    import ipaddress

    words = [raw[i : i + 8] for i in range(0, 32, 8)]
    data = b"".join(bytes.fromhex(w)[::-1] for w in words)
    return str(ipaddress.IPv6Address(data))


_HEX_ADDRESS = {"tcp": re.compile(r"[0-9A-Fa-f]{8}"), "tcp6": re.compile(r"[0-9A-Fa-f]{32}")}
_HEX_PORT = re.compile(r"[0-9A-Fa-f]{1,4}")


def parse_proc_net_tcp(text: str, family: str) -> List[Listener]:
    """The listening sockets in a /proc/net/tcp(6) text. Under ``--root`` the file is anyone's copy: a field
    that is not the kernel's exact shape (8 or 32 hex digits, a 16-bit hex port) skips its line."""
    out: List[Listener] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4 or parts[3].upper() != _LISTEN:
            continue
        local = parts[1]
        if ":" not in local:
            continue
        addr_hex, port_hex = local.rsplit(":", 1)
        if not (_HEX_ADDRESS[family].fullmatch(addr_hex) and _HEX_PORT.fullmatch(port_hex)):
            continue
        try:
            port = int(port_hex, 16)
            address = _hex_to_ipv4(addr_hex) if family == "tcp" else _hex_to_ipv6(addr_hex)
        except ValueError:
            continue
        out.append(Listener(address, port, family))
    return out


class ListenerTable:
    """All listening TCP sockets; ``available`` is False when /proc could not be read."""

    def __init__(self, listeners: List[Listener], available: bool, source: str) -> None:
        self.listeners = listeners
        self.available = available
        self.source = source

    @classmethod
    def read(cls, root: QtsRoot) -> ListenerTable:
        listeners: List[Listener] = []
        available = False
        for family in ("tcp", "tcp6"):
            try:
                text = root.path("proc/net/" + family).read_text("ascii", "replace")
            except OSError:
                continue
            available = True
            listeners.extend(parse_proc_net_tcp(text, family))
        return cls(listeners, available, "/proc/net/tcp, /proc/net/tcp6")

    def listening(self, port: int) -> Optional[bool]:
        """True/False, or None when nothing could be read."""
        if not self.available:
            return None
        return any(item.port == port and not item.is_loopback_only for item in self.listeners)

    def describe(self, port: int) -> str:
        hits = sorted({"%s:%d" % (i.address if ":" not in i.address else "[%s]" % i.address, i.port)
                       for i in self.listeners if i.port == port})
        if not self.available:
            return "not known (/proc/net/tcp unreadable)"
        return ", ".join(hits) if hits else "nothing listening"

    def evidence(self, port: int) -> Dict[str, Any]:
        """What a finding shows about one port: whether it listens beyond loopback, and on what."""
        return {"port": port, "listening": self.listening(port), "sockets": self.describe(port)}
