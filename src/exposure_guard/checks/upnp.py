"""``upnp.*``: the NAS's own service advertisement on the LAN (Bonjour, UPnP discovery)."""

from __future__ import annotations

from typing import Any, Dict

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
The NAS announces its admin and file services (with ports) to the LAN by Bonjour/UPnP — by default the
admin page, SMB, Qfile and the QNAP record, which tells every LAN host the model, firmware version and
serial number. It is not an internet exposure, but it guides malware that is already on the LAN straight
to the NAS and tells it which exploits fit.""",
    remediation="""
Control Panel > Network & File Services > Service Discovery: untick the UPnP Discovery Service and the
Bonjour services you do not use (or Bonjour as a whole). Qfinder on the LAN finds the NAS without them.""",
    reads=(inputs.BONJOUR_ENABLE,) + inputs.BONJOUR + (inputs.UPNP_DISCOVERY,),
    references=(SECURITY_GUIDE,),
)
def nas_discovery(ctx: CheckContext) -> Outcome:
    advertised = []
    master = ctx.read(inputs.BONJOUR_ENABLE)
    keys = [master.evidence()]
    bonjour_on = master.as_bool() is not False  # absent: QTS's default is on
    for key in inputs.BONJOUR:
        value = ctx.read(key)
        keys.append(value.evidence())
        if bonjour_on and value.as_bool():
            advertised.append("Bonjour " + key.key)
    upnp = ctx.read(inputs.UPNP_DISCOVERY)
    keys.append(upnp.evidence())
    if upnp.as_bool():
        advertised.append("UPnP discovery")
    evidence: Dict[str, Any] = {"advertised": advertised, "keys": keys, "bonjour_enabled": bonjour_on}
    if "Bonjour QNAP" in advertised:
        evidence["qnap_record"] = ("the QNAP (qdiscover) record tells every LAN host the model, the firmware version "
                                   "and build, the serial number and the myQNAPcloud name")
    if advertised:
        leak = " (the QNAP record gives away model, firmware and serial number)" if "Bonjour QNAP" in advertised else ""
        return failed("the NAS advertises: %s%s" % (", ".join(advertised), leak), evidence)
    return passed("the NAS does not advertise its services", {"keys": keys, "bonjour_enabled": bonjour_on})
