"""The NAS's own ports as its settings say (QTS's defaults when absent): shared by local checks, the
router audit (which mappings are management ports) and the callback (which ports to ask about)."""

from __future__ import annotations

from typing import List

from exposure_guard.contracts import Value
from exposure_guard.errors import Unknowable
from exposure_guard.facts import inputs
from exposure_guard.facts.keys import read_key, read_port
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
