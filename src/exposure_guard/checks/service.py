"""``service.*``: network services on the NAS that let someone in (remote shells today)."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from exposure_guard.checks.references import QSNATCH
from exposure_guard.checks.registry import Outcome, check, failed, fixes, passed
from exposure_guard.context import CheckContext
from exposure_guard.facts import inputs
from exposure_guard.qts.services import TELNETD_COMMAND

if TYPE_CHECKING:
    from exposure_guard.fixes.actions import Action


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
