"""Router checks (UPnP IGD port mappings). Placeholder until the router audit lands: registered as skipped."""

from __future__ import annotations

from exposure_guard.checks.context import CheckContext
from exposure_guard.checks.registry import Outcome, check, skipped


@check(
    "router.upnp-mappings",
    title="The LAN router holds UPnP port mappings to this NAS",
    severity="critical",
    family="router",
    rationale="The router's UPnP IGD mapping table is what actually exposes the NAS.",
    remediation="Delete the mappings in the router's UPnP page and turn UPnP off on the router.",
    reads=("router UPnP IGD: GetGenericPortMappingEntry",),
    exposure=True,
    network=True,
)
def upnp_mappings(ctx: CheckContext) -> Outcome:
    return skipped("the router audit is not implemented in this version")


@check(
    "router.upnp-wan-exposed",
    title="The router answers UPnP from the internet",
    severity="critical",
    family="router",
    rationale="A router that answers UPnP on its WAN side lets anyone add port mappings (UPnProxy).",
    remediation="Update the router's firmware or turn UPnP off on the router.",
    reads=("prober's WAN-side SSDP/IGD test",),
    exposure=True,
    network=True,
)
def upnp_wan_exposed(ctx: CheckContext) -> Outcome:
    return skipped("needs the callback prober (not implemented in this version)")
