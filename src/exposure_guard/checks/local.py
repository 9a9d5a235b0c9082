"""Checks that read the NAS's own settings (``/etc/config``) and what really listens (``/proc/net``)."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List

from exposure_guard.checks.context import CheckContext
from exposure_guard.checks.evidence import Unknowable, read_key
from exposure_guard.checks.firmware import assess_firmware
from exposure_guard.checks.registry import Outcome, check, failed, fixes, passed, unknown
from exposure_guard.qts.root import QNAPDDNS_CONF, ULINUX_CONF, UPNPC_CONF
from exposure_guard.qts.services import UPNPCD_COMMAND
from exposure_guard.remediation import Action, ConfigKeyAction, DaemonStopAction

ADVISORY_2022 = "https://www.qnap.com/en/security-news/2022/take-immediate-actions-to-stop-your-nas-from-exposing-to-the-internet-and-fight-against-ransomware-together"
UPNP_ADVISORY = "https://www.qnap.com/en/security-news/2022/qnap-nas-security-disable-upnp-port-forwarding-on-routers"
QSNATCH = "https://www.qnap.com/en/security-advisory/nas-201911-01"
SECURE_ACCESS = "https://www.qnap.com/go/solution/secure-remote-access/"
SECURITY_GUIDE = "https://www.qnap.com/en/security"
DISABLE_ADMIN = "https://www.qnap.com/en/how-to/faq/article/how-to-disable-the-admin-account"

# Telnet keys are not documented publicly (qts-settings.md: UNVERIFIED); QTS's UI default port is 13131.
TELNET_ENABLE = ("LOGIN", "TELNET Enable")
TELNET_PORT = ("LOGIN", "TELNET Port")
TELNET_DEFAULT_PORT = "13131"


def admin_ports(ctx: CheckContext) -> Dict[str, Any]:
    """The NAS's real admin ports from its settings (QTS defaults when absent). Shared with other families."""
    http = read_key(ctx, ULINUX_CONF, "System", "Web Access Port", "8080")
    https_on = read_key(ctx, ULINUX_CONF, "Stunnel", "Enable", "1")
    https = read_key(ctx, ULINUX_CONF, "Stunnel", "Port", "443")
    return {"http": http.as_port() or 8080, "https": https.as_port() or 443,
            "https_enabled": https_on.as_bool() is not False}


def management_ports(ctx: CheckContext) -> List[int]:
    """Ports whose exposure is critical: web admin HTTP/HTTPS and SSH (from settings, defaults otherwise)."""
    ports: List[int] = []
    try:
        found = admin_ports(ctx)
        ports += [found["http"], found["https"]]
    except Unknowable:
        ports += [8080, 443]
    try:
        ssh = read_key(ctx, ULINUX_CONF, "LOGIN", "SSH Port", "22").as_port() or 22
    except Unknowable:
        ssh = 22
    ports.append(ssh)
    return sorted(set(ports))


def _listening(ctx: CheckContext, port: int) -> Dict[str, Any]:
    return {"port": port, "listening": ctx.listeners.listening(port), "sockets": ctx.listeners.describe(port)}


# ---------------------------------------------------------------- myQNAPcloud Auto Router Configuration
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
    reads=("/etc/config/upnpc.conf [UPnP_Global] Enable (TRUE/FALSE, default FALSE)", "running process upnpcd"),
    references=(ADVISORY_2022, UPNP_ADVISORY, SECURE_ACCESS),
)
def upnp_forwarding(ctx: CheckContext) -> Outcome:
    enable = read_key(ctx, UPNPC_CONF, "UPnP_Global", "Enable", "FALSE", missing_file_ok=True)
    running = ctx.running("upnpcd")
    evidence = dict(enable.evidence(), upnpcd_running=running)
    on = enable.as_bool()
    if on is None:
        return unknown("[UPnP_Global] Enable has an unrecognised value %r" % enable.value, **evidence)
    if on or running:
        why = "Enable UPnP Port Forwarding is on" if on else "the UPnP port forwarding daemon upnpcd runs"
        return failed("%s: the NAS opens its ports on the router" % why, data={"running": running}, **evidence)
    return passed("UPnP port forwarding (Auto Router Configuration) is off", **evidence)


@fixes("myqnapcloud.upnp-forwarding")
def fix_upnp_forwarding(ctx: CheckContext, outcome: Outcome) -> List[Action]:
    actions: List[Action] = [
        ConfigKeyAction("myqnapcloud.upnp-forwarding", UPNPC_CONF, "UPnP_Global", "Enable", "FALSE"),
        DaemonStopAction("myqnapcloud.upnp-forwarding", "upnpcd", UPNPCD_COMMAND),
    ]
    if not ctx.offline:
        # Turning ARC off does not remove the mappings it already made on the router: remove those too.
        from exposure_guard.checks import router

        plan_removal = getattr(router, "plan_arc_mapping_removal", None)
        if plan_removal is not None:
            actions.extend(plan_removal(ctx))
    return actions


# ---------------------------------------------------------------- myQNAPcloud published services
EXT_PORT_KEYS = (
    ("System", "ExtPort", "admin HTTP"),
    ("Stunnel", "ExtSSLPort", "admin HTTPS"),
    ("QWEB", "ExtPort", "Web Server HTTP"),
    ("QWEB", "ExtSSLPort", "Web Server HTTPS"),
)


@check(
    "myqnapcloud.published-services",
    title="Router ports were opened for NAS services by myQNAPcloud",
    severity="high",
    family="local",
    rationale="""
When Auto Router Configuration has forwarded a service, QTS records the router-side port in
uLinux.conf (ExtPort / ExtSSLPort). A non-zero value means the router was told to publish that service
to the internet; admin ports there are what ransomware campaigns scan for.""",
    remediation="""
myQNAPcloud > Auto Router Configuration: untick every service under "Forwarded services" (and
"Published Services": untick every Publish box), then remove the matching forwards on the router.""",
    reads=tuple("/etc/config/uLinux.conf [%s] %s (router port for %s; 0 or absent = none)" % k for k in EXT_PORT_KEYS),
    references=(ADVISORY_2022, QSNATCH),
)
def published_services(ctx: CheckContext) -> Outcome:
    published: List[Dict[str, Any]] = []
    reads: List[Dict[str, Any]] = []
    for section, key, label in EXT_PORT_KEYS:
        value = read_key(ctx, ULINUX_CONF, section, key, "0")
        reads.append(value.evidence())
        port = value.as_port()
        if port:
            published.append({"service": label, "router_port": port, "section": section, "key": key})
    if published:
        names = ", ".join("%s on router port %d" % (p["service"], p["router_port"]) for p in published)
        admin = any(p["service"].startswith("admin") for p in published)
        return failed("router ports were opened for: " + names, severity="high" if admin else "medium",
                      published=published, keys=reads)
    return passed("no router ports are recorded as opened for NAS services", keys=reads)


# ---------------------------------------------------------------- myQNAPcloud DDNS
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
    reads=("/etc/config/qnapddns.conf [QNAP DDNS Service] Host Name, Domain Name Server",
           "/etc/config/upnpc.conf [UPnP_Global] Enable, /etc/config/uLinux.conf Ext*Port keys (aggravating)"),
    references=(ADVISORY_2022, SECURITY_GUIDE),
)
def ddns(ctx: CheckContext) -> Outcome:
    host = read_key(ctx, QNAPDDNS_CONF, "QNAP DDNS Service", "Host Name", None, missing_file_ok=True)
    domain = read_key(ctx, QNAPDDNS_CONF, "QNAP DDNS Service", "Domain Name Server", "myqnapcloud.com",
                      missing_file_ok=True)
    evidence = {"host_name": host.evidence(), "domain": domain.effective}
    name = (host.value or "").strip()
    if not name or name.lower() == "myserver":
        return passed("no myQNAPcloud DDNS name is set", **evidence)
    fqdn = "%s.%s" % (name, (domain.effective or "myqnapcloud.com").lower())
    evidence["ddns_name"] = fqdn
    forwarding = _forwarding_on(ctx)
    if forwarding:
        return failed("%s points at this NAS and ports are being forwarded to it" % fqdn, severity="medium",
                      forwarding=forwarding, **evidence)
    return failed("%s points at this NAS (no forwarded ports seen)" % fqdn, **evidence)


def _forwarding_on(ctx: CheckContext) -> List[str]:
    reasons = []
    try:
        if read_key(ctx, UPNPC_CONF, "UPnP_Global", "Enable", "FALSE", missing_file_ok=True).as_bool():
            reasons.append("UPnP port forwarding on")
        for section, key, label in EXT_PORT_KEYS:
            if read_key(ctx, ULINUX_CONF, section, key, "0").as_port():
                reasons.append("%s forwarded" % label)
    except Unknowable:
        pass
    return reasons


# ---------------------------------------------------------------- admin UI
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
    reads=("/etc/config/uLinux.conf [System] Web Access Port (default 8080)",
           "/etc/config/uLinux.conf [Stunnel] Port (default 443), [Stunnel] Enable", "/proc/net/tcp{,6} listeners"),
    references=(QSNATCH, ADVISORY_2022),
)
def default_ports(ctx: CheckContext) -> Outcome:
    http = read_key(ctx, ULINUX_CONF, "System", "Web Access Port", "8080")
    https = read_key(ctx, ULINUX_CONF, "Stunnel", "Port", "443")
    https_on = read_key(ctx, ULINUX_CONF, "Stunnel", "Enable", "1").as_bool() is not False
    http_port, https_port = http.as_port(), https.as_port()
    evidence = {"http": dict(http.evidence(), **_listening(ctx, http_port or 8080)),
                "https": dict(https.evidence(), **_listening(ctx, https_port or 443)), "https_enabled": https_on}
    if http_port is None or https_port is None:
        return unknown("the admin port setting is not a port number", **evidence)
    defaults = []
    if http_port == 8080:
        defaults.append("HTTP 8080")
    if https_on and https_port == 443:
        defaults.append("HTTPS 443")
    if defaults:
        return failed("System Administration listens on the default " + " and ".join(defaults), **evidence)
    return passed("System Administration uses non-default ports (HTTP %d, HTTPS %d)" % (http_port, https_port),
                  **evidence)


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
    reads=("/etc/config/uLinux.conf [Stunnel] Enable (1/0, default 1)",
           "/etc/config/uLinux.conf [System] Force SSL (1/0, default 0)"),
    references=(SECURITY_GUIDE,),
)
def admin_https(ctx: CheckContext) -> Outcome:
    enable = read_key(ctx, ULINUX_CONF, "Stunnel", "Enable", "1")
    force = read_key(ctx, ULINUX_CONF, "System", "Force SSL", "0")
    evidence = {"https_enable": enable.evidence(), "force_ssl": force.evidence()}
    on, forced = enable.as_bool(), force.as_bool()
    if on is None or forced is None:
        return unknown("HTTPS settings have unrecognised values", **evidence)
    if not on:
        return failed("HTTPS is off: the admin login travels in clear text", severity="high", **evidence)
    if not forced:
        return failed("HTTPS is on but not forced: plain HTTP admin stays available", severity="medium", **evidence)
    return passed("admin access is HTTPS only", **evidence)


# ---------------------------------------------------------------- remote shells
@check(
    "service.telnet",
    title="Telnet is enabled",
    severity="high",
    family="local",
    rationale="""
Telnet sends the admin password in clear text and is a favourite of brute-force bots (Mirai and its
relatives). QNAP's QSnatch advisory says to disable it when not used; nobody needs it next to SSH.""",
    remediation="""
Control Panel > Network & File Services > Telnet / SSH: untick "Allow Telnet connection" > Apply.""",
    reads=("/etc/config/uLinux.conf [LOGIN] TELNET Enable (TRUE/FALSE; key name unverified)",
           "/etc/config/uLinux.conf [LOGIN] TELNET Port (default 13131; unverified)", "/proc/net/tcp{,6} listeners",
           "running process utelnetd"),
    references=(QSNATCH,),
    confirm="""
The Telnet keys are not documented publicly. To confirm on your NAS: toggle "Allow Telnet connection"
in Control Panel and run `getcfg LOGIN "TELNET Enable"` over SSH before and after; the listener on the
Telnet port (`netstat -tln`) is checked as a second signal either way.""",
)
def telnet(ctx: CheckContext) -> Outcome:
    enable = read_key(ctx, ULINUX_CONF, *TELNET_ENABLE, default="FALSE")
    port_read = read_key(ctx, ULINUX_CONF, *TELNET_PORT, default=TELNET_DEFAULT_PORT)
    port = port_read.as_port() or int(TELNET_DEFAULT_PORT)
    listening = ctx.listeners.listening(port)
    running = ctx.running("utelnetd", "telnetd")
    evidence = {"enable": enable.evidence(), "port": port_read.evidence(), "listener": _listening(ctx, port),
                "telnetd_running": running, "key_confidence": "unverified"}
    on = enable.as_bool()
    if on or running or listening:
        why = "the config turns it on" if on else "a Telnet server runs although the config says off"
        return failed("Telnet is enabled on port %d (%s)" % (port, why), **evidence)
    return passed("Telnet is off", **evidence)


@fixes("service.telnet")
def fix_telnet(ctx: CheckContext, outcome: Outcome) -> List[Action]:
    return [
        ConfigKeyAction("service.telnet", ULINUX_CONF, TELNET_ENABLE[0], TELNET_ENABLE[1], "FALSE"),
        DaemonStopAction("service.telnet", "utelnetd", "/usr/sbin/utelnetd"),
    ]


@check(
    "service.ssh",
    title="SSH is enabled",
    severity="medium",
    family="local",
    rationale="""
SSH gives a root-equivalent shell to the admin group (QTS forces PermitRootLogin yes). On port 22 it is
brute-forced around the clock; when the port is forwarded it is a direct way in.""",
    remediation="""
Control Panel > Network & File Services > Telnet / SSH: untick "Allow SSH connection" when you do not
need it, or move it off port 22 and keep it LAN-only. ExposureGuard never turns SSH off itself: it may
be your way in.""",
    reads=("/etc/config/uLinux.conf [LOGIN] SSH Enable (TRUE/FALSE, default FALSE)",
           "/etc/config/uLinux.conf [LOGIN] SSH Port (default 22)", "/proc/net/tcp{,6} listeners"),
    references=(QSNATCH,),
)
def ssh(ctx: CheckContext) -> Outcome:
    enable = read_key(ctx, ULINUX_CONF, "LOGIN", "SSH Enable", "FALSE")
    port_read = read_key(ctx, ULINUX_CONF, "LOGIN", "SSH Port", "22")
    port = port_read.as_port() or 22
    listening = ctx.listeners.listening(port)
    evidence = {"enable": enable.evidence(), "port": port_read.evidence(), "listener": _listening(ctx, port)}
    if enable.as_bool() or listening:
        severity = "medium" if port == 22 else "low"
        why = "" if enable.as_bool() else " (the config says off, but something listens on the port)"
        return failed("SSH is enabled on port %d%s" % (port, why), severity=severity, **evidence)
    return passed("SSH is off", **evidence)


# ---------------------------------------------------------------- accounts
@check(
    "account.default-admin",
    title="The built-in admin account is enabled",
    severity="medium",
    family="local",
    rationale="""
Every brute-force bot tries "admin" first. QNAP recommends creating another administrator and
disabling the built-in admin account.""",
    remediation="""
Create another account in the administrators group, sign in with it, then Control Panel > Privilege >
Users > admin > Edit Account Profile > "Disable this account". ExposureGuard never changes accounts.""",
    reads=("/etc/shadow: only whether the admin entry's password field is locked ('!' or '*'); the hash is never read out",),
    references=(DISABLE_ADMIN, QSNATCH),
    confirm="""
Where QTS stores "Disable this account" is not documented publicly; ExposureGuard reads whether the
admin entry in /etc/shadow is locked. Confirm by disabling the account in Control Panel and running the
check again.""",
)
def default_admin(ctx: CheckContext) -> Outcome:
    path = ctx.root.path("etc/shadow")
    try:
        with path.open("rb") as handle:
            lines = handle.read(4 * 1024 * 1024).splitlines()
    except FileNotFoundError:
        return unknown("/etc/shadow does not exist", file="/etc/shadow")
    except OSError as exc:
        return unknown("/etc/shadow cannot be read: %s (run as root)" % exc.strerror, file="/etc/shadow")
    for line in lines:
        fields = line.split(b":")
        if fields[0] == b"admin":
            secret = fields[1] if len(fields) > 1 else b""
            locked = secret.startswith((b"!", b"*")) or secret == b""
            # Only the fact "locked or not" leaves this function, never the field.
            evidence = {"file": "/etc/shadow", "account": "admin", "locked": locked, "key_confidence": "likely"}
            if locked:
                return passed("the built-in admin account is disabled", **evidence)
            return failed("the built-in admin account is enabled", **evidence)
    return passed("there is no account named admin", file="/etc/shadow", account="admin")


# ---------------------------------------------------------------- persistence
@check(
    "system.autorun",
    title="A user autorun.sh runs at boot",
    severity="medium",
    family="local",
    rationale="""
With [Misc] Autorun on, QTS runs autorun.sh from the boot flash at every start. QSnatch used exactly
this to survive firmware updates and malware scans; a script you did not write there is a red flag.""",
    remediation="""
Control Panel > Hardware > General: untick "Run user defined processes during startup" unless you put
the script there yourself, and read its contents. If you did not write it, follow QNAP's QSnatch
advisory (update, Malware Remover, change passwords).""",
    reads=("/etc/config/uLinux.conf [Misc] Autorun (TRUE/FALSE)", "/tmp/config/autorun.sh (size and SHA-256 only)"),
    references=(QSNATCH,),
)
def autorun(ctx: CheckContext) -> Outcome:
    enable = read_key(ctx, ULINUX_CONF, "Misc", "Autorun", "FALSE")
    script = ctx.root.path("tmp/config/autorun.sh")
    info: Dict[str, Any] = {"path": "/tmp/config/autorun.sh", "present": script.is_file()}
    if script.is_file():
        try:
            data = script.read_bytes()[: 1024 * 1024]
            info.update(size=script.stat().st_size, sha256=hashlib.sha256(data).hexdigest())
        except OSError as exc:
            info["error"] = exc.strerror
    evidence = {"autorun": enable.evidence(), "script": info}
    if enable.as_bool():
        return failed("QTS runs a user autorun.sh at boot%s" % ("" if info["present"] else
                      " (the flash config partition is not mounted, so the script could not be inspected)"),
                      **evidence)
    return passed("user autorun at boot is off", **evidence)


# ---------------------------------------------------------------- own advertisement
BONJOUR_KEYS = ("Web", "HTTPS", "SAMBA", "AFP", "SSH", "FTP", "UPNP", "QMobile", "QNAP")


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
    reads=tuple("/etc/config/uLinux.conf [Bonjour Service] %s (1/0)" % k for k in BONJOUR_KEYS)
    + ("/etc/config/uLinux.conf [UPnP Service] Enable (unverified)",),
    references=(SECURITY_GUIDE,),
)
def nas_discovery(ctx: CheckContext) -> Outcome:
    advertised = []
    keys = []
    for key in BONJOUR_KEYS:
        value = read_key(ctx, ULINUX_CONF, "Bonjour Service", key, "0")
        keys.append(value.evidence())
        if value.as_bool():
            advertised.append("Bonjour " + key)
    upnp = read_key(ctx, ULINUX_CONF, "UPnP Service", "Enable", "FALSE")
    keys.append(upnp.evidence())
    if upnp.as_bool():
        advertised.append("UPnP discovery")
    if advertised:
        return failed("the NAS advertises: " + ", ".join(advertised), advertised=advertised, keys=keys)
    return passed("the NAS does not advertise its services", keys=keys)


# ---------------------------------------------------------------- firmware
@check(
    "firmware.version",
    title="Firmware is older than the fix of a known exploited flaw",
    severity="high",
    family="local",
    rationale="""
DeadBolt, Qlocker, eCh0raix and QSnatch all used flaws QNAP had already fixed. A NAS on firmware older
than those fixes can be taken over without any password.""",
    remediation="""
Control Panel > System > Firmware Update > Live Update > Check for Update, and turn on automatic
updates for security fixes.""",
    reads=("/etc/default_config/uLinux.conf [System] Version, Build Number (authoritative)",
           "/etc/config/uLinux.conf [System] Version, Build Number (fallback)",
           "bundled advisory table exposure_guard/data/firmware-advisories.json"),
    references=("https://www.qnap.com/en/security-advisories",),
)
def firmware(ctx: CheckContext) -> Outcome:
    identity = ctx.identity
    if identity.firmware == "unknown":
        raise Unknowable("no firmware version in /etc/default_config/uLinux.conf or /etc/config/uLinux.conf")
    assessment = assess_firmware(identity.firmware, identity.build)
    evidence: Dict[str, Any] = {"version": identity.firmware, "build": identity.build,
                                "source": identity.firmware_source, "table_date": assessment.table_date}
    if assessment.unparsable:
        return unknown("firmware version %r is not in a form this agent understands" % identity.firmware, **evidence)
    if assessment.missing:
        evidence["missing_fixes"] = assessment.missing
        worst = assessment.worst_severity()
        names = ", ".join(m["id"] for m in assessment.missing[:5])
        return failed("firmware %s misses fixes for %d known flaw(s): %s" % (identity.firmware, len(assessment.missing),
                      names), severity=worst, **evidence)
    return passed("firmware %s build %s has the fixes in the table of %s" % (identity.firmware, identity.build or "?",
                  assessment.table_date), **evidence)


