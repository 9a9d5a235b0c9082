"""Typed protocol records: what SSDP, the device description and the mapping table say."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

# Connection services that hold port mappings, most capable first.
WANIP2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
WANIP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"
WANPPP1 = "urn:schemas-upnp-org:service:WANPPPConnection:1"
CONNECTION_SERVICES: Tuple[str, ...] = (WANIP2, WANIP1, WANPPP1)
# IGD:2's IPv6 firewall control: LAN hosts open inbound IPv6 pinholes with it. It has no action that lists
# pinholes (only add, update, delete, and packet counts of a pinhole whose UniqueID one already knows).
WANIPV6FC = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"

IGD1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
IGD2 = "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
# What discovery searches for: both IGD versions, then the connection services (some routers only
# answer those).
SEARCH_TARGETS: Tuple[str, ...] = (IGD1, IGD2, WANIP1, WANIP2, WANPPP1)


@dataclass(frozen=True)
class SsdpAnswer:
    """One device's answer to an M-SEARCH."""

    location: str
    st: str
    usn: str
    server: str
    sender: str  # IP address the datagram came from
    interface: str  # our address it arrived on

    def to_dict(self) -> Dict[str, str]:
        return {"location": self.location, "st": self.st, "usn": self.usn, "server": self.server,
                "sender": self.sender, "interface": self.interface}


@dataclass(frozen=True)
class WanService:
    """A WANIPConnection / WANPPPConnection service of a gateway, with its resolved control URL."""

    service_type: str
    control_url: str
    device_type: str = ""

    @property
    def version(self) -> int:
        try:
            return int(self.service_type.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            return 1

    @property
    def short_name(self) -> str:
        parts = self.service_type.split(":")
        return ":".join(parts[-2:]) if len(parts) >= 2 else self.service_type


@dataclass(frozen=True)
class Gateway:
    """An Internet Gateway Device as described by its root description."""

    location: str
    device_type: str
    friendly_name: str
    manufacturer: str
    model_name: str
    udn: str
    services: Tuple[WanService, ...]
    server: str = ""  # SSDP SERVER header, when found by discovery
    ipv6_firewall: Tuple[WanService, ...] = ()  # WANIPv6FirewallControl services

    def to_dict(self) -> Dict[str, Any]:
        return {"location": self.location, "device_type": self.device_type, "friendly_name": self.friendly_name,
                "manufacturer": self.manufacturer, "model_name": self.model_name, "udn": self.udn,
                "server": self.server,
                "services": [{"type": s.service_type, "control_url": s.control_url}
                             for s in self.services + self.ipv6_firewall]}


@dataclass(frozen=True)
class PortMapping:
    """One entry of the router's port mapping table (the GetGenericPortMappingEntry fields)."""

    remote_host: str
    external_port: int
    protocol: str  # TCP | UDP
    internal_port: int
    internal_client: str
    enabled: bool
    description: str
    lease_duration: int  # seconds left; 0 = permanent

    @property
    def key(self) -> Tuple[str, int, str]:
        """What identifies a mapping on the router (DeletePortMapping's arguments)."""
        return (self.remote_host, self.external_port, self.protocol)

    def arrow(self) -> str:
        """``TCP 8080 → 10.77.0.10:8080``"""
        source = "%s %d" % (self.protocol, self.external_port)
        if self.remote_host:
            source += " (from %s only)" % self.remote_host
        return "%s → %s:%d" % (source, self.internal_client, self.internal_port)

    def labelled(self) -> str:
        """``TCP 8080 → 10.77.0.10:8080 'description'``"""
        return self.arrow() + (" %r" % self.description if self.description else "")

    def to_dict(self) -> Dict[str, Any]:
        return {"external_port": self.external_port, "protocol": self.protocol,
                "internal_client": self.internal_client, "internal_port": self.internal_port,
                "remote_host": self.remote_host, "enabled": self.enabled, "description": self.description,
                "lease_seconds": self.lease_duration}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> PortMapping:
        return cls(str(data.get("remote_host") or ""), int(data["external_port"]), str(data["protocol"]).upper(),
                   int(data["internal_port"]), str(data["internal_client"]), bool(data.get("enabled", True)),
                   str(data.get("description") or ""), int(data.get("lease_seconds") or 0))


@dataclass
class ServiceAudit:
    """What one connection service of one gateway holds, and what could not be read."""

    gateway: Gateway
    service: WanService
    external_ip: Optional[str] = None
    mappings: List[PortMapping] = field(default_factory=list)
    method: str = ""  # GetListOfPortMappings | GetGenericPortMappingEntry
    truncated: bool = False
    error: str = ""  # the listing failed: why
    warnings: List[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"location": self.gateway.location, "device_type": self.gateway.device_type,
                               "friendly_name": self.gateway.friendly_name, "server": self.gateway.server,
                               "service": self.service.service_type, "control_url": self.service.control_url,
                               "external_ip": self.external_ip, "mapping_count": len(self.mappings),
                               "listed_with": self.method}
        if self.truncated:
            out["truncated"] = True
        if self.error:
            out["error"] = self.error
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out
