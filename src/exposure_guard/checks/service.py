"""``service.*``: network services on the NAS that let someone in: remote shells, file services (SMB,
AFP, FTP), the Web Server, SNMP, and what guards them (access protection, QuFirewall)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from exposure_guard.checks.references import (
    CHECKMATE,
    DEADBOLT_PHOTO_STATION,
    NETATALK_ADVISORY,
    QSNATCH,
    SECURITY_GUIDE,
)
from exposure_guard.checks.registry import Outcome, check, failed, fixes, passed, unknown
from exposure_guard.context import CheckContext
from exposure_guard.facts import inputs
from exposure_guard.facts.fileservices import (
    PROFTPD_CONFS,
    firewall_state,
    ftp_tls,
    installed,
    smb_floor,
    snmp_communities,
)
from exposure_guard.facts.firmware import parse_version
from exposure_guard.facts.keys import KeyRead
from exposure_guard.qts.services import TELNETD_COMMAND

if TYPE_CHECKING:
    from exposure_guard.fixes.actions import Action

SQL_PACKAGES = ("phpMyAdmin", "MariaDB10", "MariaDB5", "MariaDB", "MySQL")


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
    reads=(inputs.TELNET_ENABLE, inputs.TELNET_PORT, "/proc/net/tcp{,6} listeners", "running process utelnetd"),
    references=(QSNATCH,),
)
def telnet(ctx: CheckContext) -> Outcome:
    enable = ctx.read(inputs.TELNET_ENABLE)
    port_read = ctx.read(inputs.TELNET_PORT)
    port = port_read.as_port() or int(inputs.TELNET_PORT.default or "13131")
    listening = ctx.listeners.listening(port)
    running = ctx.running("utelnetd", "telnetd")
    evidence = {"enable": enable.evidence(), "port": port_read.evidence(), "listener": ctx.listeners.evidence(port),
                "telnetd_running": running}
    on = enable.as_bool()
    if on or running or listening:
        why = "the config turns it on" if on else "a Telnet server runs although the config says off"
        return failed("Telnet is enabled on port %d (%s)" % (port, why), evidence)
    return passed("Telnet is off", evidence)


@fixes("service.telnet")
def fix_telnet(ctx: CheckContext, outcome: Outcome) -> List[Action]:
    # Fix actions load the journal and the UPnP client: only when a fix is planned, not on every check.
    from exposure_guard.fixes.actions import ConfigKeyAction, DaemonStopAction

    key = inputs.TELNET_ENABLE
    return [
        ConfigKeyAction("service.telnet", key.file, key.section, key.key, "FALSE"),
        DaemonStopAction("service.telnet", "utelnetd", TELNETD_COMMAND),
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
    reads=(inputs.SSH_ENABLE, inputs.SSH_PORT, "/proc/net/tcp{,6} listeners"),
    references=(QSNATCH,),
)
def ssh(ctx: CheckContext) -> Outcome:
    enable = ctx.read(inputs.SSH_ENABLE)
    port_read = ctx.read(inputs.SSH_PORT)
    port = port_read.as_port() or 22
    listening = ctx.listeners.listening(port)
    evidence = {"enable": enable.evidence(), "port": port_read.evidence(), "listener": ctx.listeners.evidence(port)}
    if enable.as_bool() or listening:
        severity = "medium" if port == 22 else "low"
        why = "" if enable.as_bool() else " (the config says off, but something listens on the port)"
        return failed("SSH is enabled on port %d%s" % (port, why), evidence, severity=severity)
    return passed("SSH is off", evidence)


# ---------------------------------------------------------------- file services and other doors
def _on(ctx: CheckContext, key_read: KeyRead, *daemons: str) -> Tuple[Optional[bool], bool]:
    """(the setting as a bool or None when absent/unrecognised, whether a daemon of the service runs)."""
    return key_read.as_bool() if key_read.value is not None else None, ctx.running(*daemons)


def _firmware(ctx: CheckContext) -> Tuple[int, ...]:
    try:
        return parse_version(ctx.identity.firmware) or ()
    except Exception:  # identity unreadable: the SMB default is then not decidable from the firmware
        return ()


@check(
    "service.smb",
    title="Windows file sharing (SMB) accepts SMB1",
    severity="high",
    family="local",
    rationale="""
SMB is how the LAN reaches the shares, and how Checkmate (QSA-22-21, July 2022) reached NAS whose SMB was
exposed to the internet: dictionary attacks on SMB accounts, then encrypted shares. SMB1 adds the flaws of
WannaCry's era and NTLMv1; QNAP asks owners to set the lowest version to SMB 2 and never to forward SMB
(ports 139/445) to the internet.""",
    remediation="""
Control Panel > Network & File Services > Win/Mac/NFS/WebDAV > Microsoft Networking > Advanced Options >
Lowest SMB version: SMB 2 or higher > Apply. Never forward ports 139/445 on the router (the router and
reachability checks look for that); use a VPN to reach the shares from outside.""",
    reads=(inputs.SMB_ENABLE, inputs.SMB_MIN_PROTOCOL, inputs.SMB_MIN_PROTOCOL_ALIAS, inputs.SMB_NTLM_AUTH,
           "firmware version (Samba's default floor)", "/proc/net/tcp{,6} listeners on 445", "running process smbd"),
    references=(CHECKMATE, SECURITY_GUIDE),
)
def smb(ctx: CheckContext) -> Outcome:
    enable = ctx.read(inputs.SMB_ENABLE)
    on, running = _on(ctx, enable, "smbd")
    evidence: Dict[str, Any] = {"enable": enable.evidence(), "listener": ctx.listeners.evidence(445),
                                "smbd_running": running}
    if not (enable.as_bool() or running or ctx.listeners.listening(445)):
        return passed("SMB is off", evidence)
    floor = smb_floor(ctx.config, _firmware(ctx))
    ntlm = ctx.read(inputs.SMB_NTLM_AUTH)
    evidence.update(lowest_version=floor.read.evidence(), ntlm_auth=ntlm.evidence(), floor=floor.reason)
    if floor.smb1:
        return failed("SMB is on and accepts SMB1: %s" % floor.reason, evidence)
    if floor.smb1 is None:
        return unknown("SMB is on; cannot tell whether it accepts SMB1: %s" % floor.reason, evidence)
    return passed("SMB is on, %s (keep ports 139/445 off the router)" % floor.reason, evidence)


@check(
    "service.afp",
    title="Apple file sharing (AFP) is enabled",
    severity="low",
    family="local",
    rationale="""
AFP is a legacy protocol (netatalk) that macOS itself no longer needs: Time Machine and Finder use SMB.
Netatalk had critical unauthenticated flaws fixed in QTS only in 2022 (QSA-22-12); an unused AFP server is
one more door.""",
    remediation="""
Control Panel > Network & File Services > Win/Mac/NFS/WebDAV > Apple Networking: untick "Enable AFP"
> Apply (Time Machine over SMB: Control Panel > Network & File Services > Win/Mac/NFS/WebDAV > Microsoft
Networking, and the share's Time Machine option).""",
    reads=(inputs.AFP_ENABLE, "/proc/net/tcp{,6} listeners on 548", "running process afpd"),
    references=(NETATALK_ADVISORY,),
)
def afp(ctx: CheckContext) -> Outcome:
    enable = ctx.read(inputs.AFP_ENABLE)
    _setting, running = _on(ctx, enable, "afpd")
    evidence = {"enable": enable.evidence(), "listener": ctx.listeners.evidence(548), "afpd_running": running}
    if enable.as_bool() or running or ctx.listeners.listening(548):
        why = "the config turns it on" if enable.as_bool() else "afpd runs or port 548 listens although the config says off"
        return failed("AFP is enabled (%s)" % why, evidence)
    return passed("AFP is off", evidence)


@check(
    "service.ftp",
    title="FTP is enabled",
    severity="medium",
    family="local",
    rationale="""
Plain FTP sends user names and passwords in clear text, and port 21 is brute-forced around the clock.
QNAP's QSnatch advisory lists FTP among the services to turn off when not used; where it is needed, only
FTPS (FTP with TLS) should be allowed, and never without IP access protection.""",
    remediation="""
Control Panel > Network & File Services > FTP (QTS 5: the QuFTP app): untick "Enable FTP Service" when
you do not need it; otherwise enable "FTP with SSL/TLS (Explicit)" only, set IP access protection for FTP
(Control Panel > System > Security), and do not forward the FTP port or the passive range on the router.""",
    reads=(inputs.FTP_ENABLE, inputs.FTP_PORT, "/proc/net/tcp{,6} listeners on the FTP port",
           "running process proftpd", "the proftpd config QTS generates, where found (/etc/config/proftpd.conf, "
           "/etc/proftpd.conf): TLSEngine, TLSRequired, PassivePorts, <Anonymous>"),
    references=(QSNATCH,),
)
def ftp(ctx: CheckContext) -> Outcome:
    enable = ctx.read(inputs.FTP_ENABLE)
    port_read = ctx.read(inputs.FTP_PORT)
    port = port_read.as_port() or 21
    setting, running = _on(ctx, enable, "proftpd")
    listening = ctx.listeners.listening(port)
    evidence: Dict[str, Any] = {"enable": enable.evidence(), "port": port_read.evidence(),
                                "listener": ctx.listeners.evidence(port), "proftpd_running": running}
    tls = ftp_tls(ctx.root)
    evidence["tls"] = tls if tls is not None else ("no proftpd config found (%s): where QTS keeps the FTPS "
                                                   "setting is not published; plain FTP is assumed allowed"
                                                   % ", ".join("/" + c for c in PROFTPD_CONFS))
    if setting or running or listening:
        why = "the config turns it on" if setting else "an FTP server runs although the config does not say on"
        forced = bool(tls and tls.get("tls_engine") and tls.get("tls_required"))
        anonymous = bool(tls and tls.get("anonymous"))
        severity = "high" if anonymous else "low" if forced or port != 21 else "medium"
        detail = ", anonymous logins allowed" if anonymous else ", FTPS (TLS) required" if forced else ""
        return failed("FTP is enabled on port %d (%s%s)" % (port, why, detail), evidence, severity=severity)
    if setting is None and listening is None and not running:
        return unknown("FTP: uLinux.conf has no [FTP] Enable and nothing shows whether an FTP server runs", evidence)
    return passed("FTP is off", evidence)


@check(
    "service.webserver",
    title="The Web Server (QWEB) is enabled",
    severity="low",
    family="local",
    rationale="""
The Web Server serves the Web share and the apps built on it (Photo Station's DeadBolt flaw in September
2022, QSA-22-24, came in this way), and phpMyAdmin and a SQL server next to it are in QNAP's QSnatch list
of what to turn off. When nothing you use needs it, it is only a door.""",
    remediation="""
Control Panel > Applications > Web Server: untick "Enable Web Server" when no site or app needs it; remove
phpMyAdmin and the SQL server package (or the built-in MySQL server: Control Panel > Applications > SQL
server) when unused; never forward its ports (80/8081 by default) on the router.""",
    reads=(inputs.WEB_ENABLE, inputs.WEB_HTTP_PORT, inputs.WEB_HTTPS_PORT, inputs.MYSQL_ENABLE,
           "/etc/config/qpkg.conf: phpMyAdmin, MariaDB10, MariaDB5, MySQL packages",
           "/proc/net/tcp{,6} listeners on the Web Server ports"),
    references=(QSNATCH, DEADBOLT_PHOTO_STATION),
)
def webserver(ctx: CheckContext) -> Outcome:
    enable = ctx.read(inputs.WEB_ENABLE)
    http = ctx.read(inputs.WEB_HTTP_PORT).as_port() or 80
    https = ctx.read(inputs.WEB_HTTPS_PORT).as_port() or 8081
    sql = installed(ctx.config, *SQL_PACKAGES)
    mysql = ctx.read(inputs.MYSQL_ENABLE)
    listening = [ctx.listeners.listening(port) for port in (http, https)]
    evidence: Dict[str, Any] = {"enable": enable.evidence(), "listeners": [ctx.listeners.evidence(http),
                                ctx.listeners.evidence(https)],
                                "sql_packages": [{"section": p.section, "version": p.get("Version"),
                                                  "enabled": p.enabled} for p in sql],
                                "builtin_mysql": mysql.evidence()}
    extras = [p.section for p in sql] + (["the built-in MySQL server"] if mysql.as_bool() else [])
    tail = " with %s" % ", ".join(extras) if extras else ""
    severity = "medium" if extras else "low"
    on = enable.as_bool()
    if on:
        return failed("the Web Server is on (HTTP %d, HTTPS %d)%s" % (http, https, tail), evidence, severity=severity)
    if on is None:  # no usable switch: what listens decides
        if any(listening):
            return failed("[QWEB] Enable is %s, but the Web Server ports listen (%d/%d)%s" % (
                "absent" if enable.value is None else repr(enable.value), http, https, tail), evidence,
                severity=severity)
        if None in listening:
            return unknown("cannot tell whether the Web Server runs: no usable [QWEB] Enable and listeners unknown",
                           evidence)
        return passed("the Web Server does not run (no [QWEB] Enable; nothing listens on %d/%d)" % (http, https),
                      evidence)
    return passed("the Web Server is off", evidence)


@check(
    "service.snmp",
    title="SNMP is enabled",
    severity="medium",
    family="local",
    rationale="""
SNMP v1/v2c authenticates with a community string sent in clear text; QTS's factory snmpd.conf has carried
a writable "public" community. Anyone who can reach UDP 161 can then read the NAS's configuration and
network details, or change them.""",
    remediation="""
Control Panel > Network & File Services > SNMP: untick "Enable SNMP Service" unless a monitoring system
uses it; otherwise choose SNMP v3 with a user and password, and limit it to the monitoring host.""",
    reads=(inputs.SNMP_ENABLE, inputs.SNMP_ENABLE_ALIAS, "/etc/config/snmpd.conf rocommunity/rwcommunity/com2sec "
           "lines (whether a community is writable or well known; never its value)", "running process snmpd"),
)
def snmp(ctx: CheckContext) -> Outcome:
    enable = ctx.read(inputs.SNMP_ENABLE)
    if enable.value is None:
        enable = ctx.read(inputs.SNMP_ENABLE_ALIAS)
    running = ctx.running("snmpd")
    evidence: Dict[str, Any] = {"enable": enable.evidence(), "snmpd_running": running}
    if not (enable.as_bool() or running):
        if enable.value is None:
            return passed("SNMP is off (no [SNMP] switch set and no snmpd running)", evidence)
        return passed("SNMP is off", evidence)
    communities = snmp_communities(ctx.root)
    evidence["communities"] = communities if communities is not None else "no /etc/config/snmpd.conf"
    risky = [c for c in communities or [] if c["writable"] or c["well_known"]]
    if risky:
        what = sorted({"a writable community" if c["writable"] else "a well-known community (public/private)"
                       for c in risky})
        return failed("SNMP is on with %s" % " and ".join(what), evidence, severity="high")
    return failed("SNMP is on", evidence, severity="medium")


@check(
    "service.access-protection",
    title="IP access protection is off",
    severity="medium",
    family="local",
    rationale="""
Without IP access protection nothing stops a bot from trying passwords on SSH, the admin page, SMB or FTP
for ever; brute force was how eCh0raix and Checkmate got in. QTS can block an address after a few failed
logins, and lock an account under attack.""",
    remediation="""
Control Panel > System > Security > IP Access Protection: tick every service you use (SSH, Telnet,
HTTP(S), FTP, SAMBA, AFP), e.g. 5 failures in 1 minute blocks for 1 day > Apply. QTS 5: also Account
Access Protection on the same page.""",
    reads=(inputs.IP_BAN_ENABLE, inputs.ACCOUNT_BAN_ENABLE),
)
def access_protection(ctx: CheckContext) -> Outcome:
    ip_ban = ctx.read(inputs.IP_BAN_ENABLE)
    account_ban = ctx.read(inputs.ACCOUNT_BAN_ENABLE)
    evidence = {"ip_access_protection": ip_ban.evidence(), "account_access_protection": account_ban.evidence()}
    if ip_ban.as_bool() is False:
        return failed("IP access protection is off", evidence)
    if ip_ban.as_bool() is None:
        return unknown("cannot tell whether IP access protection is on: [Ban Engine] Ban Enabled is %s"
                       % ("absent (QTS's default is not published)" if ip_ban.value is None else
                          "%r, not a TRUE/FALSE value" % ip_ban.value), evidence)
    if account_ban.as_bool() is False:
        return passed("IP access protection is on (account access protection is off)", evidence)
    return passed("IP access protection is on", evidence)


@check(
    "service.firewall",
    title="No firewall (QuFirewall) filters who can reach the NAS",
    severity="low",
    family="local",
    rationale="""
QuFirewall lets the NAS itself refuse every address outside the LAN (or outside a country), so one
mistaken router forward does not expose the admin page or SMB. Without it, every listening service answers
whoever reaches it. It does not cover ports published by Container Station (Docker's own rules come first).""",
    remediation="""
App Center: install QuFirewall, open it and choose the "Basic protection" profile (LAN and your VPN
subnets allowed), or a custom profile that allows only the subnets you use > Apply.""",
    reads=("/etc/config/qpkg.conf [qufirewall] Enable, Version", inputs.QUFIREWALL_STATUS,
           "on the NAS itself: the QUFIREWALL chain of the live netfilter rules (iptables-save -t filter)"),
)
def firewall(ctx: CheckContext) -> Outcome:
    state = firewall_state(ctx.config)
    evidence: Dict[str, Any] = {"installed": state.installed, "enabled": state.enabled, "version": state.version}
    if state.running_switch is not None:
        evidence["firewall_status"] = state.running_switch.evidence()
    if not state.installed:  # defence in depth, not a risk by itself: it must not make a box AT RISK
        return failed("QuFirewall is not installed: nothing on the NAS filters who reaches its services", evidence,
                      severity="info")
    if state.on is False:
        why = "disabled in App Center" if state.enabled is False else "its firewall switch is off"
        return failed("QuFirewall is installed but %s" % why, evidence)
    if state.on is None:
        return unknown("QuFirewall is installed; cannot tell whether it filters: [Global] firewall_status is %r"
                       % (state.running_switch.value if state.running_switch else None), evidence)
    chain = ctx.qufirewall_chain
    if chain is None:
        evidence["live_rules"] = "not read (only on the NAS itself, with iptables-save)"
        return passed("QuFirewall is on (version %s)" % (state.version or "?"), evidence)
    evidence["live_rules"] = chain.to_dict()
    what = ("what its rules admit could not be judged" if chain.lan_only is None else
            "its rules admit only LAN sources" if chain.lan_only else "its rules also admit public sources")
    return passed("QuFirewall is on (version %s): %s (%s)" % (state.version or "?", what, chain.reason), evidence)
