"""The LAN router as this NAS sees it: its UPnP IGD(s) and their port mapping tables, read once per run
(``CheckContext.router``) and shared by the router checks, the ARC fix and the callback's port list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from exposure_guard.qts.root import QtsRoot
from exposure_guard.settings import Settings
from exposure_guard.upnp.errors import UpnpError
from exposure_guard.upnp.models import PortMapping, ServiceAudit

if TYPE_CHECKING:
    from exposure_guard.upnp.audit import RouterAudit

Mapping = Tuple[ServiceAudit, PortMapping]


@dataclass(frozen=True)
class RouterFacts:
    """One run's router audit, with the NAS's own addresses to tell its mappings from other hosts'."""

    audit: RouterAudit
    nas_addresses: Tuple[str, ...]

    @property
    def external_ip(self) -> Optional[str]:
        return self.audit.external_ip

    def mappings(self) -> List[Mapping]:
        """Every readable mapping, any internal client."""
        return self.audit.mappings()

    def to_nas(self) -> List[Mapping]:
        return [(s, m) for s, m in self.audit.mappings() if m.internal_client in self.nas_addresses]

    def to_others(self) -> List[Mapping]:
        return [(s, m) for s, m in self.audit.mappings() if m.internal_client not in self.nas_addresses]

    @property
    def discovery_failed(self) -> bool:
        """True when not finding an IGD says nothing: no interface to search on, or every answer unusable."""
        audit = self.audit
        if audit.igd_found:
            return False
        if audit.source == "igd_url":
            return True
        d = audit.discovery
        return d is None or not d.interfaces or (bool(d.errors) and len(d.errors) >= len(d.interfaces)) or \
            bool(audit.problems)

    @property
    def upnp_offered(self) -> Optional[bool]:
        """True / False, or None when discovery could not tell."""
        return None if self.discovery_failed else self.audit.igd_found


def discovery_allowed(root: QtsRoot, settings: Settings) -> Tuple[bool, str]:
    """SSDP goes out only from the live system, unless the settings say otherwise ([router] discover)."""
    mode = settings.get("router", "discover")
    if mode == "yes":
        return True, ""
    if mode == "no":
        return False, "router discovery is off ([router] discover = no) and no [router] igd_url is set"
    if root.is_live:
        return True, ""
    return False, ("not searching the LAN for a router while checking a --root tree (%s); set [router] igd_url, "
                   "or [router] discover = yes" % root.root)


def audit_router(root: QtsRoot, settings: Settings, nas_addresses: Sequence[str]) -> Optional[RouterFacts]:
    """Find the IGD(s) and read their tables; None when neither an IGD URL is set nor discovery allowed."""
    igd_url = settings.get("router", "igd_url")
    if not igd_url and not discovery_allowed(root, settings)[0]:
        return None
    # The UPnP client pulls in requests: imported here, so a local-only run starts fast.
    from exposure_guard.upnp.audit import RouterAudit, find_gateways, read_tables

    try:
        audit = find_gateways(igd_url, timeout=settings.get("router", "discovery_timeout"))
    except UpnpError as exc:
        audit = RouterAudit(source="igd_url")
        audit.problems.append("the configured IGD %s: %s" % (igd_url, exc))
    read_tables(audit)
    return RouterFacts(audit, tuple(nas_addresses))
