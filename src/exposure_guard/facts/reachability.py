"""The reachability callback as a fact of the run (``CheckContext.reachability``): which ports to ask
about, the prober's answer per address family, and the local fingerprints that tell *this* NAS apart
from whatever else answers on the public address. The checks that judge it: checks/reachability.py,
``router.upnp-wan-exposed`` and ``admin.default-cert``."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from exposure_guard.contracts import UNVERIFIED, VERIFIED
from exposure_guard.contracts.fingerprint import compare, fingerprint_local
from exposure_guard.errors import Unknowable
from exposure_guard.facts import inputs
from exposure_guard.facts.keys import Key, read_key
from exposure_guard.facts.packages import read_packages
from exposure_guard.facts.ports import DEFAULT_ADMIN_PORTS, admin_ports
from exposure_guard.upnp.models import PortMapping

if TYPE_CHECKING:
    from exposure_guard.context import CheckContext
    from exposure_guard.probeclient import ProbeAnswer

# probeclient pulls in requests: imported where the callback runs, so local-only runs start fast.

LOCAL_TIMEOUT = 2.0
CGNAT = ipaddress.ip_network("100.64.0.0/10")
RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


@dataclass
class Target:
    """One port the prober should try: ``external`` on the public address should reach ``local`` here."""

    external: int
    local: int
    service: str
    category: str  # admin | service
    tls: Optional[bool]  # None: find out locally
    probe: str = "http"
    sources: List[str] = field(default_factory=list)
    mappings: List[str] = field(default_factory=list)  # UPnP mappings that forward this external port here


def _port(ctx: CheckContext, key: Key) -> Tuple[Optional[int], str]:
    """A port setting and where it came from, for the evidence's ``asked_because``."""
    try:
        found = read_key(ctx.config, key)
    except Unknowable:
        default = key.default or ""
        return (int(default) if default.isdigit() else None), "default (uLinux.conf unreadable)"
    where = "[%s] %s" % (key.section, key.key) + ("" if found.value is not None else " (default)")
    return found.as_port(), where


@dataclass(frozen=True)
class NasMapping:
    """A TCP mapping the router holds to this NAS, as the callback needs it."""

    external: int
    internal: int
    client: str
    text: str


def _nas_mapping(mapping: PortMapping) -> Optional[NasMapping]:
    external, internal = mapping.external_port, mapping.internal_port or mapping.external_port
    if mapping.protocol.upper() != "TCP" or not mapping.enabled or not (0 < external < 65536 and 0 < internal < 65536):
        return None
    text = "UPnP %s %d → %s:%d" % (mapping.protocol.upper(), external, mapping.internal_client, internal)
    if mapping.description:
        text += " (%s)" % mapping.description[:60]
    return NasMapping(external, internal, mapping.internal_client, text)


def nas_mappings(ctx: CheckContext) -> Optional[List[NasMapping]]:
    """TCP mappings the router holds to this NAS; None when the router's table was not read."""
    router = ctx.router
    if router is None:
        return None
    found = (_nas_mapping(m) for _s, m in router.to_nas())
    return [m for m in found if m is not None]


def plan_targets(ctx: CheckContext) -> Tuple[List[Target], List[Target]]:
    """(targets asked, targets dropped by the per-check cap: MAX_BATCHES requests of MAX_PORTS ports per
    address family), most important first: admin, then SSH and mapped ports, then the other doors."""
    from exposure_guard.probeclient import MAX_BATCHES, MAX_PORTS

    try:
        admin = admin_ports(ctx.config)
    except Unknowable:
        admin = DEFAULT_ADMIN_PORTS
    found: Dict[int, Target] = {}

    def add(external: Optional[int], local: Optional[int], service: str, category: str, tls: Optional[bool],
            source: str, probe: str = "http", mapping: Optional[str] = None) -> None:
        if not external or not local:
            return
        target = found.get(external)
        if target is None:
            target = found[external] = Target(external, local, service, category, tls, probe)
        target.sources.append(source)
        if mapping:
            target.mappings.append(mapping)

    add(admin.http, admin.http, "admin HTTP", "admin", False, "[System] Web Access Port")
    add(admin.https, admin.https, "admin HTTPS", "admin", True, "[Stunnel] Port")
    for key, local, service, tls in ((inputs.ADMIN_EXT_HTTP, admin.http, "admin HTTP", False),
                                     (inputs.ADMIN_EXT_HTTPS, admin.https, "admin HTTPS", True)):
        ext, where = _port(ctx, key)
        add(ext, local, service, "admin", tls, "myQNAPcloud router port " + where)
    mappings = nas_mappings(ctx) or []
    admin_local = {admin.http: ("admin HTTP", False), admin.https: ("admin HTTPS", True)}
    for m in mappings:
        if m.internal in admin_local:
            service, tls = admin_local[m.internal]
            add(m.external, m.internal, service, "admin", tls, "router UPnP mapping", mapping=m.text)
    ssh, where = _port(ctx, inputs.SSH_PORT)
    add(ssh, ssh, "SSH", "service", False, where, probe="banner")
    for m in mappings:
        if m.internal not in admin_local:
            kind = ("SSH", "banner") if m.internal == ssh else ("port %d" % m.internal, "http")
            add(m.external, m.internal, kind[0], "service", None, "router UPnP mapping", probe=kind[1],
                mapping=m.text)
    ftp, where = _port(ctx, inputs.FTP_PORT)
    add(ftp, ftp, "FTP", "service", False, where, probe="banner")
    web, where = _port(ctx, inputs.WEB_HTTP_PORT)
    add(web, web, "Web Server HTTP", "service", False, where)
    web_ssl, where = _port(ctx, inputs.WEB_HTTPS_PORT)
    add(web_ssl, web_ssl, "Web Server HTTPS", "service", True, where)
    for key, web_local, service, tls in ((inputs.WEB_EXT_HTTP, web, "Web Server HTTP", False),
                                         (inputs.WEB_EXT_HTTPS, web_ssl, "Web Server HTTPS", True)):
        ext, where = _port(ctx, key)
        add(ext, web_local, service, "service", tls, "myQNAPcloud router port " + where)
    for port, service, door_tls, probe, why in _other_doors(ctx):
        add(port, port, service, "service", door_tls, why, probe=probe)
    targets = list(found.values())
    cap = MAX_PORTS * MAX_BATCHES
    return targets[:cap], targets[cap:]


def _other_doors(ctx: CheckContext) -> List[Tuple[int, str, Optional[bool], str, str]]:
    """(port, service, tls, probe, why) of the other doors this NAS really has open: Telnet, SMB, AFP, the
    web pages of installed apps and the ports containers publish. Each is asked only when it listens here
    (or, where listeners cannot be read, when its setting says it is on)."""
    listeners = ctx.listeners
    out: List[Tuple[int, str, Optional[bool], str, str]] = []

    def door(port: Optional[int], service: str, tls: Optional[bool], probe: str, setting_on: Optional[bool],
             setting: str) -> None:
        if not port:
            return
        listening = listeners.listening(port)
        if listening:
            out.append((port, service, tls, probe, "listens here (%s)" % listeners.source))
        elif listening is None and setting_on:
            out.append((port, service, tls, probe, setting + " (listeners unknown)"))

    def setting(key: Key) -> Optional[bool]:
        try:
            return read_key(ctx.config, key).as_bool()
        except Unknowable:
            return None

    telnet, _where = _port(ctx, inputs.TELNET_PORT)
    door(telnet, "Telnet", False, "banner", setting(inputs.TELNET_ENABLE), "[LOGIN] TELNET Enable")
    smb_on = setting(inputs.SMB_ENABLE)
    door(445, "SMB", False, "banner", smb_on, "[Samba] Enable")
    door(139, "SMB (NetBIOS)", False, "banner", smb_on, "[Samba] Enable")
    door(548, "AFP", False, "banner", setting(inputs.AFP_ENABLE), "[Appletalk] Enable")
    try:
        packages = read_packages(ctx.config)
    except Unknowable:
        packages = []
    for package in packages:
        for port, tls in package.web_ports:
            door(port, "%s web page" % package.name, tls, "http", package.enabled,
                 "qpkg.conf [%s] %s" % (package.section, "Web_SSL_Port" if tls else "Web_Port"))
    for published in ctx.containers.tcp_ports():
        if published.all_addresses:
            out.append((published.host_port, "container %s port %s" % (published.container,
                                                                        published.container_port or "?"),
                        None, "http", "published by a container (%s)" % published.source))
    return out


# ---------------------------------------------------------------- local fingerprints
def is_global_ipv6(text: str) -> bool:
    """Kernel "scope global": what a host can be reached on from outside its link (ULA excluded)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return (address.version == 6 and not (address.is_link_local or address.is_loopback or address.is_multicast
                                          or address.is_unspecified or address.is_site_local)
            and address not in ipaddress.ip_network("fc00::/7") and address.ipv4_mapped is None)


def local_probe_allowed(ctx: CheckContext) -> Tuple[bool, str]:
    """Connect to this NAS's own ports only on the live system, unless the settings say otherwise: a --root
    copy's addresses are somebody else's hosts on the machine checking it ([reachability] local_probe)."""
    mode = ctx.settings.get("reachability", "local_probe")
    if mode == "yes" or (mode == "auto" and ctx.root.is_live):
        return True, ""
    if mode == "no":
        return False, "not connecting to this NAS's own ports ([reachability] local_probe = no)"
    return False, ("not connecting to the addresses written in a --root tree (%s); set [reachability] local_probe "
                   "= yes when this machine is that NAS" % ctx.root.root)


def local_addresses(ctx: CheckContext, family: str) -> List[str]:
    """Where this NAS's own ports are fingerprinted: loopback and its LAN addresses; none when not allowed."""
    if not local_probe_allowed(ctx)[0]:
        return []
    lan = ctx.lan_addresses()
    if family == "ipv6":
        return ["::1"] + [a for a in lan if is_global_ipv6(a)]
    return ["127.0.0.1"] + [a for a in lan if ":" not in a]


def local_fingerprints(targets: List[Target], addresses: List[str]) -> Dict[int, List[Dict[str, Any]]]:
    """Fingerprint each target's local port on every local address, in parallel; keyed by local port."""
    jobs = sorted({(t.local, t.tls, t.probe) for t in targets}, key=str)
    work = [(address, port, tls, probe) for port, tls, probe in jobs for address in addresses]
    out: Dict[int, List[Dict[str, Any]]] = {}
    if not work:
        return out
    with ThreadPoolExecutor(max_workers=min(16, len(work))) as pool:
        results = list(pool.map(lambda w: fingerprint_local(w[0], w[1], tls=w[2], probe=w[3],
                                                            timeout=LOCAL_TIMEOUT), work))
    for result in results:
        out.setdefault(result["port"], []).append(result)
    return out


def _detected_tls(target: Target, local: Dict[int, List[Dict[str, Any]]]) -> bool:
    if target.tls is not None:
        return target.tls
    return any((fp.get("tls") or {}).get("sha256") for fp in local.get(target.local, []))


# ---------------------------------------------------------------- one callback per family
@dataclass
class FamilyRun:
    family: str
    answer: Optional[ProbeAnswer] = None
    error: Optional[str] = None
    unreachable: bool = False
    verdicts: List[Dict[str, Any]] = field(default_factory=list)
    requests: int = 0  # callback requests made (ports are asked MAX_PORTS at a time)


@dataclass
class ReachabilityRun:
    targets: List[Target]
    dropped: List[Target]
    families: List[FamilyRun]
    local: Dict[str, Dict[int, List[Dict[str, Any]]]]
    notes: List[str] = field(default_factory=list)
    mappings_known: bool = False
    local_skipped: str = ""  # why this NAS's own ports were not fingerprinted (nothing to compare answers with)
    nat_doubt: str = ""  # why "nothing reaches the NAS" cannot be trusted (double NAT, CGNAT, another path out)


def _judge(target: Target, remote: Dict[str, Any], local: List[Dict[str, Any]], family: str,
           port: int) -> Dict[str, Any]:
    verdict: Dict[str, Any] = {"port": port, "local_port": target.local, "service": target.service,
                               "category": target.category, "family": family, "asked_because": target.sources,
                               "remote": _brief(remote)}
    if remote["state"] != "open":
        verdict["state"] = remote["state"]
        return verdict
    for fp in local:
        if fp["state"] == "open":
            why = compare(fp, remote)
            if why:
                verdict.update(state=VERIFIED, matched_by=why, matched_local=fp["address"])
                return verdict
    verdict["state"] = UNVERIFIED
    verdict["local"] = [dict(_brief(fp), address=fp["address"]) for fp in local][:4]
    return verdict


def _brief(fp: Dict[str, Any]) -> Dict[str, Any]:
    out = {"state": fp.get("state")}
    for key in ("tls", "http", "banner", "error"):
        if fp.get(key):
            value = fp[key]
            out[key] = {k: v for k, v in value.items() if k != "names"} if isinstance(value, dict) else value
    return out


def reachability_run(ctx: CheckContext) -> ReachabilityRun:
    """Ask the prober once per address family (``CheckContext.reachability`` caches it for the run)."""
    from exposure_guard.probeclient import MAX_BATCHES, MAX_PORTS, PortAsk, ProberError, ProberUnreachable, ask

    settings = ctx.settings
    url = settings.get("reachability", "prober_url")
    targets, dropped = plan_targets(ctx)
    run = ReachabilityRun(targets, dropped, [], {}, mappings_known=nas_mappings(ctx) is not None)
    if dropped:
        run.notes.append("only %d ports are asked per check (%d requests of %d); not asked: %s"
                         % (MAX_PORTS * MAX_BATCHES, MAX_BATCHES, MAX_PORTS,
                            ", ".join("%d (%s)" % (t.external, t.service) for t in dropped)))
    families = ["ipv4"]
    if any(is_global_ipv6(a) for a in ctx.lan_addresses()):
        families.append("ipv6")
    else:
        run.notes.append("IPv6 not asked: this NAS has no global IPv6 address")
    run.local_skipped = local_probe_allowed(ctx)[1]
    if run.local_skipped:
        run.notes.append(run.local_skipped)
    for family in families:
        local = local_fingerprints(targets, local_addresses(ctx, family))
        run.local[family] = local
        # Over IPv6 there is no NAT: the prober reaches the NAS's own address, so ask the local ports.
        asked: Dict[int, Target] = {}
        for target in targets:
            asked.setdefault(target.external if family == "ipv4" else target.local, target)
        ports = [PortAsk(port, _detected_tls(t, local), t.probe) for port, t in asked.items()]
        result = FamilyRun(family)
        run.families.append(result)
        for index in range(0, len(ports), MAX_PORTS):
            batch = ports[index:index + MAX_PORTS]
            try:
                # The router's WAN-side UPnP test runs once, with the first (most important) ports.
                answer = ask(url, batch, family=family, token=settings.get("reachability", "token"),
                             timeout=settings.get("reachability", "timeout"),
                             ca_file=settings.get("reachability", "ca_file"), upnp=index == 0)
            except (ProberUnreachable, ProberError) as exc:
                if result.answer is None:
                    result.error, result.unreachable = str(exc), isinstance(exc, ProberUnreachable)
                else:
                    run.notes.append("%s: ports %s not asked: the prober's answer to the next request: %s" % (
                        family, ", ".join(str(p.port) for p in ports[index:]), exc))
                break
            result.requests += 1
            if result.answer is None:
                result.answer = answer
                continue
            if answer.observed_address != result.answer.observed_address:
                run.notes.append("%s: the prober saw this NAS as %s, then as %s: its public address changed "
                                 "during the check" % (family, result.answer.observed_address,
                                                       answer.observed_address))
            result.answer.ports.update(answer.ports)
        if result.answer is None:
            continue
        for port, target in asked.items():
            if port in result.answer.ports:
                result.verdicts.append(_judge(target, result.answer.ports[port], local.get(target.local, []),
                                              family, port))
    run.notes += _nat_notes(ctx, run)
    run.nat_doubt = "; ".join(n for n in run.notes if n.startswith(NAT_NOTE_PREFIXES))
    return run


NAT_NOTE_PREFIXES = ("CGNAT:", "double NAT:", "the router says its external address",
                     "the router's IGD reports no external address")


def _nat_notes(ctx: CheckContext, run: ReachabilityRun) -> List[str]:
    """Where the address the prober probed is not the router's own WAN address: carrier-grade NAT, another
    router in front (double NAT), or another way out (VPN, proxy). Then "nothing answered" says nothing
    about what the router forwards, and the checks say unknown instead of pass."""
    external = ctx.router.external_ip if ctx.router is not None else None
    seen = [f.answer.observed_address for f in run.families if f.answer and f.family == "ipv4"]
    if not seen:
        return []
    if not external:
        if ctx.router is not None and ctx.router.audit.readable:
            return ["the router's IGD reports no external address (miniupnpd does so when its WAN address is private "
                    "or reserved, i.e. another NAT is in front of it); the internet sees %s" % seen[0]]
        return []
    try:
        router_ip, observed = ipaddress.ip_address(str(external)), ipaddress.ip_address(seen[0])
    except ValueError:
        return []
    if router_ip == observed:
        return []
    if router_ip in CGNAT:
        return ["CGNAT: the router's WAN address %s is in the carrier-grade NAT range 100.64.0.0/10; the internet "
                "sees %s. Port forwards on your router do not reach the internet unless the provider forwards too."
                % (router_ip, observed)]
    if any(router_ip in net for net in RFC1918):
        return ["double NAT: the router's WAN address %s is private and the internet sees %s; another router "
                "or modem in front of it decides what is reachable" % (router_ip, observed)]
    return ["the router says its external address is %s but the prober saw %s: another NAT, a proxy or a VPN "
            "is on the way out" % (router_ip, observed)]


