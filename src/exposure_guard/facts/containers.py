"""Ports that containers publish on the NAS (Container Station / Docker), found without the Docker CLI:
the ``docker-proxy`` processes Docker starts per published port (their command line names the host and
container ports), and the engine's own state (``containers/<id>/hostconfig.json`` PortBindings with
``config.v2.json`` for the name and whether it runs) under Docker's data root, which on QTS is
``<volume>/Container/container-station-data/lib/docker``. Everything read is bounded: a NAS can hold many
containers and any of these files may be damaged. Facts and sources: docs/qts-facts.md#network-services."""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from exposure_guard.contracts import Value
from exposure_guard.qts.root import QtsRoot

CONTAINER_STATION = "container-station"  # its qpkg.conf section
DATA_ROOTS = ("share/*/Container/container-station-data/lib/docker", "var/lib/docker")
MAX_CONTAINERS = 500
MAX_STATE_BYTES = 512 * 1024
MAX_PUBLISHED = 1000
MAX_CMDLINE = 4096


class Published(Value):
    """One published port: ``host_ip:host_port/proto`` → ``container:container_port``."""

    __slots__ = ("host_ip", "host_port", "proto", "container", "container_port", "running", "source")

    def __init__(self, host_ip: str, host_port: int, proto: str, container: str, container_port: Optional[int],
                 running: Optional[bool], source: str) -> None:
        self.host_ip = (host_ip or "0.0.0.0")[:64]  # what a device or a state file says is capped
        self.host_port = host_port
        self.proto = proto
        self.container = container[:64]
        self.container_port = container_port
        self.running = running
        self.source = source

    @property
    def all_addresses(self) -> bool:
        return self.host_ip in ("0.0.0.0", "::", "")

    def key(self) -> Tuple[str, int, str]:
        return (self.host_ip, self.host_port, self.proto)

    def to_dict(self) -> Dict[str, Any]:
        return {"host": "%s:%d/%s" % (self.host_ip if ":" not in self.host_ip else "[%s]" % self.host_ip,
                                       self.host_port, self.proto),
                "container": self.container, "container_port": self.container_port, "running": self.running,
                "all_addresses": self.all_addresses, "found_by": self.source}


class ContainerPorts:
    def __init__(self) -> None:
        self.published: List[Published] = []
        self.data_roots: List[str] = []  # where engine state was found (QTS paths)
        self.problems: List[str] = []  # state that could not be read (the verdict may then be unknown)
        self.left_out = 0

    def add(self, item: Published) -> None:
        same = next((p for p in self.published if p.key() == item.key()), None)
        if same is not None:  # a docker-proxy knows the container's address, the engine state its name
            if item.source == "engine state" and same.source == "docker-proxy process":
                same.container, same.source = item.container, same.source + " and engine state"
            return
        if len(self.published) >= MAX_PUBLISHED:
            self.left_out += 1
            return
        self.published.append(item)

    def tcp_ports(self) -> List[Published]:
        return [p for p in self.published if p.proto == "tcp" and p.running is not False]


def _port(text: Any) -> Optional[int]:
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if 0 < value < 65536 else None


def parse_docker_proxy(argv: List[str]) -> Optional[Published]:
    """``docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80``"""
    options: Dict[str, str] = {}
    for flag, value in zip(argv[1:], argv[2:]):
        if flag.startswith("-") and not value.startswith("-"):
            options[flag.lstrip("-")] = value
    host_port = _port(options.get("host-port", ""))
    proto = options.get("proto", "tcp").lower()
    if host_port is None or proto not in ("tcp", "udp", "sctp"):
        return None
    return Published(options.get("host-ip", "0.0.0.0"), host_port, proto, options.get("container-ip", "?"),
                     _port(options.get("container-port", "")), True, "docker-proxy process")


def _proxies(root: QtsRoot, found: ContainerPorts) -> None:
    proc = root.path("proc")
    try:
        entries = [e for e in os.listdir(str(proc)) if e.isdigit()]
    except OSError:
        return
    for entry in entries:
        try:
            with open(str(proc / entry / "cmdline"), "rb") as handle:
                raw = handle.read(MAX_CMDLINE)
        except OSError:
            continue
        argv = [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
        if argv and os.path.basename(argv[0]) == "docker-proxy":
            item = parse_docker_proxy(argv)
            if item is not None:
                found.add(item)


def _read_json(path: str) -> Dict[str, Any]:
    with open(path, "rb") as handle:
        raw = handle.read(MAX_STATE_BYTES + 1)
    if len(raw) > MAX_STATE_BYTES:
        raise ValueError("larger than %d KiB" % (MAX_STATE_BYTES // 1024))
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _engine_state(root: QtsRoot, found: ContainerPorts) -> None:
    for pattern in DATA_ROOTS:
        for data_root in sorted(glob.glob(str(root.path(pattern))))[:8]:
            containers = os.path.join(data_root, "containers")
            try:
                ids = sorted(os.listdir(containers))
            except OSError as exc:
                if os.path.isdir(data_root):
                    found.problems.append("%s: %s" % (_shown(root, containers), exc.strerror or exc))
                continue
            found.data_roots.append(_shown(root, data_root))
            if len(ids) > MAX_CONTAINERS:
                found.problems.append("%d containers under %s: only the first %d read"
                                      % (len(ids), _shown(root, data_root), MAX_CONTAINERS))
            for cid in ids[:MAX_CONTAINERS]:
                _container(root, os.path.join(containers, cid), found)


def _container(root: QtsRoot, folder: str, found: ContainerPorts) -> None:
    try:
        host = _read_json(os.path.join(folder, "hostconfig.json"))
    except FileNotFoundError:
        return
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: a deeply nested "JSON" bomb
        found.problems.append("%s: %s" % (_shown(root, os.path.join(folder, "hostconfig.json")), str(exc)[:200]))
        return
    name, running = os.path.basename(folder)[:12], None
    try:
        config = _read_json(os.path.join(folder, "config.v2.json"))
        name = str(config.get("Name") or name).lstrip("/")[:64]
        state = config.get("State")
        running = bool(state.get("Running")) if isinstance(state, dict) else None
    except (OSError, ValueError, RecursionError):
        pass
    bindings = host.get("PortBindings")
    if not isinstance(bindings, dict):
        return
    for spec, hosts in bindings.items():
        port_text, _slash, proto = str(spec).partition("/")
        for binding in hosts if isinstance(hosts, list) else []:
            if not isinstance(binding, dict):
                continue
            host_port = _port(binding.get("HostPort", ""))
            if host_port is not None:
                found.add(Published(str(binding.get("HostIp") or "0.0.0.0"), host_port, (proto or "tcp").lower(),
                                    name, _port(port_text), running, "engine state"))


def _shown(root: QtsRoot, path: str) -> str:
    rel = os.path.relpath(path, str(root.root))
    return root.rel(rel)


def container_ports(root: QtsRoot) -> ContainerPorts:
    """Every published port found; never raises for damaged state (it is listed in ``problems``)."""
    found = ContainerPorts()
    _proxies(root, found)
    _engine_state(root, found)
    return found
