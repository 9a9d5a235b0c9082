"""The check catalogue. One module per id prefix registers its checks (``@check``, ``@fixes`` from
``registry``); this package loads them all and fixes the order in which `checks`, reports and the
dashboard list them. Adding a check: docs/architecture.md, "How to add a check"."""

from __future__ import annotations

from typing import List, Optional

from exposure_guard.checks import (  # noqa: F401  (importing a family module registers its checks)
    account,
    admin,
    apps,
    containers,
    firmware,
    integrity,
    myqnapcloud,
    reachability,
    router,
    service,
    system,
    upnp,
)
from exposure_guard.checks.registry import REGISTRY, Check

# The catalogue's order: the NAS's own settings first, then the router, then what the internet sees.
CATALOGUE_ORDER = (
    "myqnapcloud.upnp-forwarding",
    "myqnapcloud.published-services",
    "myqnapcloud.ddns",
    "admin.default-ports",
    "admin.https",
    "service.telnet",
    "service.ssh",
    "service.smb",
    "service.afp",
    "service.ftp",
    "service.webserver",
    "service.snmp",
    "service.access-protection",
    "service.firewall",
    "account.default-admin",
    "system.autorun",
    "upnp.nas-discovery",
    "firmware.version",
    "apps.exposed",
    "containers.published",
    "integrity.qpkg-entries",
    "integrity.update-sources",
    "integrity.crontab",
    "integrity.ransomware",
    "router.upnp-mappings",
    "reachability.admin",
    "reachability.services",
    "router.upnp-wan-exposed",
    "admin.default-cert",
)


def all_checks() -> List[Check]:
    """Every registered check in catalogue order (a check missing from CATALOGUE_ORDER comes last)."""
    rank = {check_id: index for index, check_id in enumerate(CATALOGUE_ORDER)}
    return sorted(REGISTRY.all(), key=lambda c: rank.get(c.id, len(rank)))


def get_check(check_id: str) -> Optional[Check]:
    return REGISTRY.get(check_id)


__all__ = ["CATALOGUE_ORDER", "Check", "all_checks", "get_check"]
