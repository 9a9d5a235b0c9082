"""``admin.*``: the System Administration web UI — its ports, HTTPS, and the certificate it serves."""

from __future__ import annotations

from typing import Any, Dict, List

from exposure_guard.checks.references import ADVISORY_2022, QSNATCH, SECURITY_GUIDE
from exposure_guard.checks.registry import Outcome, check, failed, passed, unknown
from exposure_guard.context import CheckContext
from exposure_guard.facts import inputs
from exposure_guard.facts.ports import admin_ports


@check(
    "admin.default-ports",
    title="System Administration runs on the default ports 8080/443",
    severity="medium",
    family="local",
    rationale="""
Bots sweep the internet for 8080 and 443 and try known QTS exploits and passwords there. A non-default
port is no protection on its own, but it takes the NAS out of the cheapest mass scans.""",
    remediation="""
Control Panel > System > General Settings > System Administration: set "System port" and "HTTPS port"
to unused high ports (not 80, 443, 8080, 8081). ExposureGuard never changes ports itself: doing it
remotely could lock you out.""",
    reads=(inputs.ADMIN_HTTP_PORT, inputs.ADMIN_HTTPS_PORT, inputs.HTTPS_ENABLE, "/proc/net/tcp{,6} listeners"),
    references=(QSNATCH, ADVISORY_2022),
)
def default_ports(ctx: CheckContext) -> Outcome:
    http = ctx.read(inputs.ADMIN_HTTP_PORT)
    https = ctx.read(inputs.ADMIN_HTTPS_PORT)
    https_on = ctx.read(inputs.HTTPS_ENABLE).as_bool() is not False
    http_port, https_port = http.as_port(), https.as_port()
    evidence = {"http": dict(http.evidence(), **ctx.listeners.evidence(http_port or 8080)),
                "https": dict(https.evidence(), **ctx.listeners.evidence(https_port or 443)),
                "https_enabled": https_on}
    if http_port is None or https_port is None:
        return unknown("the admin port setting is not a port number", evidence)
    defaults = []
    if http_port == 8080:
        defaults.append("HTTP 8080")
    if https_on and https_port == 443:
        defaults.append("HTTPS 443")
    if defaults:
        return failed("System Administration listens on the default " + " and ".join(defaults), evidence)
    return passed("System Administration uses non-default ports (HTTP %d, HTTPS %d)" % (http_port, https_port),
                  evidence)


@check(
    "admin.https",
    title="Admin access is not HTTPS-only",
    severity="high",
    family="local",
    rationale="""
Without HTTPS, admin passwords and session cookies cross the network in clear text; without "Force
secure connection (HTTPS) only", the HTTP port stays open next to HTTPS.""",
    remediation="""
Control Panel > System > General Settings > System Administration: tick "Enable secure connection
(HTTPS)" and then "Force secure connection (HTTPS) only". Do it from the LAN; ExposureGuard never
changes it for you.""",
    reads=(inputs.HTTPS_ENABLE, inputs.FORCE_SSL),
    references=(SECURITY_GUIDE,),
)
def admin_https(ctx: CheckContext) -> Outcome:
    enable = ctx.read(inputs.HTTPS_ENABLE)
    force = ctx.read(inputs.FORCE_SSL)
    evidence = {"https_enable": enable.evidence(), "force_ssl": force.evidence()}
    on, forced = enable.as_bool(), force.as_bool()
    if on is None or forced is None:
        return unknown("HTTPS settings have unrecognised values", evidence)
    if not on:
        return failed("HTTPS is off: the admin login travels in clear text", evidence, severity="high")
    if not forced:
        return failed("HTTPS is on but not forced: plain HTTP admin stays available", evidence, severity="medium")
    return passed("admin access is HTTPS only", evidence)


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
    # The TLS client pulls in ssl: imported here, so a local-only run starts fast.
    from exposure_guard.contracts.fingerprint import fingerprint_local
    from exposure_guard.facts.reachability import LOCAL_TIMEOUT, local_addresses, local_probe_allowed

    admin = admin_ports(ctx.config)
    port = admin.https
    if not admin.https_enabled:
        return passed("HTTPS admin is off ([Stunnel] Enable = 0): no certificate is served", {"port": port})
    allowed, why_not = local_probe_allowed(ctx)
    if not allowed:
        return unknown(why_not, {"port": port})
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
                    "CN", "?"), evidence)
            outside = _seen_from_outside(ctx, fp["tls"]["sha256"])
            if outside:
                evidence["seen_from_internet"] = outside
                return failed("the factory 'QNAP NAS' certificate is served on HTTPS admin port %d, and the internet "
                              "sees it (%s)" % (port, ", ".join(outside)), evidence, severity="medium")
            return failed("HTTPS admin port %d serves the factory self-signed '%s' certificate"
                          % (port, (names.get("subject") or {}).get("CN", "QNAP NAS")), evidence)
    return unknown("no TLS certificate could be read from the HTTPS admin port %d" % port, {"port": port, "tried": seen})


def _seen_from_outside(ctx: CheckContext, sha256: str) -> List[str]:
    """Where the callback saw the same certificate from the internet (nothing without a prober)."""
    if not ctx.prober_configured:
        return []
    out = []
    for f in ctx.reachability.families:
        for result in (f.answer.ports.values() if f.answer else []):
            if (result.get("tls") or {}).get("sha256") == sha256:
                out.append("%s port %d" % (f.answer.observed_address if f.answer else "?", result["port"]))
    return out
