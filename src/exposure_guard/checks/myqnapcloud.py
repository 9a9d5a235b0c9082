"""``myqnapcloud.*``: what myQNAPcloud does to the router and the DNS (Auto Router Configuration, the
services it published, the DDNS name)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from exposure_guard.checks.references import ADVISORY_2022, QSNATCH, SECURE_ACCESS, SECURITY_GUIDE, UPNP_ADVISORY
from exposure_guard.checks.registry import Outcome, Unknowable, check, failed, fixes, passed, tempered, unknown
from exposure_guard.context import CheckContext
from exposure_guard.facts import inputs
from exposure_guard.facts.owners import ARC, arc_recorded, mapping_context, owner_of
from exposure_guard.qts.services import UPNPCD_COMMAND

if TYPE_CHECKING:
    from exposure_guard.fixes.actions import Action


# ---------------------------------------------------------------- Auto Router Configuration
@check(
    "myqnapcloud.upnp-forwarding",
    title="myQNAPcloud Auto Router Configuration opens router ports by UPnP",
    severity="high",
    family="local",
    rationale="""
With "Enable UPnP Port Forwarding" on, the NAS asks the router (UPnP IGD) to forward its admin and
service ports to the internet. This is how most NAS hit by DeadBolt, Qlocker and eCh0raix in 2021-2022
became reachable; QNAP's January 2022 advisory tells every owner to turn it off.""",
    remediation="""
myQNAPcloud > Auto Router Configuration > untick "Enable UPnP Port Forwarding" > Apply. Then check the
router's UPnP table (`exposure-guard check --only router.upnp-mappings`): mappings already made stay
until they expire or are deleted. Use myQNAPcloud Link or a VPN for remote access instead.""",
    reads=(inputs.ARC_ENABLE, "running process upnpcd"),
    references=(ADVISORY_2022, UPNP_ADVISORY, SECURE_ACCESS),
)
def upnp_forwarding(ctx: CheckContext) -> Outcome:
    enable = ctx.read(inputs.ARC_ENABLE)
    running = ctx.running("upnpcd")
    evidence = dict(enable.evidence(), upnpcd_running=running)
    on = enable.as_bool()
    if on is None:
        return unknown("[UPnP_Global] Enable has an unrecognised value %r" % enable.value, evidence)
    if on or running:
        why = "Enable UPnP Port Forwarding is on" if on else "the UPnP port forwarding daemon upnpcd runs"
        return tempered(ctx, failed("%s: the NAS opens its ports on the router" % why, evidence), "high")
    return passed("UPnP port forwarding (Auto Router Configuration) is off", evidence)


@fixes("myqnapcloud.upnp-forwarding")
def fix_upnp_forwarding(ctx: CheckContext, outcome: Outcome) -> List[Action]:
    # Fix actions load the journal and the UPnP client: only when a fix is planned, not on every check.
    from exposure_guard.fixes.actions import ConfigKeyAction, DaemonStopAction

    key = inputs.ARC_ENABLE
    actions: List[Action] = [
        ConfigKeyAction("myqnapcloud.upnp-forwarding", key.file, key.section, key.key, "FALSE"),
        DaemonStopAction("myqnapcloud.upnp-forwarding", "upnpcd", UPNPCD_COMMAND),
    ]
    # Turning ARC off does not remove the mappings it already made on the router: remove those too.
    return actions + arc_mapping_removal(ctx)


def arc_mapping_removal(ctx: CheckContext, check_id: str = "myqnapcloud.upnp-forwarding") -> List[Action]:
    """Actions deleting the mappings Auto Router Configuration made (``facts.owners``: this NAS's mappings
    whose external port is one ARC recorded in uLinux.conf, or whose description names QNAP/myQNAPcloud).
    Never raises:
    without a readable router (offline, no IGD, a --root tree without [router] igd_url) it returns no
    actions and the rest of the ARC fix goes ahead."""
    if ctx.offline:
        return []
    try:
        router = ctx.router
    except Exception:  # the router part of the fix is best effort
        return []
    if router is None:
        return []
    from exposure_guard.fixes.igd import IgdMappingDeleteAction

    known = mapping_context(ctx, router.nas_addresses)
    actions: List[Action] = []
    for service, mapping in router.to_nas():
        if owner_of(mapping, known).kind == ARC:
            actions.append(IgdMappingDeleteAction(check_id, service.service.control_url,
                                                  service.service.service_type, mapping))
    return actions


def arc_recorded_ports(ctx: CheckContext) -> List[Tuple[str, int]]:
    """(service, router port) of every port ARC recorded in uLinux.conf; unreadable keys are skipped."""
    return [(label, port) for _key, label, port in arc_recorded(ctx)]


def arc_active(ctx: CheckContext) -> Optional[bool]:
    """Whether Auto Router Configuration forwards ports now: its switch on or upnpcd running; None when the
    switch has an unrecognised value and the daemon does not run."""
    on = ctx.read(inputs.ARC_ENABLE).as_bool()
    return True if on or ctx.running("upnpcd") else on


# ---------------------------------------------------------------- published services
@check(
    "myqnapcloud.published-services",
    title="Router ports were opened for NAS services by myQNAPcloud",
    severity="high",
    family="local",
    rationale="""
When Auto Router Configuration has forwarded a service, QTS records the router-side port in
uLinux.conf (ExtPort / ExtSSLPort). While ARC is on, a non-zero value means the router is told to publish
that service to the internet; admin ports there are what ransomware campaigns scan for. With ARC off the
firmware no longer uses them: a leftover value is history (the router audit and the callback check say
whether the router still forwards the port).""",
    remediation="""
myQNAPcloud > Auto Router Configuration: untick every service under "Forwarded services" (and
"Published Services": untick every Publish box), then remove the matching forwards on the router.""",
    reads=tuple(key for key, _label in inputs.EXT_PORTS) + (inputs.ARC_ENABLE, "running process upnpcd"),
    references=(ADVISORY_2022, QSNATCH),
)
def published_services(ctx: CheckContext) -> Outcome:
    published: List[Dict[str, Any]] = []
    reads: List[Dict[str, Any]] = []
    for key, label in inputs.EXT_PORTS:
        value = ctx.read(key)
        reads.append(value.evidence())
        port = value.as_port()
        if port:
            published.append({"service": label, "router_port": port, "section": key.section, "key": key.key})
    if published:
        names = ", ".join("%s on router port %d" % (p["service"], p["router_port"]) for p in published)
        if arc_active(ctx) is False:
            history = {"recorded": published, "keys": reads, "arc": ctx.read(inputs.ARC_ENABLE).evidence()}
            return passed("Auto Router Configuration is off: the router ports it once recorded (%s) are history, not "
                          "live forwards; the router audit and the callback check show whether the router still "
                          "forwards them" % names, history)
        admin = any(p["service"].startswith("admin") for p in published)
        return tempered(ctx, failed("router ports were opened for: " + names, {"published": published, "keys": reads},
                                    severity="high" if admin else "medium"), "high")
    return passed("no router ports are recorded as opened for NAS services", {"keys": reads})


# ---------------------------------------------------------------- DDNS
@check(
    "myqnapcloud.ddns",
    title="The NAS publishes its address under a myQNAPcloud DDNS name",
    severity="info",
    family="local",
    rationale="""
A myQNAPcloud DDNS name (name.myqnapcloud.com) makes the NAS's public address easy to find. Alone it
exposes nothing; together with forwarded ports it hands attackers a stable address to return to.""",
    remediation="""
myQNAPcloud > My DDNS: disable it if you do not use it. Use myQNAPcloud Link or a VPN for remote
access; never combine DDNS with forwarded admin ports.""",
    reads=(inputs.DDNS_HOST, inputs.DDNS_DOMAIN, inputs.QID_DEVICE_NAME, inputs.QID_STATUS, inputs.QID_ACCOUNT,
           inputs.QID_ACCESS_MODE, "qid.conf tokens are never read out",
           "aggravating: Auto Router Configuration on, or any ExtPort/ExtSSLPort recorded (see above)"),
    references=(ADVISORY_2022, SECURITY_GUIDE),
)
def ddns(ctx: CheckContext) -> Outcome:
    host = ctx.read(inputs.DDNS_HOST)
    domain = ctx.read(inputs.DDNS_DOMAIN)
    evidence: Dict[str, Any] = {"host_name": host.evidence(), "domain": domain.effective}
    qid = _qid(ctx)
    if qid:
        evidence["qid"] = qid
    name = (host.value or "").strip()
    if not name or name.lower() == "myserver":
        # QTS 5 keeps the myQNAPcloud name in qid.conf; qnapddns.conf may have no host at all.
        name = str(qid.get("device_name") or "").strip()
    if not name or name.lower() == "myserver":
        return passed("no myQNAPcloud DDNS name is set", evidence)
    fqdn = "%s.%s" % (name, (domain.effective or "myqnapcloud.com").lower())
    evidence["ddns_name"] = fqdn
    forwarding = _forwarding_on(ctx)
    if forwarding:
        return failed("%s points at this NAS and ports are being forwarded to it" % fqdn,
                      {"forwarding": forwarding, **evidence}, severity="medium")
    return failed("%s points at this NAS (no forwarded ports seen)" % fqdn, evidence)


def _qid(ctx: CheckContext) -> Dict[str, Any]:
    """What qid.conf says about the myQNAPcloud registration, never its tokens (and the QNAP ID masked)."""
    try:
        status = ctx.read(inputs.QID_STATUS)
        if status.file_missing:
            return {}
        name = ctx.read(inputs.QID_DEVICE_NAME).value
        account = ctx.read(inputs.QID_ACCOUNT).value
        mode = ctx.read(inputs.QID_ACCESS_MODE).value
    except Unknowable as exc:
        return {"file": "/" + inputs.QID_STATUS.file, "error": str(exc)}
    out: Dict[str, Any] = {"file": "/" + inputs.QID_STATUS.file, "status": status.effective,
                           "bound_to_qnap_id": status.effective == "3"}
    if name:
        out["device_name"] = name
    if account:
        out["qnap_id"] = _mask(account)
    if mode is not None:
        out["access_control_mode"] = mode  # values are not published: verbatim
    return out


def _mask(account: str) -> str:
    """``jane.doe@example.com`` → ``j***@example.com``: enough to recognise, not to harvest."""
    user, at, domain = account.partition("@")
    return (user[:1] + "***" + at + domain) if at else (account[:1] + "***")


def _forwarding_on(ctx: CheckContext) -> List[str]:
    """Why ports are being forwarded to the NAS: ARC on, and the router ports it recorded (which are
    history, not forwards, while ARC is off)."""
    try:
        if not arc_active(ctx):
            return []
    except Unknowable:
        return []
    return ["UPnP port forwarding on"] + ["%s forwarded" % label for label, _port in arc_recorded_ports(ctx)]
