"""A QTS file system seen through ``--root``: every QTS path is resolved below it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

ULINUX_CONF = "etc/config/uLinux.conf"
DEFAULT_ULINUX_CONF = "etc/default_config/uLinux.conf"
UPNPC_CONF = "etc/config/upnpc.conf"
QNAPDDNS_CONF = "etc/config/qnapddns.conf"
QPKG_CONF = "etc/config/qpkg.conf"
PLATFORM_CONF = "etc/platform.conf"
QID_CONF = "etc/config/qid.conf"


class QtsRoot:
    """The NAS root: ``/`` on a NAS, a fake tree in tests and the demo."""

    def __init__(self, root: Union[str, os.PathLike[str]] = "/", use_tools: Optional[bool] = None) -> None:
        self.root = Path(root)
        # QTS's own commands (setcfg, daemon_mgr, log_tool) are used on the live system; tests may turn
        # them on for a fake tree that carries test doubles under DIR/sbin.
        self.use_tools = self.is_live if use_tools is None else use_tools

    @property
    def is_live(self) -> bool:
        """True on the real system root, where QTS's own tools may be called."""
        try:
            return self.root.resolve() == Path("/")
        except OSError:
            return False

    def path(self, rel: str) -> Path:
        rel = rel.lstrip("/")
        return self.root / rel

    def rel(self, rel: str) -> str:
        """The path as shown in evidence: the QTS absolute path, independent of --root."""
        return "/" + rel.lstrip("/")

    def tool(self, name: str) -> Optional[str]:
        """A QTS command such as ``/sbin/setcfg`` (root-relative) when tools are in use and present."""
        if not self.use_tools:
            return None
        candidate = self.path(name)
        if candidate.is_file() and os.access(str(candidate), os.X_OK):
            return str(candidate)
        return None

    def __repr__(self) -> str:
        return "QtsRoot(%r)" % str(self.root)


def default_state_dir(root_dir: str) -> Path:
    """``--root``-relative state for tests and the demo; on a NAS the QPKG sets EXPOSURE_GUARD_STATE_DIR."""
    env = os.environ.get("EXPOSURE_GUARD_STATE_DIR")
    if env:
        return Path(env)
    if Path(root_dir).resolve() == Path("/"):
        return Path("/var/lib/exposure-guard")
    return Path(root_dir) / "var" / "exposure-guard"
