"""Who this NAS is: model, firmware, hostname, LAN addresses, a stable device id."""

from __future__ import annotations

import ipaddress
from typing import Dict, List, Optional, Sequence, Tuple

from exposure_guard.contracts import Value, sha256_hex
from exposure_guard.errors import ConfigFileError
from exposure_guard.qts.config import QtsConfig
from exposure_guard.qts.root import DEFAULT_ULINUX_CONF, PLATFORM_CONF, ULINUX_CONF, QtsRoot


class DeviceIdentity(Value):
    """Who the NAS is. ``model`` is the name on the box (platform.conf DISPLAY_NAME) when the NAS has one,
    else uLinux.conf's Model as it is; ``model_family`` is uLinux.conf's Model (``TS-X53B`` on newer
    boxes). ``firmware`` is the full release, ``Version.Number`` (``5.0.1.2376``; ``h…`` on QuTS hero)."""

    __slots__ = ("device_id", "hostname", "model", "firmware", "build", "lan_addresses", "firmware_source",
                 "model_family", "firmware_note")

    def __init__(self, device_id: str, hostname: str, model: str, firmware: str, build: str,
                 lan_addresses: Sequence[str] = (), firmware_source: str = "", model_family: str = "",
                 firmware_note: str = "") -> None:
        self.device_id = device_id
        self.hostname = hostname
        self.model = model
        self.firmware = firmware
        self.build = build
        self.lan_addresses: List[str] = list(lan_addresses)
        self.firmware_source = firmware_source
        self.model_family = model_family or model
        self.firmware_note = firmware_note  # e.g. the two copies of uLinux.conf disagree

    @property
    def model_is_family(self) -> bool:
        """True when no display name was found, so ``model`` is only the model family."""
        return self.model == self.model_family

    def to_dict(self) -> Dict[str, object]:
        return {
            "device_id": self.device_id,
            "hostname": self.hostname,
            "model": self.model,
            "firmware": self.firmware,
            "build": self.build,
            "model_family": self.model_family,
            "lan_addresses": list(self.lan_addresses),
        }


def _first(config: QtsConfig, section: str, key: str, files: List[str]) -> Tuple[str, str]:
    for file in files:
        value = config.getcfg(section, key, file)
        if value:
            return value, file
    return "", ""


class Firmware(Value):
    __slots__ = ("version", "build", "source", "note")

    def __init__(self, version: str, build: str, source: str, note: str = "") -> None:
        self.version = version  # Version.Number, e.g. 5.0.1.2376 (h5.0.1.2376 on QuTS hero); "" when unknown
        self.build = build
        self.source = source  # the QTS path it was read from
        self.note = note


def _release_in(config: QtsConfig, file: str) -> Tuple[str, str]:
    """(Version.Number, Build Number) as one copy of uLinux.conf has them."""
    version = (config.getcfg("System", "Version", file) or "").strip()
    number = (config.getcfg("System", "Number", file) or "").strip()
    build = (config.getcfg("System", "Build Number", file) or "").strip()
    if version and number and version.count(".") == 2:
        version = "%s.%s" % (version, number)
    return version, build


def read_firmware(root: QtsRoot, config: QtsConfig) -> Firmware:
    """The running release. The factory copy (/etc/default_config) is rewritten by every firmware update and
    is what QNAP's own tools read, so it wins; the runtime copy is the fallback, and a disagreement is said."""
    factory = _release_in(config, DEFAULT_ULINUX_CONF)
    runtime = _release_in(config, ULINUX_CONF)
    if factory[0]:
        note = ""
        if runtime[0] and runtime != factory:
            note = ("/etc/config/uLinux.conf says %s build %s, /etc/default_config/uLinux.conf says %s build %s; "
                    "the factory copy is authoritative" % (runtime[0], runtime[1] or "?", factory[0], factory[1] or "?"))
        return Firmware(factory[0], factory[1], root.rel(DEFAULT_ULINUX_CONF), note)
    if runtime[0]:
        return Firmware(runtime[0], runtime[1], root.rel(ULINUX_CONF))
    return Firmware("", "", "")


def display_model(config: QtsConfig) -> str:
    """DISPLAY_NAME from /etc/platform.conf (the name on the box, e.g. TVS-882); "" on boxes without it."""
    try:
        entry = config.document(PLATFORM_CONF).find_any("DISPLAY_NAME")
    except ConfigFileError:
        return ""
    return entry.value.strip() if entry is not None else ""


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
    firmware = read_firmware(root, config)
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
    family = model or "unknown"
    return DeviceIdentity(
        device_id=device_id,
        hostname=hostname or "NAS",
        model=display_model(config) or family,
        firmware=firmware.version or "unknown",
        build=firmware.build,
        lan_addresses=addresses,
        firmware_source=firmware.source,
        model_family=family,
        firmware_note=firmware.note,
    )
