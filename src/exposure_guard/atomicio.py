"""Crash-safe file writes: temp file in the same folder, fsync, rename, fsync the folder.

After a crash at any point the target holds either the old or the new bytes, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Optional, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, data: bytes, mode: Optional[int] = None, _crash_after: str = "") -> None:
    """Replace ``path`` with ``data`` atomically, keeping the original mode (or ``mode`` for new files).

    ``_crash_after`` names a step after which to raise (``tmp-created``, ``written``, ``fsynced``,
    ``renamed``): the crash-safety test uses it to stop the writer between every step.
    """
    target = Path(path)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    keep_mode = mode
    try:
        st = target.stat()
        keep_mode = stat.S_IMODE(st.st_mode)
    except FileNotFoundError:
        pass
    fd, tmp_name = _create_temp(folder, target.name)
    try:
        if _crash_after == "tmp-created":
            raise _SimulatedCrash(tmp_name)
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            if _crash_after == "written":
                raise _SimulatedCrash(tmp_name)
            handle.flush()
            os.fsync(handle.fileno())
        if _crash_after == "fsynced":
            raise _SimulatedCrash(tmp_name)
        if keep_mode is not None:
            os.chmod(tmp_name, keep_mode)
        os.replace(tmp_name, str(target))
        if _crash_after == "renamed":
            raise _SimulatedCrash("")
        fsync_dir(folder)
    except _SimulatedCrash:
        raise
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise



def _create_temp(folder: Path, name: str) -> Tuple[int, str]:
    """A new private ``.NAME.<random>.tmp`` in ``folder`` (O_EXCL: never an existing file or a planted link)."""
    for _attempt in range(100):
        candidate = str(folder / (".%s.%s.tmp" % (name, os.urandom(6).hex())))
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            return os.open(candidate, flags, 0o600), candidate
        except FileExistsError:
            continue
    raise FileExistsError("no free temporary name in %s" % folder)


def append_line_durably(path: PathLike, line: str) -> None:
    """Append one line (a journal entry) and fsync: an append of a whole line is all-or-nothing
    for readers that skip a torn last line."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    # Never through a link: a planted journal.jsonl -> /etc/passwd must not get our lines appended.
    fd = os.open(str(target), os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn last line (power loss) must not swallow this entry
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: PathLike, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` with ``data`` and fsync it; FileExistsError when anything (a file, a link) is
    already there: never writes through a planted name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(str(path), flags, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(str(path))
        raise


def read_bytes_nofollow(path: PathLike) -> bytes:
    """The bytes of a regular file, refusing a symbolic link (OSError ELOOP)."""
    fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


class _SimulatedCrash(Exception):
    """Raised only by tests through ``_crash_after``; carries the temp file left behind."""
