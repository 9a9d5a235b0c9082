"""Reachability checks: a prober on the internet connects back to this NAS's public address, and the
agent compares what answered there with what its own services say locally.

One callback per address family serves all checks of a run (``ctx.shared["reachability.run"]``):
``reachability.admin`` and ``reachability.services`` (what answers, and whether it is *this* NAS),
``router.upnp-wan-exposed`` (the prober's WAN-side UPnP test) and, locally, ``admin.default-cert``.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from exposure_guard.checks.context import CheckContext
from exposure_guard.checks.evidence import Unknowable, read_key
from exposure_guard.checks.local import ADVISORY_2022, SECURE_ACCESS, UPNP_ADVISORY, admin_ports
from exposure_guard.checks.registry import Outcome, check, failed, passed, skipped, unknown
from exposure_guard.fingerprint import compare, fingerprint_local
from exposure_guard.qts.root import ULINUX_CONF

if TYPE_CHECKING:
    from exposure_guard.probeclient import ProbeAnswer

# probeclient pulls in requests: imported where the callback runs, so local-only runs start fast.

UPNPROXY = "https://www.akamai.com/blog/security/upnproxy-eternalsilence"
LOCAL_TIMEOUT = 2.0
VERIFIED, UNVERIFIED = "verified", "open-unverified"
CGNAT = ipaddress.ip_network("100.64.0.0/10")
RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


# ---------------------------------------------------------------- what to ask about
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


def _port(ctx: CheckContext, section: str, key: str, default: str) -> Tuple[Optional[int], str]:
    try:
        found = read_key(ctx, ULINUX_CONF, section, key, default)
    except Unknowable:
        return (int(default) if default.isdigit() else None), "default (uLinux.conf unreadable)"
    where = "[%s] %s" % (section, key) + ("" if found.value is not None else " (default)")
    return found.as_port(), where


def _mapping_fields(mapping: Any) -> Optional[Dict[str, Any]]:
    """The fields of a router mapping, read defensively (PortMapping object or dict)."""
    def get(name: str) -> Any:
        return mapping.get(name) if isinstance(mapping, dict) else getattr(mapping, name, None)

    try:
        external, internal = int(get("external_port")), int(get("internal_port") or get("external_port"))
    except (TypeError, ValueError):
        return None
    protocol = str(get("protocol") or "TCP").upper()
    if protocol != "TCP" or get("enabled") is False or not (0 < external < 65536 and 0 < internal < 65536):
        return None
    client = str(get("internal_client") or "")
    text = "UPnP %s %d → %s:%d" % (protocol, external, client, internal)
    if get("description"):
        text += " (%s)" % str(get("description"))[:60]
    return {"external": external, "internal": internal, "client": client, "text": text}


def nas_mappings(ctx: CheckContext) -> Optional[List[Dict[str, Any]]]:
    """TCP mappings the router holds to this NAS; None when the router's table was not read."""
    if "router.mappings" not in ctx.shared and "router.nas_mappings" not in ctx.shared:
        try:  # `--only reachability.*`: let the router audit run now (it decides whether it may search)
            from exposure_guard.checks import router

            audit = getattr(router, "router_audit", None)
            if audit is not None:
                audit(ctx)
        except Exception:
            pass
    raw = ctx.shared.get("router.nas_mappings")
    if raw is None:
        raw = ctx.shared.get("router.mappings")
        if raw is None:
            return None
        mine = set(_lan_addresses(ctx))
        fields = [_mapping_fields(m) for m in raw]
        return [f for f in fields if f and (not mine or f["client"] in mine)]
    return [f for f in (_mapping_fields(m) for m in raw) if f]


def plan_targets(ctx: CheckContext) -> Tuple[List[Target], List[Target]]:
    """(targets asked, targets dropped by the 16-port cap), most important first."""
    from exposure_guard.probeclient import MAX_PORTS

    try:
        admin = admin_ports(ctx)
    except Unknowable:
        admin = {"http": 8080, "https": 443, "https_enabled": True}
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

    add(admin["http"], admin["http"], "admin HTTP", "admin", False, "[System] Web Access Port")
    add(admin["https"], admin["https"], "admin HTTPS", "admin", True, "[Stunnel] Port")
    for section, key, local, service, tls in (("System", "ExtPort", admin["http"], "admin HTTP", False),
                                              ("Stunnel", "ExtSSLPort", admin["https"], "admin HTTPS", True)):
        ext, where = _port(ctx, section, key, "0")
        add(ext, local, service, "admin", tls, "myQNAPcloud router port " + where)
    mappings = nas_mappings(ctx) or []
    admin_local = {admin["http"]: ("admin HTTP", False), admin["https"]: ("admin HTTPS", True)}
    for m in mappings:
        if m["internal"] in admin_local:
            service, tls = admin_local[m["internal"]]
            add(m["external"], m["internal"], service, "admin", tls, "router UPnP mapping", mapping=m["text"])
    ssh, where = _port(ctx, "LOGIN", "SSH Port", "22")
    add(ssh, ssh, "SSH", "service", False, where, probe="banner")
    for m in mappings:
        if m["internal"] not in admin_local:
            kind = ("SSH", "banner") if m["internal"] == ssh else ("port %d" % m["internal"], "http")
            add(m["external"], m["internal"], kind[0], "service", None, "router UPnP mapping", probe=kind[1],
                mapping=m["text"])
    ftp, where = _port(ctx, "FTP", "Port", "21")
    add(ftp, ftp, "FTP", "service", False, where, probe="banner")
    web, where = _port(ctx, "QWEB", "Port", "80")
    add(web, web, "Web Server HTTP", "service", False, where)
    web_ssl, where = _port(ctx, "QWEB", "SSL_PORT", "8081")
    add(web_ssl, web_ssl, "Web Server HTTPS", "service", True, where)
    for section, key, local, service, tls in (("QWEB", "ExtPort", web, "Web Server HTTP", False),
                                              ("QWEB", "ExtSSLPort", web_ssl, "Web Server HTTPS", True)):
        ext, where = _port(ctx, section, key, "0")
        add(ext, local, service, "service", tls, "myQNAPcloud router port " + where)
    targets = list(found.values())
    return targets[:MAX_PORTS], targets[MAX_PORTS:]


# ---------------------------------------------------------------- local fingerprints
def _lan_addresses(ctx: CheckContext) -> List[str]:
    try:
        return list(ctx.identity.lan_addresses)
    except Exception:
        return []


def is_global_ipv6(text: str) -> bool:
    """Kernel "scope global": what a host can be reached on from outside its link (ULA excluded)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return (address.version == 6 and not (address.is_link_local or address.is_loopback or address.is_multicast
                                          or address.is_unspecified or address.is_site_local)
            and address not in ipaddress.ip_network("fc00::/7") and address.ipv4_mapped is None)


def local_addresses(ctx: CheckContext, family: str) -> List[str]:
    lan = _lan_addresses(ctx)
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


@dataclass
class ReachabilityRun:
    targets: List[Target]
    dropped: List[Target]
    families: List[FamilyRun]
    local: Dict[str, Dict[int, List[Dict[str, Any]]]]
    notes: List[str] = field(default_factory=list)
    mappings_known: bool = False


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
    """Ask the prober once per address family (cached for the run). Raises Unknowable on planning errors."""
    from exposure_guard.probeclient import MAX_PORTS, PortAsk, ProberError, ProberUnreachable, ask

    if "reachability.run" in ctx.shared:
        return ctx.shared["reachability.run"]
    settings = ctx.settings
    url = settings.get("reachability", "prober_url")
    targets, dropped = plan_targets(ctx)
    run = ReachabilityRun(targets, dropped, [], {}, mappings_known=nas_mappings(ctx) is not None)
    if dropped:
        run.notes.append("only %d ports can be asked per callback; not asked: %s"
                         % (MAX_PORTS, ", ".join("%d (%s)" % (t.external, t.service) for t in dropped)))
    families = ["ipv4"]
    if any(is_global_ipv6(a) for a in _lan_addresses(ctx)):
        families.append("ipv6")
    else:
        run.notes.append("IPv6 not asked: this NAS has no global IPv6 address")
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
        try:
            result.answer = ask(url, ports, family=family, token=settings.get("reachability", "token"),
                                timeout=settings.get("reachability", "timeout"),
                                ca_file=settings.get("reachability", "ca_file"), upnp=True)
        except ProberUnreachable as exc:
            result.error, result.unreachable = str(exc), True
            continue
        except ProberError as exc:
            result.error = str(exc)
            continue
        for port, target in asked.items():
            result.verdicts.append(_judge(target, result.answer.ports[port], local.get(target.local, []),
                                          family, port))
    run.notes += _nat_notes(ctx, run)
    ctx.shared["reachability.run"] = run
    return run


def _nat_notes(ctx: CheckContext, run: ReachabilityRun) -> List[str]:
    external = ctx.shared.get("router.external_ip")
    seen = [f.answer.observed_address for f in run.families if f.answer and f.family == "ipv4"]
    if not external or not seen:
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


# ---------------------------------------------------------------- verdicts → outcomes
def _prober_configured(ctx: CheckContext) -> bool:
    return bool(ctx.settings.get("reachability", "prober_url"))


def _forward_kind(verdict: Dict[str, Any], run: ReachabilityRun, targets: Dict[int, Target],
                  nas_ipv4: Optional[str]) -> str:
    if verdict["family"] == "ipv6":
        return "over IPv6 (no NAT: the router's IPv6 firewall lets it in, or there is none)"
    target = targets.get(verdict["port"])
    if target is not None and target.mappings:
        return "through the router's UPnP mapping %s" % "; ".join(target.mappings)
    if run.mappings_known:
        local = target.local if target is not None else verdict["port"]
        rule = "external TCP %d -> %s:%d" % (verdict["port"], nas_ipv4 or "this NAS", local)
        return ("through a port forward that is NOT a UPnP mapping (a static rule on the router, or a DMZ host): "
                "remove it in the router's port-forwarding settings (%s)" % rule)
    return "through a router port forward (the router's UPnP table was not read, so its kind is unknown)"


def _evaluate(ctx: CheckContext, category: str) -> Outcome:
    if not _prober_configured(ctx):
        return skipped("no callback prober configured ([reachability] prober_url is empty)")
    run = reachability_run(ctx)
    by_port = {t.external: t for t in run.targets}
    by_port.update({t.local: t for t in run.targets if t.local not in by_port})
    verdicts = [v for f in run.families for v in f.verdicts if v["category"] == category]
    evidence: Dict[str, Any] = {
        "ports": verdicts,
        "observed_addresses": {f.family: f.answer.observed_address for f in run.families if f.answer},
        "families": {f.family: ("asked" if f.answer else ("not reachable: " if f.unreachable else "failed: ")
                                + (f.error or "")) for f in run.families},
    }
    if run.notes:
        evidence["notes"] = run.notes
    verified = [v for v in verdicts if v["state"] == VERIFIED]
    unverified = [v for v in verdicts if v["state"] == UNVERIFIED]
    nas_ipv4 = next((a for a in _lan_addresses(ctx) if ":" not in a), None)
    for v in verified:
        v["forwarded"] = _forward_kind(v, run, by_port, nas_ipv4)
    note = (" (" + "; ".join(run.notes) + ")") if any("NAT" in n for n in run.notes) else ""
    if verified:
        names = ", ".join("%s %s:%d %s" % (v["service"], v["family"], v["port"], v["forwarded"]) for v in verified)
        severity = "critical" if category == "admin" or any(v["service"] == "SSH" for v in verified) else "high"
        return failed("the internet reaches this NAS's %s: %s%s" % (
            "admin service" if category == "admin" else "services", names, note), severity=severity, **evidence)
    if unverified:
        names = ", ".join("%s:%d" % (v["family"], v["port"]) for v in unverified)
        return failed("something else answers on your public address on port(s) %s (expected %s of this NAS): "
                      "not proven to be this NAS, e.g. the router's own page or another device%s"
                      % (names, ", ".join(sorted({v["service"] for v in unverified})), note),
                      severity="high" if category == "admin" else "medium", **evidence)
    v4 = [f for f in run.families if f.family == "ipv4"]
    failed_families = [f for f in run.families if f.answer is None and not (f.unreachable and f.family == "ipv6")]
    if failed_families or not v4 or v4[0].answer is None:
        reasons = "; ".join("%s: %s" % (f.family, f.error) for f in failed_families or v4)
        return unknown("the callback prober could not tell: %s" % reasons, reason=reasons, **evidence)
    asked = ", ".join(sorted({"%d" % v["port"] for v in verdicts}, key=int)) or "none"
    return passed("the internet does not reach the %s (ports %s closed or filtered from outside)%s" % (
        "admin service" if category == "admin" else "other services", asked, note), **evidence)


@check(
    "reachability.admin",
    title="The NAS admin service is reachable from the internet",
    severity="critical",
    family="reachability",
    rationale="""
QNAP's Security Counselor warns "The System Administration service can be directly accessible from an
external IP address"; DeadBolt, Qlocker and eCh0raix went through exactly that. Only a probe from outside
can tell, and only a probe whose answer is compared with the NAS's own (same TLS certificate, same HTTP
answer) can tell this NAS apart from the router's own admin page on the same public address.""",
    remediation="""
Remove what forwards the admin ports: the router's UPnP mapping (`exposure-guard fix --only
router.upnp-mappings`, and untick myQNAPcloud > Auto Router Configuration > "Enable UPnP Port
Forwarding"), or the static port-forwarding / DMZ rule in the router's own settings. Over IPv6, close the
router's IPv6 firewall pinhole. Use myQNAPcloud Link or a VPN for remote access.""",
    reads=("callback prober ([reachability] prober_url): open/closed/filtered, TLS leaf SHA-256 and HTTP "
           "fingerprint of the admin ports on this NAS's public IPv4 and IPv6 addresses",
           "the same fingerprints taken locally through loopback and the LAN address",
           "/etc/config/uLinux.conf [System] Web Access Port, [Stunnel] Port, ExtPort/ExtSSLPort",
           "the router's UPnP mappings to this NAS (router.upnp-mappings)"),
    references=(ADVISORY_2022, SECURE_ACCESS),
    exposure=True,
    network=True,
)
def reachability_admin(ctx: CheckContext) -> Outcome:
    return _evaluate(ctx, "admin")


@check(
    "reachability.services",
    title="Other NAS services are reachable from the internet",
    severity="high",
    family="reachability",
    rationale="""
SSH, FTP and web server ports reachable from the internet are brute-forced around the clock and are how
QSnatch and several ransomware families got in. Whatever the router forwards to the NAS counts.""",
    remediation="""
Remove the router's port forwards / UPnP mappings of those services; keep SSH and FTP LAN-only and use a
VPN (QVPN, the router's VPN) for remote access.""",
    reads=("callback prober: SSH/FTP banners and HTTP fingerprints of the NAS's service ports and of every port "
           "the router maps to this NAS, over IPv4 and IPv6",
           "/etc/config/uLinux.conf [LOGIN] SSH Port, [FTP] Port, [QWEB] Port/SSL_PORT/ExtPort/ExtSSLPort"),
    references=(ADVISORY_2022, SECURE_ACCESS),
    exposure=True,
    network=True,
)
def reachability_services(ctx: CheckContext) -> Outcome:
    return _evaluate(ctx, "service")


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
    if not _prober_configured(ctx):
        return skipped("no callback prober configured ([reachability] prober_url is empty)")
    run = reachability_run(ctx)
    tested = [f for f in run.families if f.answer is not None and f.answer.upnp is not None]
    evidence: Dict[str, Any] = {f.family: dict(f.answer.upnp or {}, address=f.answer.observed_address)
                                for f in tested if f.answer}
    if run.notes:
        evidence["notes"] = run.notes
    exposed = [f for f in tested if f.answer and (f.answer.upnp or {}).get("exposed")]
    if exposed:
        parts = []
        for f in exposed:
            upnp = f.answer.upnp if f.answer else {}
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
                      **evidence)
    if not tested:
        reasons = "; ".join("%s: %s" % (f.family, f.error or "no UPnP result") for f in run.families)
        return unknown("the prober's WAN-side UPnP test did not run: %s" % reasons, reason=reasons, **evidence)
    errors = [f.answer.upnp.get("error") for f in tested if f.answer and f.answer.upnp and f.answer.upnp.get("error")]
    if errors:
        return unknown("the WAN-side UPnP test was incomplete: %s" % "; ".join(errors), **evidence)
    return passed("no UPnP answer from the public address (SSDP and IGD description tried from outside)", **evidence)


# ---------------------------------------------------------------- the factory certificate
def is_factory_certificate(names: Dict[str, Any]) -> bool:
    """QTS's factory certificate is self-signed with the NAS's generic name ("QNAP NAS", O=QNAP Systems).
    Heuristic (the exact fields vary by firmware): self-signed and CN or O names QNAP."""
    subject = names.get("subject") or {}
    if not names.get("self_signed"):
        return False
    common, org = subject.get("CN", "").lower(), subject.get("O", "").lower()
    return "qnap nas" in common or ("qnap" in org and ("qnap" in common or not common))


@check(
    "admin.default-cert",
    title="HTTPS admin serves the factory 'QNAP NAS' certificate",
    severity="low",
    family="reachability",
    rationale="""
The factory self-signed certificate is the same kind on every NAS: browsers cannot tell the real NAS from
an impostor, so users learn to click through certificate warnings, and scanners fingerprint QNAP devices
by it ('QNAP NAS' in the certificate). Worse when the HTTPS admin port is reachable from the internet.""",
    remediation="""
Control Panel > Security > SSL Certificate & Private Key: replace it (Let's Encrypt, your own CA, or a
purchased certificate). Keep the admin service off the internet either way.""",
    reads=("TLS leaf certificate served on the HTTPS admin port ([Stunnel] Port) through loopback / the LAN "
           "address: subject, issuer, self-signed", "callback prober: the same certificate seen from outside"),
    references=(ADVISORY_2022,),
    network=True,
)
def default_cert(ctx: CheckContext) -> Outcome:
    admin = admin_ports(ctx)
    port = admin["https"]
    if not admin["https_enabled"]:
        return passed("HTTPS admin is off ([Stunnel] Enable = 0): no certificate is served", port=port)
    seen: List[Dict[str, Any]] = []
    for address in local_addresses(ctx, "ipv4")[:3]:
        fp = fingerprint_local(address, port, tls=True, timeout=LOCAL_TIMEOUT)
        seen.append({"address": address, "state": fp["state"], "tls": fp.get("tls")})
        if fp["state"] == "open" and (fp.get("tls") or {}).get("sha256"):
            names = fp["tls"].get("names") or {}
            evidence = {"port": port, "address": address, "sha256": fp["tls"]["sha256"],
                        "subject": names.get("subject"), "issuer": names.get("issuer"),
                        "self_signed": names.get("self_signed")}
            if not is_factory_certificate(names):
                return passed("HTTPS admin serves its own certificate (CN=%s)" % (names.get("subject") or {}).get(
                    "CN", "?"), **evidence)
            outside = _seen_from_outside(ctx, port, fp["tls"]["sha256"])
            if outside:
                evidence["seen_from_internet"] = outside
                return failed("the factory 'QNAP NAS' certificate is served on HTTPS admin port %d, and the internet "
                              "sees it (%s)" % (port, ", ".join(outside)), severity="medium", **evidence)
            return failed("HTTPS admin port %d serves the factory self-signed '%s' certificate"
                          % (port, (names.get("subject") or {}).get("CN", "QNAP NAS")), **evidence)
    return unknown("no TLS certificate could be read from the HTTPS admin port %d" % port, port=port, tried=seen)


def _seen_from_outside(ctx: CheckContext, port: int, sha256: str) -> List[str]:
    if not _prober_configured(ctx) or "reachability.run" not in ctx.shared:
        return []
    run: ReachabilityRun = ctx.shared["reachability.run"]
    out = []
    for f in run.families:
        for result in (f.answer.ports.values() if f.answer else []):
            if (result.get("tls") or {}).get("sha256") == sha256:
                out.append("%s port %d" % (f.answer.observed_address if f.answer else "?", result["port"]))
    return out
