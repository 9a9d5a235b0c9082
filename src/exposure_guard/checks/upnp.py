"""``upnp.*``: the NAS's own service advertisement on the LAN (Bonjour, UPnP discovery)."""

from __future__ import annotations

from exposure_guard.checks.references import SECURITY_GUIDE
from exposure_guard.checks.registry import Outcome, check, failed, passed
from exposure_guard.context import CheckContext
from exposure_guard.facts import inputs


@check(
    "upnp.nas-discovery",
    title="The NAS advertises its services by UPnP/Bonjour",
    severity="low",
    family="local",
    rationale="""
The NAS announces its admin and file services (with ports) to the LAN by Bonjour/UPnP. It is not an
internet exposure, but it guides malware that is already on the LAN straight to the NAS.""",
    remediation="""
Control Panel > Network & File Services > Service Discovery: untick the UPnP Discovery Service and the
Bonjour services you do not use.""",
    reads=inputs.BONJOUR + (inputs.UPNP_DISCOVERY,),
    references=(SECURITY_GUIDE,),
)
def nas_discovery(ctx: CheckContext) -> Outcome:
    advertised = []
    keys = []
    for key in inputs.BONJOUR:
        value = ctx.read(key)
        keys.append(value.evidence())
        if value.as_bool():
            advertised.append("Bonjour " + key.key)
    upnp = ctx.read(inputs.UPNP_DISCOVERY)
    keys.append(upnp.evidence())
    if upnp.as_bool():
        advertised.append("UPnP discovery")
    if advertised:
        return failed("the NAS advertises: " + ", ".join(advertised), {"advertised": advertised, "keys": keys})
    return passed("the NAS does not advertise its services", {"keys": keys})
