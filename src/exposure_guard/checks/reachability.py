"""``reachability.*``: does the internet reach this NAS? A prober outside connects back to its public
address (facts/reachability.py) and the agent compares what answered with its own services, so the
router's own page on the same address is never taken for the NAS."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

from exposure_guard.checks.references import ADVISORY_2022, SECURE_ACCESS
from exposure_guard.checks.registry import Outcome, check, failed, passed, skipped, unknown
from exposure_guard.context import NO_PROBER, CheckContext
from exposure_guard.contracts import UNVERIFIED, VERIFIED

if TYPE_CHECKING:
    from exposure_guard.facts.reachability import ReachabilityRun, Target


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


def _forwarded_to_nas(target: Optional[Target]) -> bool:
    """True when the router is known to forward this port to the NAS (a UPnP mapping, or a port ARC recorded)."""
    return target is not None and (bool(target.mappings) or any(s.startswith("myQNAPcloud router port")
                                                                 for s in target.sources))


def _evaluate(ctx: CheckContext, category: str) -> Outcome:
    if not ctx.prober_configured:
        return skipped(NO_PROBER)
    run = ctx.reachability
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
    forwarded_here = [v for v in verdicts if v["state"] == UNVERIFIED and v["family"] == "ipv4"
                      and _forwarded_to_nas(by_port.get(v["port"]))]
    unverified = [v for v in verdicts if v["state"] == UNVERIFIED and v not in forwarded_here]
    nas_ipv4 = next((a for a in ctx.lan_addresses() if ":" not in a), None)
    for v in verified:
        v["forwarded"] = _forward_kind(v, run, by_port, nas_ipv4)
    note = (" (" + "; ".join(run.notes) + ")") if any("NAT" in n for n in run.notes) else ""
    if verified:
        names = ", ".join("%s %s:%d %s" % (v["service"], v["family"], v["port"], v["forwarded"]) for v in verified)
        severity = "critical" if category == "admin" or any(v["service"] == "SSH" for v in verified) else "high"
        return failed("the internet reaches this NAS's %s: %s%s" % (
            "admin service" if category == "admin" else "services", names, note), evidence, severity=severity)
    if unverified:
        names = ", ".join("%s:%d" % (v["family"], v["port"]) for v in unverified)
        doubt = ("not compared with this NAS: " + run.local_skipped if run.local_skipped
                 else "not proven to be this NAS, e.g. the router's own page or another device")
        return failed("something %sanswers on your public address on port(s) %s (expected %s of this NAS): %s%s"
                      % ("" if run.local_skipped else "else ", names,
                         ", ".join(sorted({v["service"] for v in unverified})), doubt, note),
                      evidence, severity="high" if category == "admin" else "medium")
    if forwarded_here:  # the router forwards these ports here, yet what answers is not this NAS
        names = ", ".join("%d" % v["port"] for v in forwarded_here)
        return unknown("cannot tell whether the internet reaches this NAS's %s: the router forwards port(s) %s to "
                       "this NAS, but what answers there from outside is not this NAS's service (the router's own "
                       "service on that port, or a hairpin rule)" % (
                           "admin service" if category == "admin" else "services", names), evidence)
    v4 = [f for f in run.families if f.family == "ipv4"]
    failed_families = [f for f in run.families if f.answer is None and not (f.unreachable and f.family == "ipv6")]
    if failed_families or not v4 or v4[0].answer is None:
        reasons = "; ".join("%s: %s" % (f.family, f.error) for f in failed_families or v4)
        return unknown("the callback prober could not tell: %s" % reasons, {"reason": reasons, **evidence})
    asked = ", ".join(sorted({"%d" % v["port"] for v in verdicts}, key=int)) or "none"
    if run.nat_doubt:
        return unknown("nothing answered from outside on ports %s, but that may not mean the %s is unreachable: %s"
                       % (asked, "admin service" if category == "admin" else "other services", run.nat_doubt),
                       evidence)
    return passed("the internet does not reach the %s (ports %s closed or filtered from outside)%s" % (
        "admin service" if category == "admin" else "other services", asked, note), evidence)


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
SSH, FTP, SMB and web server ports reachable from the internet are brute-forced around the clock and are how
QSnatch, Checkmate (SMB) and DeadBolt's Photo Station wave got in. Whatever the router forwards to the NAS
counts, and so does every app page and container port that listens on it.""",
    remediation="""
Remove the router's port forwards / UPnP mappings of those services; keep SSH and FTP LAN-only and use a
VPN (QVPN, the router's VPN) for remote access.""",
    reads=("callback prober: banners and HTTP fingerprints of the NAS's service ports and of every port the router "
           "maps to this NAS, over IPv4 and IPv6, 16 ports per request and up to 4 requests per family",
           "/etc/config/uLinux.conf [LOGIN] SSH Port, [FTP] Port, [QWEB] Port/SSL_PORT/ExtPort/ExtSSLPort",
           "the other doors that listen here (/proc/net/tcp{,6}): Telnet, SMB 445/139, AFP 548, installed apps' "
           "Web_Port/Web_SSL_Port (qpkg.conf), ports published by containers"),
    references=(ADVISORY_2022, SECURE_ACCESS),
    exposure=True,
    network=True,
)
def reachability_services(ctx: CheckContext) -> Outcome:
    return _evaluate(ctx, "service")
