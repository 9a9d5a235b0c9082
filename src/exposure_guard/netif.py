"""This host's network interfaces, read without sending a packet. Neither NAS- nor protocol-specific:
the NAS identity and SSDP discovery both use it."""

from __future__ import annotations

import socket
from typing import List


def interface_ipv4_addresses() -> List[str]:
    """IPv4 addresses of this host's interfaces via SIOCGIFADDR, without sending any packet."""
    import fcntl
    import struct

    out: List[str] = []
    try:
        names = [name for _index, name in socket.if_nameindex()]
    except OSError:
        return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            try:
                packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
            out.append(socket.inet_ntoa(packed[20:24]))
    return out
