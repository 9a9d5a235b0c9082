"""Router checks: the UPnP IGD port mappings that expose this NAS, and a fix that deletes them.

The audit runs once per check run and is shared through ``ctx.shared``:

- ``router.audit``: the :class:`~exposure_guard.upnp.audit.RouterAudit` (gateways, tables, problems);
- ``router.mappings``: every readable mapping (list of ``PortMapping``, any internal client);
- ``router.nas_mappings``: the subset whose internal client is one of this NAS's LAN addresses;
- ``router.external_ip``: the IGD's external address (str) or None;
- ``router.upnp_offered``: True / False, or None when discovery could not tell.

Reachability checks may call :func:`router_audit` themselves: whichever check runs first pays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from exposure_guard.checks.context import CheckContext
from exposure_guard.checks.evidence import Unknowable, read_key
from exposure_guard.checks.local import ADVISORY_2022, UPNP_ADVISORY, management_ports
from exposure_guard.checks.registry import Outcome, check, failed, fixes, passed, skipped, unknown
from exposure_guard.errors import ExposureGuardError
from exposure_guard.journal import ChangeJournal, ChangeRecord
from exposure_guard.qts.root import ULINUX_CONF
from exposure_guard.remediation import Action, register_action_kind
from exposure_guard.upnp.errors import SoapFault, UpnpError
from exposure_guard.upnp.models import PortMapping, ServiceAudit, WanService

if TYPE_CHECKING:
    from exposure_guard.upnp.audit import RouterAudit

# The UPnP client (soap, audit) pulls in requests: imported where used, so a local-only run
# (`check --offline`, the demo) starts fast.

UPNPROXY = "https://www.akamai.com/blog/security/upnproxy-eternalsilence"
SHOWN_OTHER = 100  # other hosts' mappings listed in evidence

# Where ARC records the router-side ports it opened (qts-settings.md F1).
ARC_PORT_KEYS = (("System", "ExtPort"), ("Stunnel", "ExtSSLPort"), ("QWEB", "ExtPort"), ("QWEB", "ExtSSLPort"))
# Description words of mappings made by QNAP's upnpcd (heuristic: the exact strings are not documented).
ARC_DESCRIPTION_WORDS = ("qnap", "mycloudnas", "myqnapcloud", "qts")


# ---------------------------------------------------------------- the shared audit
def discovery_allowed(ctx: CheckContext) -> Tuple[bool, str]:
    """SSDP goes out only from the live system, unless the settings say otherwise ([router] discover)."""
    mode = ctx.settings.get("router", "discover")
    if mode == "yes":
        return True, ""
    if mode == "no":
        return False, "router discovery is off ([router] discover = no) and no [router] igd_url is set"
    if ctx.root.is_live:
        return True, ""
    return False, ("not searching the LAN for a router while checking a --root tree (%s); set [router] igd_url, "
                   "or [router] discover = yes" % ctx.root.root)


def router_audit(ctx: CheckContext) -> Optional[RouterAudit]:
    """Find the IGD(s) and read their tables once per run; None when discovery is not allowed."""
    if "router.audit" in ctx.shared:
        return ctx.shared["router.audit"]
    igd_url = ctx.settings.get("router", "igd_url")
    if not igd_url and not discovery_allowed(ctx)[0]:
        ctx.shared["router.audit"] = None
        return None
    from exposure_guard.upnp.audit import RouterAudit, find_gateways, read_tables

    try:
        audit = find_gateways(igd_url, timeout=ctx.settings.get("router", "discovery_timeout"))
    except UpnpError as exc:
        audit = RouterAudit(source="igd_url")
        audit.problems.append("the configured IGD %s: %s" % (igd_url, exc))
    read_tables(audit)
    nas = set(_nas_addresses(ctx))
    mappings = [m for _s, m in audit.mappings()]
    ctx.shared.update({
        "router.audit": audit,
        "router.mappings": mappings,
        "router.nas_mappings": [m for m in mappings if m.internal_client in nas],
        "router.external_ip": audit.external_ip,
        "router.upnp_offered": audit.igd_found if not _discovery_failed(audit) else None,
    })
    return audit


def _nas_addresses(ctx: CheckContext) -> List[str]:
    try:
        return list(ctx.identity.lan_addresses)
    except Exception:  # identity problems are reported by the runner; here: no address known
        return []


def _discovery_failed(audit: RouterAudit) -> bool:
    """True when not finding an IGD says nothing: no interface to search on, or every answer unusable."""
    if audit.igd_found:
        return False
    if audit.source == "igd_url":
        return True
    d = audit.discovery
    return d is None or not d.interfaces or (bool(d.errors) and len(d.errors) >= len(d.interfaces)) or \
        bool(audit.problems)


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
    audit = router_audit(ctx)
    if audit is None:
        return skipped(discovery_allowed(ctx)[1])
    info = _audit_evidence(audit)
    if not audit.igd_found:
        if _discovery_failed(audit):
            why = "; ".join(audit.problems + (audit.discovery.errors if audit.discovery else [])) or \
                "no LAN interface with an IPv4 address to search from"
            return unknown("cannot tell whether the router offers UPnP: %s" % why, upnp_offered=None, **info)
        waited = audit.discovery.seconds if audit.discovery else 0.0
        return passed("the router does not offer UPnP IGD: nothing answered the SSDP search within %.1f s" % waited,
                      upnp_offered=False, **info)
    if not audit.readable:
        return unknown("the router offers UPnP but its mapping table cannot be read: %s"
                       % "; ".join(s.error for s in audit.services), upnp_offered=True, **info)
    nas = _nas_addresses(ctx)
    if not nas:
        return unknown("cannot tell which mappings point at this NAS: no LAN address of it is known; "
                       "set [agent] lan_addresses", upnp_offered=True, **info)
    mgmt = management_ports(ctx)
    ours = [(s, m) for s, m in audit.mappings() if m.internal_client in nas]
    others = [(s, m) for s, m in audit.mappings() if m.internal_client not in nas]
    evidence: Dict[str, Any] = dict(info, upnp_offered=True, nas_addresses=nas, management_ports=mgmt,
                                    mappings_to_this_nas=[_row(s, m, mgmt) for s, m in ours],
                                    mappings_to_other_hosts=[dict(_row(s, m, None), note="not this NAS's; never "
                                                                  "deleted") for s, m in others[:SHOWN_OTHER]])
    if len(others) > SHOWN_OTHER:
        evidence["other_hosts_not_shown"] = len(others) - SHOWN_OTHER
    active = [(s, m) for s, m in ours if m.enabled]
    if not active:
        tail = " (%s to it, listed)" % _count(len(ours), "disabled mapping") if ours else ""
        return passed("the router's UPnP table holds %s, none active to this NAS%s"
                      % (_count(len(audit.mappings()), "mapping"), tail), **evidence)
    critical = [(s, m) for s, m in active if m.internal_port in mgmt]
    shown = critical or active
    summary = "the router forwards %s to this NAS by UPnP" % _count(len(active), "port")
    if critical and len(active) == 1:
        summary += ", a management port"
    elif critical:
        summary += ", %s" % ("all management ports" if len(critical) == len(active) else
                             "%d of them management ports" % len(critical) if len(critical) > 1 else
                             "1 of them a management port")
    summary += ": " + ", ".join(_describe(m) for _s, m in shown[:4]) + (" …" if len(shown) > 4 else "")
    data = [{"control_url": s.service.control_url, "service_type": s.service.service_type, "mapping": m}
            for s, m in ours]
    return failed(summary, severity="critical" if critical else "high", data=data, **evidence)


def _count(n: int, word: str) -> str:
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def _describe(mapping: PortMapping) -> str:
    text = mapping.arrow()
    if mapping.description:
        text += " %r" % mapping.description
    return text


def _row(service: ServiceAudit, mapping: PortMapping, mgmt: Optional[List[int]]) -> Dict[str, Any]:
    row = {"external": "%s %d" % (mapping.protocol, mapping.external_port),
           "internal": "%s:%d" % (mapping.internal_client, mapping.internal_port)}
    row.update(mapping.to_dict())
    row["igd"] = service.gateway.location
    if mgmt is not None:
        row["management_port"] = mapping.internal_port in mgmt
    return row


def _audit_evidence(audit: RouterAudit) -> Dict[str, Any]:
    out: Dict[str, Any] = {"found_by": audit.source, "igd_external_ip": audit.external_ip,
                           "gateways": [s.to_dict() for s in audit.services]}
    if audit.discovery is not None:
        out["discovery"] = audit.discovery.to_dict()
    if audit.problems:
        out["problems"] = list(audit.problems)
    return out


# ---------------------------------------------------------------- the fix
@register_action_kind
class IgdMappingDeleteAction(Action):
    """``DeletePortMapping`` on the router's IGD; undo re-adds the mapping with the same parameters."""

    kind = "igd-mapping-delete"

    def __init__(self, check_id: str, control_url: str, service_type: str, mapping: PortMapping) -> None:
        super().__init__(check_id)
        self.service = WanService(service_type, control_url)
        self.mapping = mapping

    @property
    def target(self) -> str:
        return "IGD %s mapping %s" % (self.service.control_url, self.mapping.arrow())

    @property
    def after(self) -> Optional[str]:
        return "absent"

    def _live(self) -> Optional[PortMapping]:
        from exposure_guard.upnp import soap

        client = soap.SoapClient(self.service)
        try:
            return soap.specific_mapping(client, *self.mapping.key)
        finally:
            client.close()

    def current(self, ctx: CheckContext) -> Optional[str]:
        try:
            live = self._live()
        except UpnpError as exc:
            return "unknown (%s)" % exc
        return _state(live)

    def needed(self, ctx: CheckContext) -> bool:
        try:
            live = self._live()
        except SoapFault as fault:
            return fault.code == 401  # no GetSpecificPortMappingEntry on this router: try the delete
        except UpnpError:
            return True  # the delete itself will fail and say why
        # Only while it still leads to this NAS: a port re-used by another host is not ours to delete.
        return live is not None and (live.internal_client, live.internal_port) == \
            (self.mapping.internal_client, self.mapping.internal_port)

    def params(self) -> Dict[str, Any]:
        return {"control_url": self.service.control_url, "service_type": self.service.service_type,
                "mapping": self.mapping.to_dict()}

    def apply(self, ctx: CheckContext, journal: ChangeJournal, change_id: str) -> Dict[str, Any]:
        from exposure_guard.upnp import soap

        client = soap.SoapClient(self.service)
        try:
            soap.delete_mapping(client, self.mapping)
        finally:
            client.close()
        return {}

    @classmethod
    def undo(cls, ctx: CheckContext, record: ChangeRecord) -> str:
        from exposure_guard.upnp import soap

        p = record.params
        mapping = PortMapping.from_dict(p["mapping"])
        client = soap.SoapClient(WanService(p["service_type"], p["control_url"]))
        try:
            live = soap.specific_mapping(client, *mapping.key)
            if live is not None:
                if (live.internal_client, live.internal_port) == (mapping.internal_client, mapping.internal_port):
                    return "mapping %s is already back on the router" % mapping.arrow()
                raise ExposureGuardError("cannot re-add %s: the router now maps that port to %s:%d; left as is"
                                         % (mapping.arrow(), live.internal_client, live.internal_port))
            try:
                soap.add_mapping(client, mapping)
            except SoapFault as fault:
                raise ExposureGuardError("cannot re-add %s on %s: %s" % (mapping.arrow(), p["control_url"],
                                                                         fault)) from None
        finally:
            client.close()
        return "re-added mapping %s (%r, lease %d s) on %s" % (mapping.arrow(), mapping.description,
                                                                mapping.lease_duration, p["control_url"])

    def describe(self, ctx: CheckContext) -> str:
        return "delete the router's UPnP mapping %s%s" % (
            _describe(self.mapping), " (IGD %s)" % self.service.control_url)


def _state(mapping: Optional[PortMapping]) -> str:
    if mapping is None:
        return "absent"
    return "%s%s lease %d s" % (_describe(mapping), "" if mapping.enabled else " (disabled)", mapping.lease_duration)


@fixes("router.upnp-mappings")
def fix_upnp_mappings(ctx: CheckContext, outcome: Outcome) -> List[Action]:
    """Delete this NAS's mappings: management ports only, or all ([router] fix_scope)."""
    scope = ctx.settings.get("router", "fix_scope")
    mgmt = management_ports(ctx)
    actions: List[Action] = []
    for item in outcome.data or []:
        mapping: PortMapping = item["mapping"]
        if scope == "management" and mapping.internal_port not in mgmt:
            continue
        actions.append(IgdMappingDeleteAction("router.upnp-mappings", item["control_url"], item["service_type"],
                                              mapping))
    return actions


def plan_arc_mapping_removal(ctx: CheckContext, check_id: str = "myqnapcloud.upnp-forwarding") -> List[Action]:
    """Actions deleting the mappings Auto Router Configuration made, for the ARC fix to append.

    ARC's mappings are this NAS's mappings whose external port is one recorded in uLinux.conf
    (``[System] ExtPort``, ``[Stunnel] ExtSSLPort``, ``[QWEB] ExtPort/ExtSSLPort``) or whose description
    names QNAP/myQNAPcloud. Never raises: without a readable router (offline, no IGD, --root tree without
    [router] igd_url) it returns no actions and the rest of the ARC fix goes ahead."""
    if ctx.offline:
        return []
    try:
        audit = router_audit(ctx)
    except Exception:  # the router part of the fix is best effort
        return []
    if audit is None:
        return []
    nas = set(_nas_addresses(ctx))
    recorded = set(arc_recorded_ports(ctx))
    actions: List[Action] = []
    for service, mapping in audit.mappings():
        if mapping.internal_client not in nas:
            continue
        words = mapping.description.lower()
        if mapping.external_port in recorded or any(w in words for w in ARC_DESCRIPTION_WORDS):
            actions.append(IgdMappingDeleteAction(check_id, service.service.control_url,
                                                  service.service.service_type, mapping))
    return actions


def arc_recorded_ports(ctx: CheckContext) -> List[int]:
    ports: List[int] = []
    for section, key in ARC_PORT_KEYS:
        try:
            port = read_key(ctx, ULINUX_CONF, section, key, "0").as_port()
        except Unknowable:
            continue
        if port:
            ports.append(port)
    return ports
