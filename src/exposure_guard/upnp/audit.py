"""Find the LAN's gateways and read their mapping tables (no NAS context here; see checks/router.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from exposure_guard.hostilehttp import DEFAULT_DEADLINE
from exposure_guard.upnp import soap
from exposure_guard.upnp.description import fetch_gateway
from exposure_guard.upnp.errors import HostileResponse, UpnpError
from exposure_guard.upnp.models import Gateway, PortMapping, ServiceAudit, WanService
from exposure_guard.upnp.ssdp import SSDP_GROUP, Discovery, discover

MAX_GATEWAYS = 8  # descriptions fetched per search
AUDIT_BUDGET = 120.0  # seconds for reading every table: a hostile device cannot hold the agent longer


@dataclass
class RouterAudit:
    """The whole picture: how gateways were looked for, what was found, what every table holds."""

    source: str  # "ssdp" | "igd_url"
    discovery: Optional[Discovery] = None
    gateways: List[Gateway] = field(default_factory=list)
    services: List[ServiceAudit] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)  # answers we could not use, with the reason
    seconds: float = 0.0
    ipv6_firewall: List[Dict[str, Any]] = field(default_factory=list)  # GetFirewallStatus per IPv6 FC service

    @property
    def igd_found(self) -> bool:
        return bool(self.gateways)

    @property
    def readable(self) -> List[ServiceAudit]:
        return [s for s in self.services if not s.error]

    @property
    def external_ip(self) -> Optional[str]:
        return next((s.external_ip for s in self.services if s.external_ip), None)

    def mappings(self) -> List[Tuple[ServiceAudit, PortMapping]]:
        return [(s, m) for s in self.readable for m in s.mappings]


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def deadline(self, per_call: float) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise HostileResponse("reading the router's tables took longer than %.0f s in total; stopped" % self.seconds)
        return min(per_call, left)


class BudgetedClient(soap.SoapClient):
    """A SoapClient whose calls also share one total time budget."""

    def __init__(self, service: WanService, budget: _Budget, deadline: float = DEFAULT_DEADLINE) -> None:
        super().__init__(service, deadline)
        self.budget = budget
        self.per_call = deadline

    def call(self, action: str, **args: object) -> Dict[str, str]:
        self.deadline = self.budget.deadline(self.per_call)
        try:
            return super().call(action, **args)
        except HostileResponse:
            self.budget.deadline(self.per_call)  # says "took longer than N s in total" when that is the cause
            raise


def find_gateways(igd_url: str = "", timeout: float = 2.0, interfaces: Optional[Sequence[str]] = None,
                  group: Tuple[str, int] = SSDP_GROUP, deadline: float = DEFAULT_DEADLINE) -> RouterAudit:
    """The configured IGD (``igd_url``; errors raise) or every IGD that answers SSDP."""
    started = time.monotonic()
    if igd_url:
        audit = RouterAudit(source="igd_url")
        gateway = fetch_gateway(igd_url, deadline=deadline)
        if not gateway.services:
            raise UpnpError("%s describes no WANIPConnection or WANPPPConnection service (device type %s)"
                            % (igd_url, gateway.device_type or "?"))
        audit.gateways.append(gateway)
    else:
        found = discover(timeout, interfaces=interfaces, group=group)
        audit = RouterAudit(source="ssdp", discovery=found)
        seen_udn = set()
        for answer in found.answers[:MAX_GATEWAYS]:
            try:
                gateway = fetch_gateway(answer.location, deadline=deadline, server=answer.server)
            except UpnpError as exc:
                audit.problems.append("%s (answered SSDP as %s): %s" % (answer.location, answer.st, exc))
                continue
            if not gateway.services:
                continue  # a media server or printer answering ssdp:all-like searches: not a gateway
            if gateway.udn and gateway.udn in seen_udn:
                continue
            seen_udn.add(gateway.udn)
            audit.gateways.append(gateway)
    audit.seconds = time.monotonic() - started
    return audit


def read_tables(audit: RouterAudit, deadline: float = DEFAULT_DEADLINE, budget: float = AUDIT_BUDGET,
                cap: int = soap.MAX_MAPPINGS) -> RouterAudit:
    """Fill ``audit.services``: external address and every mapping of each connection service."""
    started = time.monotonic()
    shared = _Budget(budget)
    for gateway in audit.gateways:
        for service in gateway.services:
            item = ServiceAudit(gateway, service)
            t0 = time.monotonic()
            client = BudgetedClient(service, shared, deadline)
            try:
                try:
                    item.external_ip = soap.external_ip(client) or None
                except UpnpError as exc:
                    item.warnings.append("GetExternalIPAddress: %s" % exc)
                item.mappings, item.method, item.truncated = soap.list_mappings(client, cap)
                if item.truncated:
                    item.warnings.append("the table holds more than %d mappings; only the first %d were read"
                                         % (cap, cap))
            except UpnpError as exc:
                item.error = str(exc)
            finally:
                client.close()
            item.seconds = time.monotonic() - t0
            audit.services.append(item)
        for firewall in gateway.ipv6_firewall:
            audit.ipv6_firewall.append(_firewall_status(gateway, firewall, shared, deadline))
    audit.seconds += time.monotonic() - started
    return audit


def _firewall_status(gateway: Gateway, service: WanService, shared: _Budget, deadline: float) -> Dict[str, Any]:
    """Whether the router's IPv6 firewall is on and lets LAN hosts open pinholes by UPnP."""
    out: Dict[str, Any] = {"location": gateway.location, "control_url": service.control_url,
                           "firewall_enabled": None, "inbound_pinhole_allowed": None}
    client = BudgetedClient(service, shared, deadline)
    try:
        out["firewall_enabled"], out["inbound_pinhole_allowed"] = soap.firewall_status(client)
    except UpnpError as exc:
        out["error"] = str(exc)
    finally:
        client.close()
    return out
