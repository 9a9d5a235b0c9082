"""QTS ini-style config files with exactly the semantics of ``/sbin/getcfg`` and ``/sbin/setcfg``.

getcfg: section and key match case-insensitively; spaces around ``=`` are optional; a section ends at
the next ``[`` line; keys before any section belong to the section ``""``; the first match wins;
the default file is ``/etc/config/uLinux.conf``.
setcfg: replaces just the one value (keeping the key's spelling, the spacing and the line ending),
or adds the key at the end of its section, or adds the section at the end of the file; every other
byte is kept; the write is atomic and keeps the file's mode (0644 for a new file). A setting that
getcfg could not read back (a line break in the value, ``=`` in the key, ...) is refused.

The parser works on bytes so CRLF files, odd encodings and binary junk survive a rewrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from exposure_guard.atomicio import atomic_write
from exposure_guard.contracts import Value
from exposure_guard.errors import ConfigFileError
from exposure_guard.qts.root import ULINUX_CONF, QtsRoot

# getcfg reads whole files; we refuse absurd ones rather than exhaust a small NAS's memory.
MAX_CONFIG_BYTES = 64 * 1024 * 1024

_TRUE = frozenset({"true", "1", "yes", "on", "enable", "enabled"})
_FALSE = frozenset({"false", "0", "no", "off", "disable", "disabled", ""})


def parse_bool(value: Optional[str]) -> Optional[bool]:
    """QTS mixes TRUE/FALSE, 1/0 and yes/no in any case; None when the value is none of them."""
    if value is None:
        return None
    text = value.strip().strip('"').lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class Entry(Value):
    """One ``key = value`` line."""

    __slots__ = ("section", "key", "value", "line_index")

    def __init__(self, section: str, key: str, value: str, line_index: int) -> None:
        self.section = section  # as written, without brackets
        self.key = key  # as written, stripped
        self.value = value  # stripped, decoded
        self.line_index = line_index


class ConfigDocument:
    """A parsed config file that remembers every original byte."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.lines: List[bytes] = data.splitlines(keepends=True)
        self.entries: List[Entry] = []
        self._index: Dict[Tuple[str, str], Entry] = {}
        # section (lower) -> list of (header line index, last content line index)
        self.sections: Dict[str, List[Tuple[int, int]]] = {}
        self._parse()

    def _parse(self) -> None:
        section = ""
        header_index = -1
        self.sections.setdefault("", []).append((-1, -1))
        for index, raw in enumerate(self.lines):
            body = raw.rstrip(b"\r\n")
            stripped = body.strip()
            if stripped.startswith(b"["):
                close = stripped.find(b"]")
                if close > 0:
                    section = _decode(stripped[1:close]).strip()
                    header_index = index
                    self.sections.setdefault(section.lower(), []).append((header_index, header_index))
                    continue
            if not stripped or stripped[:1] in (b"#", b";"):
                continue
            eq = body.find(b"=")
            if eq <= 0:
                continue
            key = _decode(body[:eq]).strip()
            if not key:
                continue
            entry = Entry(section, key, _decode(body[eq + 1 :]).strip(), index)
            self.entries.append(entry)
            self._index.setdefault((section.lower(), key.lower()), entry)
            spans = self.sections[section.lower()]
            spans[-1] = (spans[-1][0], index)

    def find(self, section: str, key: str) -> Optional[Entry]:
        return self._index.get((section.strip().lower(), key.strip().lower()))

    def find_any(self, key: str) -> Optional[Entry]:
        """The first ``key`` in any section (for files whose section names are not known)."""
        wanted = key.strip().lower()
        return next((e for e in self.entries if e.key.strip().lower() == wanted), None)

    def get(self, section: str, key: str, default: Optional[str] = None) -> Optional[str]:
        entry = self.find(section, key)
        return entry.value if entry is not None else default

    def _newline(self) -> bytes:
        """The ending of the first line ending in LF (CRLF or LF); a lone CR only in a file without any
        LF (a CR before a following LF-ended blank line would merge with it into one CRLF); else LF."""
        for raw in self.lines:
            if raw.endswith(b"\r\n"):
                return b"\r\n"
            if raw.endswith(b"\n"):
                return b"\n"
        return b"\r" if b"\r" in self.data else b"\n"

    def with_value(self, section: str, key: str, value: str) -> bytes:
        """The file's bytes after ``setcfg SECTION KEY VALUE``."""
        _refuse_unreadable(section, key, value)
        encoded = value.encode("utf-8")
        entry = self.find(section, key)
        lines = list(self.lines)
        newline = self._newline()
        if entry is not None:
            raw = lines[entry.line_index]
            ending = raw[len(raw.rstrip(b"\r\n")) :]
            body = raw[: len(raw) - len(ending)]
            eq = body.find(b"=")
            after = body[eq + 1 :]
            lead = after[: len(after) - len(after.lstrip(b" \t"))]
            lines[entry.line_index] = body[: eq + 1] + lead + encoded + ending
            return b"".join(lines)
        line = key.encode("utf-8") + b" = " + encoded + newline
        spans = self.sections.get(section.strip().lower())
        if spans and (section.strip() != "" or spans[0][1] >= 0):
            _header, last = spans[0]
            at = last + 1
            if at > 0 and not lines[at - 1].endswith((b"\n", b"\r")):
                lines[at - 1] += newline
            lines.insert(at, line)
            return b"".join(lines)
        if section.strip() == "":
            return line + b"".join(lines)
        out = b"".join(lines)
        if out and not out.endswith((b"\n", b"\r")):
            out += newline
        return out + b"[" + section.encode("utf-8") + b"]" + newline + line

    def without_key(self, section: str, key: str) -> bytes:
        """The file's bytes after ``setcfg -e SECTION KEY``."""
        entry = self.find(section, key)
        if entry is None:
            return self.data
        lines = list(self.lines)
        del lines[entry.line_index]
        return b"".join(lines)


def _refuse_unreadable(section: str, key: str, value: str, shown: str = "") -> None:
    """ConfigFileError for a setting getcfg could not read back: a line break would add lines (a
    value from a tampered journal could plant a second key), and a key or section name that the
    parser takes for a comment, a header or ``key = value`` would land under another name."""
    name = key.strip()
    if "\n" in value or "\r" in value:
        reason = "the value has a line break"
    elif any(c in section for c in "]\r\n"):
        reason = "the section name has ] or a line break"
    elif not name or name[0] in "#;[" or any(c in key for c in "=\r\n"):
        reason = "the key is empty, starts with # ; or [, or has = or a line break"
    else:
        return
    raise ConfigFileError("%s[%s] %r cannot be written: %s" % (shown + " " if shown else "", section, key, reason))


def read_bytes_capped(path: Path, cap: int = MAX_CONFIG_BYTES) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise ConfigFileError("%s is larger than %d bytes; not a QTS config file" % (path, cap))
    return data


class QtsConfig:
    """getcfg/setcfg over a :class:`QtsRoot`, parsing each file once per instance."""

    def __init__(self, root: QtsRoot) -> None:
        self.root = root
        self._cache: Dict[str, ConfigDocument] = {}
        self._errors: Dict[str, str] = {}

    def document(self, file: str = ULINUX_CONF) -> ConfigDocument:
        """The parsed file; raises ConfigFileError (with the reason) when it cannot be read."""
        rel = file.lstrip("/")
        if rel in self._cache:
            return self._cache[rel]
        if rel in self._errors:
            raise ConfigFileError(self._errors[rel])
        path = self.root.path(rel)
        try:
            doc = ConfigDocument(read_bytes_capped(path))
        except FileNotFoundError:
            self._errors[rel] = "%s does not exist" % self.root.rel(rel)
            raise ConfigFileError(self._errors[rel]) from None
        except (OSError, ConfigFileError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._errors[rel] = "%s cannot be read: %s" % (self.root.rel(rel), reason)
            raise ConfigFileError(self._errors[rel]) from None
        self._cache[rel] = doc
        return doc

    def getcfg(self, section: str, key: str, file: str = ULINUX_CONF, default: Optional[str] = None) -> Optional[str]:
        """Like ``getcfg SECTION KEY -f FILE -d DEFAULT``: the default when the key (or file) is absent."""
        try:
            return self.document(file).get(section, key, default)
        except ConfigFileError:
            return default

    def invalidate(self, file: str) -> None:
        self._cache.pop(file.lstrip("/"), None)
        self._errors.pop(file.lstrip("/"), None)

    def setcfg(self, section: str, key: str, value: str, file: str = ULINUX_CONF) -> None:
        """Like ``setcfg SECTION KEY VALUE -f FILE``. On a live NAS QTS's own ``/sbin/setcfg`` does it."""
        rel = file.lstrip("/")
        _refuse_unreadable(section, key, value, self.root.rel(rel))
        tool = self.root.tool("/sbin/setcfg")
        if tool:
            run_setcfg_tool(tool, section, key, value, str(self.root.path(rel)))
        else:
            path = self.root.path(rel)
            try:
                data = read_bytes_capped(path)
            except FileNotFoundError:
                data = b""
            except OSError as exc:
                raise ConfigFileError("%s cannot be read: %s" % (self.root.rel(rel), exc.strerror)) from None
            new = ConfigDocument(data).with_value(section, key, value)
            if new != data:
                write_config_bytes(path, new, self.root.rel(rel))
        self.invalidate(rel)

    def erase(self, section: str, key: str, file: str = ULINUX_CONF) -> None:
        rel = file.lstrip("/")
        path = self.root.path(rel)
        try:
            data = read_bytes_capped(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigFileError("%s cannot be read: %s" % (self.root.rel(rel), exc.strerror)) from None
        new = ConfigDocument(data).without_key(section, key)
        if new != data:
            write_config_bytes(path, new, self.root.rel(rel))
        self.invalidate(rel)


def write_config_bytes(path: Path, data: bytes, shown: str = "") -> None:
    try:
        atomic_write(path, data, mode=0o644)
    except PermissionError:
        raise ConfigFileError("%s is not writable (permission denied); nothing was changed" % (shown or path)) from None
    except OSError as exc:
        raise ConfigFileError("%s could not be written: %s; nothing was changed" % (shown or path, exc.strerror)) from None


def run_setcfg_tool(tool: str, section: str, key: str, value: str, file: str) -> None:
    import subprocess  # only on a live NAS: a local check never starts a process

    try:
        proc = subprocess.run(
            [tool, section, key, value, "-f", file], capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigFileError("%s failed for [%s] %s in %s: %s" % (tool, section, key, file, exc)) from None
    if proc.returncode != 0:
        raise ConfigFileError(
            "%s failed for [%s] %s in %s (exit %d): %s"
            % (tool, section, key, file, proc.returncode, _decode(proc.stderr).strip())
        )
