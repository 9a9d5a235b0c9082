"""Who this NAS is: model, firmware, hostname, LAN addresses, a stable device id."""

from __future__ import annotations

import ipaddress
from typing import Dict, List, Optional, Sequence

from exposure_guard.contracts import Value, sha256_hex
from exposure_guard.qts.config import QtsConfig
from exposure_guard.qts.root import DEFAULT_ULINUX_CONF, ULINUX_CONF, QtsRoot


class DeviceIdentity(Value):
    __slots__ = ("device_id", "hostname", "model", "firmware", "build", "lan_addresses", "firmware_source")

    def __init__(self, device_id: str, hostname: str, model: str, firmware: str, build: str,
                 lan_addresses: Sequence[str] = (), firmware_source: str = "") -> None:
        self.device_id = device_id
        self.hostname = hostname
        self.model = model
        self.firmware = firmware
        self.build = build
        self.lan_addresses: List[str] = list(lan_addresses)
        self.firmware_source = firmware_source

    def to_dict(self) -> Dict[str, object]:
        return {
            "device_id": self.device_id,
            "hostname": self.hostname,
            "model": self.model,
            "firmware": self.firmware,
            "build": self.build,
            "lan_addresses": list(self.lan_addresses),
        }


def _first(config: QtsConfig, section: str, key: str, files: List[str]) -> tuple[str, str]:
    for file in files:
        value = config.getcfg(section, key, file)
        if value:
            return value, file
    return "", ""


def read_mac(root: QtsRoot, config: QtsConfig) -> str:
    mac = config.getcfg("MAC", "eth0", "var/MacAddress") or ""
    if not mac:
        try:
            mac = root.path("sys/class/net/eth0/address").read_text("ascii", "replace").strip()
        except OSError:
            mac = ""
    return mac.lower()


def lan_addresses(root: QtsRoot, config: QtsConfig) -> List[str]:
    """IPv4/IPv6 addresses this NAS has on its LAN.

    Live: the kernel's view (``ip``-free: a UDP socket's local address per route plus /proc). Fake trees:
    ``etc/config/uLinux.conf [Network] ...`` keys and ``proc/net/if_inet6``. Settings may add more."""
    found: List[str] = []
    doc_ok = True
    try:
        doc = config.document(ULINUX_CONF)
    except Exception:
        doc_ok = False
    if doc_ok:
        for entry in doc.entries:
            if entry.key.lower() in ("ip address", "ipaddress", "ip") and entry.section.lower().startswith(
                ("eth", "network", "bond", "interface")
            ):
                _add_address(found, entry.value)
    try:
        text = root.path("proc/net/if_inet6").read_text("ascii", "replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and len(parts[0]) == 32 and parts[5] != "lo":
            raw = parts[0]
            _add_address(found, ":".join(raw[i : i + 4] for i in range(0, 32, 4)))
    if root.is_live:
        from exposure_guard.netif import interface_ipv4_addresses  # sockets: only on the live system

        for address in interface_ipv4_addresses():
            _add_address(found, address)
    return found


def _add_address(found: List[str], value: str) -> None:
    try:
        address = ipaddress.ip_address(value.strip().split("%")[0])
    except ValueError:
        return
    if address.is_loopback or address.is_unspecified or address.is_multicast or address.is_link_local:
        return
    text = str(address)
    if text not in found:
        found.append(text)


def read_identity(root: QtsRoot, config: QtsConfig, extra_addresses: Optional[List[str]] = None) -> DeviceIdentity:
    # The factory copy is rewritten by every firmware update, so it names the running firmware.
    firmware, source = _first(config, "System", "Version", [DEFAULT_ULINUX_CONF, ULINUX_CONF])
    build, _ = _first(config, "System", "Build Number", [DEFAULT_ULINUX_CONF, ULINUX_CONF])
    model, _ = _first(config, "System", "Model", [ULINUX_CONF, DEFAULT_ULINUX_CONF])
    if not model:
        model = config.getcfg("Project", "Name", "var/default") or ""
    hostname = config.getcfg("System", "Server Name") or ""
    if not hostname and root.is_live:
        import socket

        hostname = socket.gethostname()
    addresses = lan_addresses(root, config)
    for extra in extra_addresses or []:
        _add_address(addresses, extra)
    mac = read_mac(root, config)
    # Stable across renames and re-installs: derived from hardware facts, never the hostname.
    seed = "|".join([mac or "", model, config.getcfg("System", "Internal Model") or ""])
    if not mac:
        seed += "|" + (config.getcfg("System", "Serial Number") or str(root.root.resolve()))
    device_id = "qnap-" + sha256_hex(seed.encode("utf-8"))[:24]
    return DeviceIdentity(
        device_id=device_id,
        hostname=hostname or "NAS",
        model=model or "unknown",
        firmware=firmware or "unknown",
        build=build or "",
        lan_addresses=addresses,
        firmware_source=root.rel(source) if source else "",
    )
