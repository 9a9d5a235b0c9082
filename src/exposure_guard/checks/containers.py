"""``containers.*``: ports that containers publish on the NAS (facts/containers.py). QuFirewall does not
filter them (Docker's own rules come first), so each one is a door of its own."""

from __future__ import annotations

from typing import Any, Dict

from exposure_guard.checks.registry import Outcome, check, failed, passed, unknown
from exposure_guard.context import CheckContext
from exposure_guard.facts.fileservices import installed

SHOWN = 50  # published ports listed in evidence


@check(
    "containers.published",
    title="Containers publish ports on every address of the NAS",
    severity="low",
    family="local",
    rationale="""
A container started with `-p 8080:80` (Container Station's "Publish port") listens on every address of the
NAS, and Docker's own firewall rules come before QuFirewall's: the NAS's firewall does not protect it. One
router forward or UPnP mapping to that port and the container's service is on the internet.""",
    remediation="""
Container Station > the container > Settings > Network: publish the port on 127.0.0.1 or the LAN address
only (`-p 192.168.1.20:8080:80`), or not at all when only other containers use it; never forward it on the
router. Remove containers you no longer use.""",
    reads=("running processes docker-proxy (their -host-ip/-host-port/-container-port arguments)",
           "Docker's state under <volume>/Container/container-station-data/lib/docker and /var/lib/docker: "
           "containers/*/hostconfig.json PortBindings and config.v2.json Name and State (bounded)",
           "/etc/config/qpkg.conf [container-station]"),
)
def containers_published(ctx: CheckContext) -> Outcome:
    found = ctx.containers
    station = installed(ctx.config, "container-station")
    evidence: Dict[str, Any] = {"container_station": [{"version": p.get("Version"), "enabled": p.enabled}
                                                      for p in station] or None,
                                "data_roots": found.data_roots,
                                "published": [p.to_dict() for p in found.published[:SHOWN]]}
    left_out = max(0, len(found.published) - SHOWN) + found.left_out
    if left_out:
        evidence["published_not_shown"] = left_out
    if found.problems:
        evidence["problems"] = found.problems[:10]
    wide = [p for p in found.published if p.all_addresses and p.running is not False]
    if wide:
        shown = ", ".join("%d/%s → %s:%s" % (p.host_port, p.proto, p.container, p.container_port or "?")
                          for p in wide[:5])
        return failed("%d container port(s) published on every address of the NAS: %s%s" % (
            len(wide), shown, " …" if len(wide) > 5 else ""), evidence)
    if found.problems:
        return unknown("container state could not be read completely: %s" % "; ".join(found.problems[:2]), evidence)
    if found.published:
        return passed("container ports are published on specific addresses only (%d)" % len(found.published),
                      evidence)
    if station and not found.data_roots:
        return passed("Container Station is installed; no docker-proxy runs and no Docker state was found",
                      evidence)
    return passed("no container publishes a port", evidence)
