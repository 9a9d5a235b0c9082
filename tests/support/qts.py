"""Fake QTS trees for tests: the QTS ini files the checks read, and byte-for-byte tree snapshots.

The fixture trees (exposed, factory-default, hardened, nasty) live in tests/fixtures/qts
(``tests.support.paths.QTS_TREES``); ``write_tree`` makes a minimal one from a few keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

Sections = Mapping[str, Mapping[str, Any]]

# The lab NAS's uLinux.conf (tests/lab, bench): admin on 8080 / 443, SSH off on 22, FTP and Web Server on
# their defaults. Only the router and reachability checks read it there.
LAB_ULINUX: Dict[str, Dict[str, Any]] = {
    "System": {"Server Name": "LABNAS", "Web Access Port": 8080},
    "Stunnel": {"Enable": 1, "Port": 443},
    "LOGIN": {"SSH Enable": "FALSE", "SSH Port": 22},
    "FTP": {"Port": 21},
    "QWEB": {"Port": 80, "SSL_PORT": 8081},
}

# /etc/default_config/uLinux.conf: where the firmware version is read from.
DEFAULT_FIRMWARE: Dict[str, Dict[str, Any]] = {"System": {"Version": "5.1.4", "Build Number": "20231128"}}


def ini_text(sections: Sections) -> str:
    """``{section: {key: value}}`` as QTS writes an ini file (``[Section]`` then ``Key = value`` lines)."""
    lines: List[str] = []
    for section, keys in sections.items():
        lines.append("[%s]" % section)
        lines += ["%s = %s" % (key, value) for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def merged(base: Sections, extra: Sections) -> Dict[str, Dict[str, Any]]:
    """``base`` with the keys of ``extra`` set on top (a new dict; neither argument changes)."""
    out = {section: dict(keys) for section, keys in base.items()}
    for section, keys in extra.items():
        out.setdefault(section, {}).update(keys)
    return out


def write_tree(root: Path, ulinux: Union[str, Sections], default: Union[str, Sections, None] = DEFAULT_FIRMWARE,
               files: Optional[Mapping[str, Union[str, bytes]]] = None) -> Path:
    """A fake QTS root: etc/config/uLinux.conf (text, or ``{section: {key: value}}``), etc/default_config/
    uLinux.conf from ``default`` (None: no such file), and ``files`` ({relative path: content}); returns root."""

    def put(rel: str, content: Union[str, bytes]) -> None:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)

    put("etc/config/uLinux.conf", ulinux if isinstance(ulinux, str) else ini_text(ulinux))
    if default is not None:
        put("etc/default_config/uLinux.conf", default if isinstance(default, str) else ini_text(default))
    for rel, content in (files or {}).items():
        put(rel, content)
    return root


def tree_bytes(root: Path) -> List[Tuple[str, bytes]]:
    """Every file below root with its bytes (state dirs excluded), for byte-identical comparisons."""
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and "var" not in path.relative_to(root).parts:
            out.append((str(path.relative_to(root)), path.read_bytes()))
    return out
