"""IP address settings shared by the transport limits and the webhook targets: lists of networks."""

from __future__ import annotations

import ipaddress
from typing import List, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parse_networks(text: str) -> List[Network]:
    """Comma separated addresses or networks ("10.0.0.0/8, ::1"); "*" is every address. ValueError names
    an entry that is neither."""
    networks: List[Network] = []
    for item in (part.strip() for part in text.split(",")):
        if item == "*":
            networks += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
        elif item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError("%r is not an IP address or network" % item) from None
    return networks
