"""What a .qpkg is made of (sections, members, the inspection result) and the bounded readers the
inspector uses on hostile files: a seekable window of a file, a decompression cap, a member lister.
Layout facts: docs/qpkg-format.md."""

from __future__ import annotations

import io
import stat
import tarfile
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Dict, List, Optional, Tuple

TAIL_SIZE = 100
CHECKSUM_KEY = 3589
CHECKSUM_BASE = 1000000000
FLAGS = ("QNAPQPKG", "QNAPQFIX")


DATA_MAGIC = {
    "data.tar.gz": b"\x1f\x8b",
    "data.tar.bz2": b"BZh",
    "data.tar.xz": b"\xfd7zXZ\x00",
    "data.tar.7z": b"7z\xbc\xaf\x27\x1c",
}


class QpkgReadError(Exception):
    """The file cannot be read at all (missing, unreadable, too small)."""


@dataclass
class Member:
    name: str
    size: int
    mode: int
    kind: str  # file | dir | symlink | hardlink | other
    target: str = ""

    def line(self) -> str:
        kinds = {"file": "-", "dir": "d", "symlink": "l", "hardlink": "h"}
        text = "%s%s %10d  %s" % (kinds.get(self.kind, "?"), stat.filemode(self.mode)[1:], self.size, self.name)
        return text + (" -> " + self.target if self.target else "")


@dataclass
class Section:
    name: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class Inspection:
    path: str
    size: int = 0
    sha256: str = ""
    script_len: int = 0
    offsets: List[int] = field(default_factory=list)
    sections: List[Section] = field(default_factory=list)
    data_name: str = "data.tar.gz"
    dd_count: Optional[int] = None
    signature_blocks: List[Tuple[int, int]] = field(default_factory=list)  # (type, size)
    tail: Dict[str, str] = field(default_factory=dict)
    checksum_expected: str = ""
    qpkg_cfg: Dict[str, str] = field(default_factory=dict)
    built_info: str = ""
    control_members: List[Member] = field(default_factory=list)
    data_members: List[Member] = field(default_factory=list)
    data_unpacked: int = 0
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["sections"] = [dict(asdict(s), length=s.length) for s in self.sections]
        return out


# ---------------------------------------------------------------------------------------------------
# bounded readers

class Slice(io.RawIOBase):
    """A read-only, seekable window [start, end) of an open binary file."""

    def __init__(self, handle: IO[bytes], start: int, end: int) -> None:
        super().__init__()
        self._handle = handle
        self._start = start
        self._end = end
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end - self._start}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        remaining = self._end - self._start - self._pos
        if remaining <= 0:
            return 0
        want = min(len(buffer), remaining)
        self._handle.seek(self._start + self._pos)
        data = self._handle.read(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class Capped(io.RawIOBase):
    """Passes reads through and fails once more than ``limit`` bytes came out (decompression bombs)."""

    def __init__(self, inner: IO[bytes], limit: int, what: str) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self._what = what
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        self.count += len(data)
        if self.count > self._limit:
            raise ValueError("%s unpacks to more than %d bytes" % (self._what, self._limit))
        buffer[: len(data)] = data
        return len(data)


def list_members(archive: tarfile.TarFile, what: str, max_members: int) -> List[Member]:
    out: List[Member] = []
    for info in archive:
        if len(out) >= max_members:
            raise ValueError("%s has more than %d members" % (what, max_members))
        if info.isdir():
            kind = "dir"
        elif info.isfile():
            kind = "file"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        else:
            kind = "other"
        out.append(Member(info.name, info.size if kind == "file" else 0, info.mode, kind, info.linkname or ""))
    return out


def unsafe_name(name: str) -> bool:
    parts = name.split("/")
    return name.startswith("/") or ".." in parts
