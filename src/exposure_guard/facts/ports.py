"""The NAS's own ports as its settings say (QTS's defaults when absent): shared by local checks, the
router audit (which mappings are management ports) and the callback (which ports to ask about)."""

from __future__ import annotations

from typing import Dict, List

from exposure_guard.contracts import Value
from exposure_guard.errors import Unknowable
from exposure_guard.facts import inputs
from exposure_guard.facts.keys import read_key, read_port
from exposure_guard.facts.packages import Package, read_packages
from exposure_guard.qts.config import QtsConfig


class AdminPorts(Value):
    __slots__ = ("http", "https", "https_enabled")

    def __init__(self, http: int, https: int, https_enabled: bool) -> None:
        self.http = http
        self.https = https
        self.https_enabled = https_enabled


DEFAULT_ADMIN_PORTS = AdminPorts(8080, 443, True)


def admin_ports(config: QtsConfig) -> AdminPorts:
    """System Administration's ports; raises Unknowable when uLinux.conf cannot be read."""
    http = read_key(config, inputs.ADMIN_HTTP_PORT)
    https_on = read_key(config, inputs.HTTPS_ENABLE)
    https = read_key(config, inputs.ADMIN_HTTPS_PORT)
    return AdminPorts(http.as_port() or 8080, https.as_port() or 443, https_on.as_bool() is not False)


def management_ports(config: QtsConfig) -> List[int]:
    """Ports whose exposure is critical: web admin HTTP/HTTPS and SSH (from settings, defaults otherwise)."""
    try:
        found = admin_ports(config)
    except Unknowable:
        found = DEFAULT_ADMIN_PORTS
    return sorted({found.http, found.https, read_port(config, inputs.SSH_PORT, 22)})


# Fixed ports of NAS services whose port QTS does not let the owner change (or that have no key here).
FIXED_SERVICE_PORTS = {139: "SMB (NetBIOS)", 445: "SMB", 548: "AFP", 161: "SNMP", 3306: "MySQL/MariaDB"}


def service_ports(config: QtsConfig) -> Dict[int, str]:
    """Every port a NAS service is set to use, named (settings first, QTS's defaults when absent; an
    unreadable file gives the defaults): what a router mapping to that port leads to."""
    named: Dict[int, str] = dict(FIXED_SERVICE_PORTS)
    for key, name in ((inputs.FTP_PORT, "FTP"), (inputs.WEB_HTTP_PORT, "Web Server HTTP"),
                      (inputs.WEB_HTTPS_PORT, "Web Server HTTPS"), (inputs.TELNET_PORT, "Telnet"),
                      (inputs.SSH_PORT, "SSH")):
        named[read_port(config, key, int(key.default or "0"))] = name
    try:
        admin = admin_ports(config)
    except Unknowable:
        admin = DEFAULT_ADMIN_PORTS
    named[admin.http] = "admin HTTP"
    named[admin.https] = "admin HTTPS"
    for package in _packages(config):
        for port, https in package.web_ports:
            named.setdefault(port, "%s web page%s" % (package.name, " (HTTPS)" if https else ""))
    return named


def _packages(config: QtsConfig) -> List[Package]:
    try:
        return read_packages(config)
    except Unknowable:
        return []
