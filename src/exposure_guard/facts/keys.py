"""QTS config keys as declared inputs: one :class:`Key` names the file, section, key and the firmware
default, and is used both to read the value (like ``getcfg``) and to say in ``explain`` what was read."""

from __future__ import annotations

from typing import Any, Dict, Optional

from exposure_guard.contracts import Value
from exposure_guard.errors import ConfigFileError, Unknowable
from exposure_guard.qts.config import QtsConfig, parse_bool

ANY_SECTION = "*"  # a Key's section when the file's section names are not known: the first match anywhere


class Key(Value):
    """A config key a check reads. ``default`` is what QTS itself uses when the key is absent (None: no
    default); ``missing_file_ok``: QTS also falls back to the default when the whole file is absent."""

    __slots__ = ("file", "section", "key", "default", "values", "note", "missing_file_ok")

    def __init__(self, file: str, section: str, key: str, default: Optional[str] = None, values: str = "",
                 note: str = "", missing_file_ok: bool = False) -> None:
        self.file = file  # root-relative, e.g. etc/config/uLinux.conf
        self.section = section
        self.key = key
        self.default = default
        self.values = values  # the accepted values, for explain (e.g. "TRUE/FALSE")
        self.note = note  # anything else a reader must know (e.g. "key name unverified")
        self.missing_file_ok = missing_file_ok

    def describe(self) -> str:
        """One explain line: ``/etc/config/upnpc.conf [UPnP_Global] Enable (TRUE/FALSE, default FALSE)``."""
        parts = [self.values] if self.values else []
        if self.default is not None:
            parts.append("default %s" % self.default)
        if self.note:
            parts.append(self.note)
        tail = " (%s)" % ", ".join(parts) if parts else ""
        section = "any section" if self.section == ANY_SECTION else self.section
        return "/%s [%s] %s%s" % (self.file.lstrip("/"), section, self.key, tail)


class KeyRead(Value):
    __slots__ = ("file", "section", "key", "value", "default", "file_missing")

    def __init__(self, file: str, section: str, key: str, value: Optional[str], default: Optional[str],
                 file_missing: bool = False) -> None:
        self.file = file  # QTS path, e.g. /etc/config/uLinux.conf
        self.section = section
        self.key = key
        self.value = value  # None: absent
        self.default = default
        self.file_missing = file_missing

    @property
    def effective(self) -> Optional[str]:
        """What QTS itself would use: the value, else getcfg's default."""
        return self.value if self.value is not None else self.default

    def as_bool(self) -> Optional[bool]:
        return parse_bool(self.effective)

    def as_port(self) -> Optional[int]:
        try:
            port = int((self.effective or "").strip())
        except ValueError:
            return None
        return port if 0 < port < 65536 else None

    def evidence(self) -> Dict[str, Any]:
        """The key as read: file, section, key, value, and the firmware default (``default_used`` too when
        the key was absent and QTS falls back to it)."""
        out: Dict[str, Any] = {"file": self.file, "section": self.section, "key": self.key, "value": self.value,
                               "firmware_default": self.default}
        if self.value is None:
            out["default_used"] = self.default
            if self.file_missing:
                out["note"] = "file absent; QTS uses the default"
        return out


def read_key(config: QtsConfig, key: Key) -> KeyRead:
    """Like getcfg. A missing file is Unknowable unless QTS itself falls back to the default
    (``key.missing_file_ok``); an unreadable one always is."""
    shown = config.root.rel(key.file)
    try:
        doc = config.document(key.file)
    except ConfigFileError as exc:
        if key.missing_file_ok and not config.root.path(key.file).exists():
            return KeyRead(shown, key.section, key.key, None, key.default, file_missing=True)
        raise Unknowable(str(exc)) from None
    if key.section == ANY_SECTION:  # the evidence then names the section it was found in
        entry = doc.find_any(key.key)
        section = entry.section if entry is not None else key.section
    else:
        entry, section = doc.find(key.section, key.key), key.section
    return KeyRead(shown, section, key.key, entry.value if entry is not None else None, key.default)


def read_port(config: QtsConfig, key: Key, fallback: int) -> int:
    """A port setting as QTS would use it; ``fallback`` when unreadable or not a port number."""
    try:
        return read_key(config, key).as_port() or fallback
    except Unknowable:
        return fallback
