"""Who opened a router port mapping to this NAS, and what it leads to. UPnP records no owner: every label
is an inference from the mapping's description, internal client and ports and the NAS's own settings,
and says what it rests on (``why``); when nothing fits, the owner is ``unknown``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from exposure_guard.contracts import Value
from exposure_guard.errors import Unknowable
from exposure_guard.facts import inputs
from exposure_guard.facts.keys import Key
from exposure_guard.facts.ports import service_ports

if TYPE_CHECKING:
    from exposure_guard.context import CheckContext
    from exposure_guard.upnp.models import PortMapping

ARC, APP, CONTAINER, OTHER_HOST, UNKNOWN = "arc", "app", "container", "other-host", "unknown"

# Description words of mappings made by QNAP's upnpcd (heuristic: the exact strings are not documented).
ARC_DESCRIPTION_WORDS = ("myqnapcloud", "mycloudnas", "qnap", "qts")  # longest first: the one named

# Software known to open its own router port by UPnP: (word in the description, name, its usual port).
APP_SIGNATURES: Tuple[Tuple[str, str, Optional[int]], ...] = (
    ("plex", "Plex Media Server", 32400),
    ("emby", "Emby Server", None),
    ("syncthing", "Syncthing", None),
    ("resilio", "Resilio Sync", None),
    ("transmission", "Transmission", None),
    ("qbittorrent", "qBittorrent", None),
    ("deluge", "Deluge", None),
    ("teamviewer", "TeamViewer", None),
)


class Owner(Value):
    __slots__ = ("kind", "label", "why")

    def __init__(self, kind: str, label: str, why: str) -> None:
        self.kind = kind  # arc | app | other-host | unknown
        self.label = label
        self.why = why

    def to_dict(self) -> Dict[str, str]:
        return {"kind": self.kind, "label": self.label, "why": self.why}


class MappingContext(Value):
    """What the labels rest on, read once per run: this NAS's addresses, the router ports ARC recorded
    (with the key each came from), whether ARC is on, and the NAS's service ports by name."""

    __slots__ = ("nas_addresses", "arc_ports", "arc_on", "services", "containers")

    def __init__(self, nas_addresses: Sequence[str], arc_ports: Dict[int, str], arc_on: Optional[bool],
                 services: Dict[int, str], containers: Optional[Dict[int, str]] = None) -> None:
        self.nas_addresses = tuple(nas_addresses)
        self.arc_ports = arc_ports
        self.arc_on = arc_on
        self.services = services
        self.containers = containers or {}  # host port → container name, of ports containers publish


def arc_recorded(ctx: CheckContext) -> List[Tuple[Key, str, int]]:
    """(key, service, router port) of every port ARC recorded in uLinux.conf; unreadable keys are skipped."""
    found: List[Tuple[Key, str, int]] = []
    for key, label in inputs.EXT_PORTS:
        try:
            port = ctx.read(key).as_port()
        except Unknowable:
            continue
        if port:
            found.append((key, label, port))
    return found


def mapping_context(ctx: CheckContext, nas_addresses: Sequence[str]) -> MappingContext:
    arc_ports: Dict[int, str] = {}
    for key, _label, port in arc_recorded(ctx):
        arc_ports.setdefault(port, "[%s] %s" % (key.section, key.key))
    try:
        arc_on: Optional[bool] = bool(ctx.read(inputs.ARC_ENABLE).as_bool()) or ctx.running("upnpcd")
    except Unknowable:
        arc_on = True if ctx.running("upnpcd") else None
    containers = {p.host_port: p.container for p in ctx.containers.tcp_ports()}
    return MappingContext(nas_addresses, arc_ports, arc_on, service_ports(ctx.config), containers)


def owner_of(mapping: PortMapping, known: MappingContext) -> Owner:
    """Who most likely made ``mapping``; the rules, first match wins, are in docs/router.md."""
    if mapping.internal_client not in known.nas_addresses:
        return Owner(OTHER_HOST, "another LAN host (%s)" % mapping.internal_client,
                     "its internal client is not an address of this NAS")
    words = mapping.description.lower()
    arc_word = next((w for w in ARC_DESCRIPTION_WORDS if w in words), "")
    recorded = known.arc_ports.get(mapping.external_port)
    if arc_word or recorded:
        why = ("its description names %r" % arc_word) if arc_word else \
            ("its router port %d is the one ARC recorded in uLinux.conf %s" % (mapping.external_port, recorded))
        label = "this NAS's Auto Router Configuration (myQNAPcloud)"
        if known.arc_on is False:
            label += ", left over: ARC is off now"
        return Owner(ARC, label, why)
    for word, name, _port in APP_SIGNATURES:
        if word in words:
            return Owner(APP, name, "its description names %r" % word)
    container = known.containers.get(mapping.internal_port)
    if container is not None:
        return Owner(CONTAINER, "container %s (or software in it)" % container,
                     "internal port %d is published by container %s" % (mapping.internal_port, container))
    for _word, name, port in APP_SIGNATURES:
        if port is not None and mapping.internal_port == port:
            return Owner(APP, name, "internal port %d is %s's usual port" % (port, name))
    return Owner(UNKNOWN, "unknown", "neither its description (%r) nor its ports match ARC or a known app"
                 % mapping.description)


def leads_to(mapping: PortMapping, known: MappingContext) -> str:
    """The NAS service on the mapping's internal port, by the NAS's settings or a container publishing it
    ("" when none is known)."""
    port = mapping.internal_port or mapping.external_port
    if port in known.services:
        return known.services[port]
    return "container %s" % known.containers[port] if port in known.containers else ""
