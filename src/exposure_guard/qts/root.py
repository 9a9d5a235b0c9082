"""A QTS file system seen through ``--root``: every QTS path is resolved below it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import List, Optional, Union

from exposure_guard.errors import UnsafePathError

ULINUX_CONF = "etc/config/uLinux.conf"
DEFAULT_ULINUX_CONF = "etc/default_config/uLinux.conf"
UPNPC_CONF = "etc/config/upnpc.conf"
QNAPDDNS_CONF = "etc/config/qnapddns.conf"
QPKG_CONF = "etc/config/qpkg.conf"
PLATFORM_CONF = "etc/platform.conf"
QID_CONF = "etc/config/qid.conf"
SMB_CONF = "etc/config/smb.conf"
SNMPD_CONF = "etc/config/snmpd.conf"
QUFIREWALL_CONF = "etc/config/QuFirewall.conf"


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

    def confined(self, rel: str) -> Path:
        """``path(rel)`` for a root-relative path read from somewhere we do not write ourselves (a journal
        line): refused unless it is relative, has no ``..`` and, links resolved, stays inside the root."""
        text = str(rel)
        parts = Path(text).parts
        resolved_root = self.root.resolve()
        if not text or text.startswith("/") or "\0" in text or ".." in parts:
            raise UnsafePathError("%r leaves the checked root %s" % (text[:200], resolved_root))
        resolved = (self.root / text).resolve()
        if resolved != resolved_root and resolved_root not in resolved.parents:
            raise UnsafePathError("%r leaves the checked root %s (it leads to %s)" % (text[:200], resolved_root,
                                                                                    resolved))
        return self.root / text

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


def secure_state_dir(state_dir: Union[str, os.PathLike[str]], root: Optional[Union[str, os.PathLike[str]]] = None,
                     create: bool = True) -> Path:
    """The state dir, made sure no other user can tamper with it; created (0700) when ``create``.

    The state dir must be a real directory (not a link) owned by the running user and not writable by group
    or others. When it lies inside a checked ``--root`` other than ``/``, every directory from it up to the
    root must be owned by the running user or root and not writable by group or others either: whoever
    can write one of them can swap what lies below and make the journal or backups land anywhere."""
    state = Path(os.path.abspath(str(state_dir)))
    chain: List[Path] = [state]
    if root is not None:
        top = Path(os.path.abspath(str(root)))
        if top != Path("/") and top in state.parents:
            chain += [parent for parent in state.parents if parent == top or top in parent.parents]
    missing: List[Path] = []
    for path in reversed(chain):  # from the root down: a safe parent means nobody swaps what is below it
        if missing:
            missing.append(path)
            continue
        # The --root named on the command line may itself be a link; everything below it may not.
        follow = path == chain[-1] and path != state
        try:
            info = os.stat(str(path)) if follow else os.lstat(str(path))
        except FileNotFoundError:
            missing.append(path)
            continue
        _check_private(path, info, state, own_only=path == state)
    if missing and not create:
        return state
    if missing:
        missing[0].parent.mkdir(parents=True, exist_ok=True)  # above the checked chain: as the system has it
    for path in missing:
        try:
            os.mkdir(str(path), 0o700)
        except FileExistsError:
            pass
        _check_private(path, os.lstat(str(path)), state, own_only=path == state)
    return state


def _check_private(path: Path, info: os.stat_result, state: Path, own_only: bool) -> None:
    """Raise UnsafePathError naming ``path`` unless it is a directory only this user (or root) controls."""
    me = os.geteuid()
    problem, remedy = "", ""
    if stat.S_ISLNK(info.st_mode):
        problem, remedy = "is a symbolic link", "replace it with a real directory"
    elif not stat.S_ISDIR(info.st_mode):
        problem, remedy = "is not a directory", "move it away"
    elif info.st_uid != me and (own_only or info.st_uid != 0):
        problem, remedy = "is owned by uid %d, not by this user (uid %d)" % (info.st_uid, me), \
            "chown %d %s" % (me, path)
    elif info.st_mode & 0o022:
        problem, remedy = "is writable by group or others (mode %04o)" % stat.S_IMODE(info.st_mode), \
            "chmod go-w %s" % path
    if problem:
        where = "" if path == state else " (%s)" % path
        raise UnsafePathError(
            "refusing the state dir %s: %s%s %s; another user could plant links there and make the agent write "
            "where they choose. Fix: %s, or pass --state-dir with a private directory"
            % (state, "it" if path == state else "its parent", where, problem, remedy))
