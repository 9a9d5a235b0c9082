"""Installed App Center packages as /etc/config/qpkg.conf lists them (one section per package; section
names can carry a trailing space). Facts and sources: docs/qts-facts.md#qpkgconf."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from exposure_guard.contracts import Value
from exposure_guard.errors import ConfigFileError, Unknowable
from exposure_guard.qts.config import QtsConfig, parse_bool
from exposure_guard.qts.root import QPKG_CONF

# Keys every package App Center installs has; a section with none of them was not written by an installer.
PACKAGE_KEYS = ("QPKG_File", "Install_Path", "Version", "Date", "Author", "Class")


class Package(Value):
    __slots__ = ("section", "fields")

    def __init__(self, section: str, fields: Dict[str, str]) -> None:
        self.section = section.strip()
        self.fields = fields  # keys lower-cased

    def get(self, key: str) -> Optional[str]:
        return self.fields.get(key.lower())

    @property
    def name(self) -> str:
        return self.get("Name") or self.section

    @property
    def enabled(self) -> Optional[bool]:
        return parse_bool(self.get("Enable"))

    @property
    def install_path(self) -> str:
        return (self.get("Install_Path") or "").strip()

    @property
    def shell(self) -> str:
        return (self.get("Shell") or "").strip()

    @property
    def web_ports(self) -> List[Tuple[int, bool]]:
        """(port, https) of the package's own web page (``Web_Port``, ``Web_SSL_Port``; -1 or absent: none)."""
        found = []
        for field, https in (("Web_Port", False), ("Web_SSL_Port", True)):
            try:
                port = int((self.get(field) or "").strip())
            except ValueError:
                continue
            if 0 < port < 65536:
                found.append((port, https))
        return found

    @property
    def looks_installed(self) -> bool:
        return any(self.get(key) for key in PACKAGE_KEYS)


def read_packages(config: QtsConfig) -> List[Package]:
    """Every section of qpkg.conf; [] when the file does not exist (no package installed); Unknowable when
    it cannot be read."""
    try:
        doc = config.document(QPKG_CONF)
    except ConfigFileError as exc:
        if not config.root.path(QPKG_CONF).exists():
            return []
        raise Unknowable(str(exc)) from None
    sections: Dict[str, Dict[str, str]] = {}
    order: List[str] = []
    for entry in doc.entries:
        name = entry.section.strip()
        if not name:
            continue
        if name.lower() not in sections:
            sections[name.lower()] = {}
            order.append(name)
        sections[name.lower()].setdefault(entry.key.strip().lower(), entry.value.strip())
    return [Package(name, sections[name.lower()]) for name in order]


def inside_qpkg_folder(path: str) -> bool:
    """True for a path inside a package folder: ``<volume>/.qpkg/<Name>/...`` (no hidden name after it)."""
    parts = [p for p in path.split("/") if p]
    if ".qpkg" not in parts:
        return False
    after = parts[parts.index(".qpkg") + 1:]
    return bool(after) and not after[0].startswith(".") and ".." not in after
