"""``router.*``: what the LAN router does for and to this NAS — the UPnP IGD port mappings that expose
it (with a fix that deletes them) and a router that answers UPnP from the internet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from exposure_guard.checks.references import ADVISORY_2022, UPNP_ADVISORY, UPNPROXY
from exposure_guard.checks.registry import Outcome, check, failed, fixes, passed, skipped, tempered, unknown
from exposure_guard.context import NO_PROBER, CheckContext
from exposure_guard.facts.owners import ARC, MappingContext, leads_to, mapping_context, owner_of
from exposure_guard.facts.ports import management_ports

if TYPE_CHECKING:
    from exposure_guard.facts.router import RouterFacts
    from exposure_guard.fixes.actions import Action
    from exposure_guard.upnp.models import PortMapping, ServiceAudit

SHOWN_OTHER = 100  # other hosts' mappings listed in evidence


# ---------------------------------------------------------------- the check
@check(
    "router.upnp-mappings",
    title="The LAN router holds UPnP port mappings to this NAS",
    severity="critical",
    family="router",
    rationale="""
The router's UPnP IGD mapping table is what actually exposes the NAS: every entry forwards a port of
the router's public address to a LAN host. QNAP's Auto Router Configuration creates such entries for the
admin ports; other LAN software and malware (UPnProxy, EternalSilence: 45,000+ routers with injected
mappings) do too, and almost no owner ever looks at the table. A mapping to a management port (admin
HTTP/HTTPS, SSH) puts the login page of the NAS on the internet.""",
    remediation="""
Open the router's admin page > UPnP (or NAT / Port forwarding > UPnP): delete the mappings to this NAS,
then turn UPnP off on the router if nothing needs it. On the NAS: myQNAPcloud > Auto Router Configuration
> untick "Enable UPnP Port Forwarding", so they are not re-created. `exposure-guard fix --only
router.upnp-mappings` deletes them for you ([router] fix_scope = management | all); `undo` re-adds them.""",
    reads=("router UPnP IGD found by SSDP (or [router] igd_url): device description",
           "WANIPConnection/WANPPPConnection: GetExternalIPAddress, GetListOfPortMappings (IGD:2) or "
           "GetGenericPortMappingEntry 0..713",
           "this NAS's LAN addresses and management ports (/etc/config/uLinux.conf)"),
    references=(ADVISORY_2022, UPNP_ADVISORY, UPNPROXY),
    exposure=True,
    network=True,
)
def upnp_mappings(ctx: CheckContext) -> Outcome:
    router = ctx.router
    if router is None:
        from exposure_guard.facts.router import discovery_allowed

        return skipped(discovery_allowed(ctx.root, ctx.settings)[1])
    audit = router.audit
    info = _audit_evidence(router)
    if not audit.igd_found:
        if router.discovery_failed:
            why = "; ".join(audit.problems + (audit.discovery.errors if audit.discovery else [])) or \
                "no LAN interface with an IPv4 address to search from"
            return unknown("cannot tell whether the router offers UPnP: %s" % why, {"upnp_offered": None, **info})
        waited = audit.discovery.seconds if audit.discovery else 0.0
        return passed("the router does not offer UPnP IGD: nothing answered the SSDP search within %.1f s" % waited,
                      {"upnp_offered": False, **info})
    if not audit.readable:
        return unknown("the router offers UPnP but its mapping table cannot be read: %s"
                       % "; ".join(s.error for s in audit.services), {"upnp_offered": True, **info})
    nas = list(router.nas_addresses)
    if not nas:
        return unknown("cannot tell which mappings point at this NAS: no LAN address of it is known; "
                       "set [agent] lan_addresses", {"upnp_offered": True, **info})
    mgmt = management_ports(ctx.config)
    known = mapping_context(ctx, nas)
    ours, others = router.to_nas(), router.to_others()
    evidence: Dict[str, Any] = dict(info, upnp_offered=True, nas_addresses=nas, management_ports=mgmt,
                                    mappings_to_this_nas=[_row(s, m, mgmt, known) for s, m in ours],
                                    mappings_to_other_hosts=[dict(_row(s, m, None, None), note="not this NAS's; "
                                                                  "never deleted") for s, m in others[:SHOWN_OTHER]])
    if len(others) > SHOWN_OTHER:
        evidence["other_hosts_not_shown"] = len(others) - SHOWN_OTHER
    active = [(s, m) for s, m in ours if m.enabled]
    if not active:
        tail = " (%s to it, listed)" % _count(len(ours), "disabled mapping") if ours else ""
        return passed("the router's UPnP table holds %s, none active to this NAS%s"
                      % (_count(len(audit.mappings()), "mapping"), tail), evidence)
    critical = [(s, m) for s, m in active if m.internal_port in mgmt]
    shown = critical or active
    summary = "the router forwards %s to this NAS by UPnP" % _count(len(active), "port")
    if critical and len(active) == 1:
        summary += ", a management port"
    elif critical:
        summary += ", %s" % ("all management ports" if len(critical) == len(active) else
                             "%d of them management ports" % len(critical) if len(critical) > 1 else
                             "1 of them a management port")
    summary += ": " + ", ".join(_described(m, known) for _s, m in shown[:4]) + (" …" if len(shown) > 4 else "")
    data = [{"control_url": s.service.control_url, "service_type": s.service.service_type, "mapping": m}
            for s, m in ours]
    return tempered(ctx, failed(summary, evidence, severity="critical" if critical else "high", fix_data=data),
                    "critical")


def _count(n: int, word: str) -> str:
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def _described(mapping: PortMapping, known: MappingContext) -> str:
    """``TCP 8080 → 10.0.0.5:8080 'desc' (admin HTTP, opened by ARC)``"""
    owner = owner_of(mapping, known)
    who = {ARC: "ARC"}.get(owner.kind, owner.label if owner.kind != "unknown" else "unknown software")
    service = leads_to(mapping, known)
    return "%s (%sopened by %s)" % (mapping.labelled(), service + ", " if service else "", who)


def _row(service: ServiceAudit, mapping: PortMapping, mgmt: Optional[List[int]],
         known: Optional[MappingContext]) -> Dict[str, Any]:
    row: Dict[str, Any] = {"external": "%s %d" % (mapping.protocol, mapping.external_port),
           "internal": "%s:%d" % (mapping.internal_client, mapping.internal_port)}
    row.update(mapping.to_dict())
    row["igd"] = service.gateway.location
    if mgmt is not None:
        row["management_port"] = mapping.internal_port in mgmt
    if known is not None:
        row["opened_by"] = owner_of(mapping, known).to_dict()
        row["leads_to"] = leads_to(mapping, known) or None
    return row


def _ipv6_pinholes(router: RouterFacts) -> Dict[str, Any]:
    """What the router's UPnP says about IPv6 pinholes. IGD:2 has no action that lists them, so whether one
    leads to this NAS only the IPv6 callback (reachability.*) can tell."""
    states = router.audit.ipv6_firewall
    if not states:
        return {"offered": False, "note": "the router offers no WANIPv6FirewallControl: LAN hosts cannot open "
                                          "IPv6 pinholes in it by UPnP"}
    allowed = [s for s in states if s.get("inbound_pinhole_allowed")]
    unknown_state = [s for s in states if s.get("inbound_pinhole_allowed") is None]
    if allowed:
        note = ("the router lets LAN hosts open inbound IPv6 pinholes by UPnP; IGD:2 has no action to list them, "
                "so they cannot be listed here: the IPv6 callback is what tells whether this NAS is reachable")
    elif unknown_state:
        note = "whether the router lets LAN hosts open IPv6 pinholes could not be read"
    else:
        note = "the router does not let LAN hosts open inbound IPv6 pinholes by UPnP"
    return {"offered": True, "services": states, "note": note}


def _audit_evidence(router: RouterFacts) -> Dict[str, Any]:
    audit = router.audit
    out: Dict[str, Any] = {"found_by": audit.source, "igd_external_ip": audit.external_ip,
                           "gateways": [s.to_dict() for s in audit.services]}
    if audit.igd_found:
        out["ipv6_pinholes"] = _ipv6_pinholes(router)
    if audit.discovery is not None:
        out["discovery"] = audit.discovery.to_dict()
    if audit.problems:
        out["problems"] = list(audit.problems)
    return out


# ---------------------------------------------------------------- the fix
@fixes("router.upnp-mappings")
def fix_upnp_mappings(ctx: CheckContext, outcome: Outcome) -> List[Action]:
    """Delete this NAS's mappings: management ports only, or all ([router] fix_scope)."""
    from exposure_guard.fixes.igd import IgdMappingDeleteAction

    scope = ctx.settings.get("router", "fix_scope")
    mgmt = management_ports(ctx.config)
    actions: List[Action] = []
    for item in outcome.fix_data or []:
        mapping: PortMapping = item["mapping"]
        if scope == "management" and mapping.internal_port not in mgmt:
            continue
        actions.append(IgdMappingDeleteAction("router.upnp-mappings", item["control_url"], item["service_type"],
                                              mapping))
    return actions


# ---------------------------------------------------------------- UPnP answered from the internet
@check(
    "router.upnp-wan-exposed",
    title="The router answers UPnP from the internet",
    severity="critical",
    # Runs with the reachability family: it reuses the same callback, after the router audit.
    family="reachability",
    rationale="""
A router must speak UPnP only on its LAN side. One that answers SSDP or serves its IGD description on its
public address lets anyone on the internet add port mappings through it (UPnProxy / EternalSilence:
tens of thousands of routers abused as proxies). Only a probe from outside can see it.""",
    remediation="""
Update the router's firmware; if it still answers UPnP from the WAN side, turn UPnP off on the router
(and replace it: the bug is the vendor's).""",
    reads=("callback prober: SSDP M-SEARCH (unicast) to the public address UDP 1900, IGD description on common "
           "ports and a read-only GetExternalIPAddress on its control URL",),
    references=(UPNPROXY, UPNP_ADVISORY),
    exposure=True,
    network=True,
)
def upnp_wan_exposed(ctx: CheckContext) -> Outcome:
    if not ctx.prober_configured:
        return skipped(NO_PROBER)
    run = ctx.reachability
    tested = [f for f in run.families if f.answer is not None and f.answer.upnp is not None]
    evidence: Dict[str, Any] = {f.family: dict(f.answer.upnp or {}, address=f.answer.observed_address)
                                for f in tested if f.answer}
    if run.notes:
        evidence["notes"] = run.notes
    exposed = [f for f in tested if f.answer and (f.answer.upnp or {}).get("exposed")]
    if exposed:
        parts = []
        for f in exposed:
            upnp = (f.answer.upnp if f.answer else None) or {}
            what = []
            if (upnp.get("ssdp") or {}).get("answered"):
                what.append("answers SSDP on UDP 1900")
            igd = upnp.get("igd") or {}
            if igd.get("found"):
                what.append("serves its IGD description on port %s" % igd.get("port"))
            if igd.get("control_reachable"):
                what.append("accepts UPnP control calls")
            parts.append("%s %s" % (f.answer.observed_address if f.answer else "?", " and ".join(what)))
        return failed("the router's public address " + "; ".join(parts) + " from the internet (UPnProxy)",
                      evidence)
    if not tested:
        reasons = "; ".join("%s: %s" % (f.family, f.error or "no UPnP result") for f in run.families)
        return unknown("the prober's WAN-side UPnP test did not run: %s" % reasons, {"reason": reasons, **evidence})
    errors = [str(f.answer.upnp["error"]) for f in tested if f.answer and f.answer.upnp and f.answer.upnp.get("error")]
    if errors:
        return unknown("the WAN-side UPnP test was incomplete: %s" % "; ".join(errors), evidence)
    return passed("no UPnP answer from the public address (SSDP and IGD description tried from outside)", evidence)
