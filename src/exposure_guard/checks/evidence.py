"""Reading config keys as evidence: the value, where it came from, and why it may be unknown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from exposure_guard.checks.context import CheckContext
from exposure_guard.errors import ConfigFileError
from exposure_guard.qts.config import parse_bool


class Unknowable(Exception):
    """A check cannot tell: its input is missing or unreadable. The message is the reason."""


@dataclass(frozen=True)
class KeyRead:
    file: str  # QTS path, e.g. /etc/config/uLinux.conf
    section: str
    key: str
    value: Optional[str]  # None: absent
    default: Optional[str]
    file_missing: bool = False

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
        out: Dict[str, Any] = {"file": self.file, "section": self.section, "key": self.key, "value": self.value}
        if self.value is None:
            out["default_used"] = self.default
            if self.file_missing:
                out["note"] = "file absent; QTS uses the default"
        return out


def read_key(ctx: CheckContext, file: str, section: str, key: str, default: Optional[str] = None,
             missing_file_ok: bool = False) -> KeyRead:
    """Like getcfg. A missing file is Unknowable unless QTS itself falls back to the default
    (``missing_file_ok``); an unreadable one always is."""
    shown = ctx.root.rel(file)
    try:
        doc = ctx.config.document(file)
    except ConfigFileError as exc:
        if missing_file_ok and not ctx.root.path(file).exists():
            return KeyRead(shown, section, key, None, default, file_missing=True)
        raise Unknowable(str(exc)) from None
    entry = doc.find(section, key)
    return KeyRead(shown, section, key, entry.value if entry else None, default)
