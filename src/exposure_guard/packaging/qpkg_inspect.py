"""Check a QNAP .qpkg file before installing it, and list what it contains.

    python -m exposure_guard.qpkg_inspect FILE [--json] [--quiet]

Verifies the layout QDK 2.x ``qbuild`` writes (and ExposureGuard's build.sh reproduces):

    header       sh script; its ``script_len=N`` line = its own length; ends with the line ``exit 1``
    control.tar  plain tar holding one member, control.tar.gz (qpkg.cfg, qinstall.sh, package_routines, ...)
    data.tar.*   the files installed into <volume>/.qpkg/<NAME>/
    [extra.tar]  optional
    [QDK area]   optional signature blocks: "QDK" + (type byte, 4-byte big-endian size, data)... + 0xFF
    tail         100 ASCII bytes: model(10) reserved(30) checksum(10) fw(10) name(20) version(10) flag(10)

Offsets are found the way qbuild's own reader does: evaluate the ``script_len=`` and
``offset=$(/usr/bin/expr ...)`` lines of the header, up to the first line starting with ``exit 1``.
The checksum is ``str(file_size * 3589 + 1000000000)[:10]`` at 60 bytes from the end (QDK qpkg_encrypt).

Exit status: 0 every check passed, 1 the file has problems (listed), 2 the file cannot be read.
Hostile input is bounded: the header scan, archive sizes, member counts and decompressed sizes are capped.
Standard library only; runs on Python 3.8+.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
import zlib
from typing import IO, Dict, List, Optional

from exposure_guard.packaging.qpkg_model import (
    CHECKSUM_BASE,
    CHECKSUM_KEY,
    DATA_MAGIC,
    FLAGS,
    TAIL_SIZE,
    Capped,
    Inspection,
    Member,
    QpkgReadError,
    Section,
    Slice,
    list_members,
    unsafe_name,
)

_SCRIPT_LEN = re.compile(r"^script_len=(\d+)\s*$")
_OFFSET = re.compile(r"^offset=\$\(/usr/bin/expr \$(script_len|offset) \+ (\d+)\)\s*$")
_DATA_NAME = re.compile(r"of=\"?\$_EXTRACT_DIR/(data\.tar\.(?:gz|bz2|7z|xz))")
_DD_COUNT = re.compile(r"count=(\d+)")
_CFG_LINE = re.compile(r'^(QPKG_[A-Z0-9_]+|QTS_[A-Z0-9_]+)="([^"]*)"\s*(?:#.*)?$')

MAX_HEADER = 1024 * 1024  # a header longer than this is not a QPKG header
MAX_CONTROL_GZ = 16 * 1024 * 1024
MAX_UNPACKED = 2 * 1024 * 1024 * 1024  # decompressed bytes read from one archive
MAX_MEMBERS = 200000

# ---------------------------------------------------------------------------------------------------
# the checks

def parse_header(head: bytes, result: Inspection) -> None:
    """Fill script_len, offsets, data name and dd count from the header's text (as qbuild reads it)."""
    if not head.startswith(b"#!"):
        result.problems.append("the file does not start with a shell script header (#!)")
    position = 0
    end_of_header = -1
    script_len: Optional[int] = None
    offset: Optional[int] = None
    for raw in head.splitlines(keepends=True):
        line = raw.decode("latin-1").rstrip("\r\n")
        position += len(raw)
        match = _SCRIPT_LEN.match(line)
        if match:
            script_len = int(match.group(1))
        elif line.startswith("offset="):
            match = _OFFSET.match(line)
            if not match:
                result.problems.append("header line not in qbuild's form: %r" % line[:120])
                continue
            base = script_len if match.group(1) == "script_len" else offset
            if base is None:
                result.problems.append("header uses $%s before it is set: %r" % (match.group(1), line[:120]))
                continue
            offset = base + int(match.group(2))
            result.offsets.append(offset)
        elif "data.tar." in line and "of=" in line:
            name = _DATA_NAME.search(line)
            if name:
                result.data_name = name.group(1)
            count = _DD_COUNT.search(line)
            if count:
                result.dd_count = int(count.group(1))
        if line.startswith("exit 1"):
            if line.strip() != "exit 1":
                result.problems.append("the header's first line starting with 'exit 1' is %r" % line[:40])
            end_of_header = position
            break
    if end_of_header < 0:
        result.problems.append("no line 'exit 1' ends the header within the first %d bytes" % len(head))
        return
    if script_len is None:
        result.problems.append("the header has no script_len= line")
        return
    result.script_len = script_len
    if script_len != end_of_header:
        result.problems.append("script_len=%d but the header ends at byte %d" % (script_len, end_of_header))
    if not result.offsets:
        result.problems.append("the header has no offset= lines")


def check_tail(handle: IO[bytes], result: Inspection) -> None:
    handle.seek(result.size - TAIL_SIZE)
    tail = handle.read(TAIL_SIZE).decode("latin-1")
    result.tail = {
        "model": tail[0:10].strip(),
        "reserved": tail[10:40],
        "checksum": tail[40:50],
        "fw_version": tail[50:60].strip(),
        "name": tail[60:80].strip(),
        "version": tail[80:90].strip(),
        "flag": tail[90:100],
    }
    result.checksum_expected = str(result.size * CHECKSUM_KEY + CHECKSUM_BASE)[:10]
    if not any(result.tail["flag"].startswith(flag) for flag in FLAGS):
        result.problems.append("the last 10 bytes are %r, not the QNAPQPKG flag" % result.tail["flag"])
    if result.tail["checksum"] != result.checksum_expected:
        result.problems.append("tail checksum is %r, expected %r for a %d-byte file (truncated or altered?)"
                               % (result.tail["checksum"], result.checksum_expected, result.size))
    if not result.tail["name"]:
        result.problems.append("the tail has no package name")


def check_layout(handle: IO[bytes], result: Inspection) -> None:
    """Sections from the offsets, then whatever lies between the content and the tail."""
    bounds = [result.script_len] + result.offsets
    names = ["control.tar", result.data_name] + ["extra.tar"] * max(0, len(result.offsets) - 2)
    previous = 0
    result.sections.append(Section("header", 0, result.script_len))
    for index, (start, end) in enumerate(zip(bounds, bounds[1:])):
        if not previous <= start <= end:
            result.problems.append("offsets are not increasing: %r" % bounds)
            return
        result.sections.append(Section(names[index], start, end))
        previous = end
    content_end = bounds[-1]
    tail_start = result.size - TAIL_SIZE
    if content_end > tail_start:
        result.problems.append("the header's offsets end at %d, past the tail at %d (file truncated?)"
                               % (content_end, tail_start))
        return
    if content_end < tail_start:
        handle.seek(content_end)
        area = handle.read(tail_start - content_end)
        check_signature_area(area, content_end, result)
    result.sections.append(Section("tail", tail_start, result.size))
    if result.dd_count is not None and len(result.sections) > 2:
        data = result.sections[2]
        if not (result.dd_count - 1) * 1024 < data.length <= result.dd_count * 1024:
            result.problems.append("the header copies %d KiB blocks of data, but the data archive is %d bytes"
                                   % (result.dd_count, data.length))


def check_signature_area(area: bytes, start: int, result: Inspection) -> None:
    if not area.startswith(b"QDK"):
        result.problems.append("%d unexplained bytes between the content (ends at %d) and the tail"
                               % (len(area), start))
        return
    position = 3
    while position < len(area):
        kind = area[position]
        position += 1
        if kind == 0xFF:
            break
        if position + 4 > len(area) or len(result.signature_blocks) > 64:
            result.problems.append("the QDK signature area is malformed")
            return
        size = int.from_bytes(area[position:position + 4], "big")
        position += 4 + size
        if position > len(area):
            result.problems.append("a QDK signature block runs past the tail")
            return
        result.signature_blocks.append((kind, size))
    else:
        result.problems.append("the QDK signature area has no end marker (0xFF)")
        return
    if position != len(area):
        result.problems.append("%d bytes after the QDK signature area" % (len(area) - position))


def check_control(handle: IO[bytes], section: Section, result: Inspection) -> None:
    try:
        outer = tarfile.open(fileobj=Slice(handle, section.start, section.end), mode="r:")  # noqa: SIM115
        with outer:
            members = outer.getmembers()[:MAX_MEMBERS]
            names = [m.name for m in members]
            if names != ["control.tar.gz"] and names != ["./control.tar.gz"]:
                result.problems.append("control.tar should hold only control.tar.gz, holds %r" % names[:10])
            inner_info = next((m for m in members if m.name.lstrip("./") == "control.tar.gz" and m.isfile()), None)
            if inner_info is None:
                return
            if inner_info.size > MAX_CONTROL_GZ:
                result.problems.append("control.tar.gz is %d bytes; larger than any real one" % inner_info.size)
                return
            extracted = outer.extractfile(inner_info)
            assert extracted is not None
            control_gz = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        result.problems.append("control.tar is not a valid tar archive: %s" % exc)
        return
    try:
        raw = gzip.GzipFile(fileobj=io.BytesIO(control_gz), mode="rb")
        capped = io.BufferedReader(Capped(raw, 64 * 1024 * 1024, "control.tar.gz"))  # type: ignore[arg-type]
        files: Dict[str, bytes] = {}
        with tarfile.open(fileobj=capped, mode="r|") as inner:  # type: ignore[call-overload]
            for info in inner:
                if len(result.control_members) >= MAX_MEMBERS:
                    raise ValueError("control.tar.gz has too many members")
                kind = "dir" if info.isdir() else "file" if info.isfile() else "other"
                result.control_members.append(Member(info.name, info.size, info.mode, kind))
                short = info.name[2:] if info.name.startswith("./") else info.name
                if info.isfile() and short in ("qpkg.cfg", "built_info") and info.size <= 1024 * 1024:
                    member_file = inner.extractfile(info)
                    files[short] = member_file.read() if member_file else b""
        while capped.read(1 << 16):  # to the end, so the gzip CRC is checked
            pass
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        result.problems.append("control.tar.gz is not a valid tar.gz archive: %s" % exc)
        return
    member_names = {m.name[2:] if m.name.startswith("./") else m.name for m in result.control_members}
    for required in ("qpkg.cfg", "qinstall.sh"):
        if required not in member_names:
            result.problems.append("control.tar.gz has no %s" % required)
    for optional in ("package_routines", "built_info"):
        if optional not in member_names:
            result.notes.append("control.tar.gz has no %s" % optional)
    for member in result.control_members:
        if unsafe_name(member.name):
            result.problems.append("control member %r would be written outside the install directory" % member.name)
    if "qpkg.cfg" in files:
        for line in files["qpkg.cfg"].decode("utf-8", "replace").splitlines():
            match = _CFG_LINE.match(line.strip())
            if match:
                result.qpkg_cfg.setdefault(match.group(1), match.group(2))
    if "built_info" in files:
        result.built_info = files["built_info"].decode("utf-8", "replace").strip()


def check_data(handle: IO[bytes], section: Section, result: Inspection) -> None:
    handle.seek(section.start)
    magic = handle.read(8)
    expected = DATA_MAGIC.get(section.name, b"")
    if not magic.startswith(expected):
        result.problems.append("%s does not start with its format's magic bytes" % section.name)
        return
    if section.name != "data.tar.gz":
        result.notes.append("%s is not gzip: its contents are not listed" % section.name)
        return
    capped = Capped(gzip.GzipFile(fileobj=Slice(handle, section.start, section.end), mode="rb"),  # type: ignore
                     MAX_UNPACKED, section.name)
    stream = io.BufferedReader(capped, 65536)  # type: ignore[arg-type]
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            result.data_members = list_members(archive, section.name, MAX_MEMBERS)
        # Read to the end: tar stops at its end marker, but the gzip CRC and length come last.
        while stream.read(1 << 16):
            pass
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        result.problems.append("%s is not a valid tar.gz archive: %s" % (section.name, exc))
        return
    result.data_unpacked = capped.count
    for member in result.data_members:
        if unsafe_name(member.name):
            result.problems.append("data member %r would be written outside the QPKG directory" % member.name)
        if member.kind == "symlink" and (member.target.startswith("/") or ".." in member.target.split("/")):
            result.notes.append("data member %s links outside the QPKG directory: %s" % (member.name, member.target))


def check_consistency(result: Inspection) -> None:
    cfg = result.qpkg_cfg
    if not cfg:
        return
    name = cfg.get("QPKG_NAME", "")
    version = cfg.get("QPKG_VER", "")
    if not name or not version:
        result.problems.append("qpkg.cfg lacks QPKG_NAME or QPKG_VER")
    if result.tail and name and result.tail.get("name") != name[:20]:
        result.problems.append("tail name %r differs from qpkg.cfg QPKG_NAME %r" % (result.tail.get("name"), name))
    if result.tail and version and result.tail.get("version") != version[:10]:
        result.problems.append("tail version %r differs from qpkg.cfg QPKG_VER %r"
                               % (result.tail.get("version"), version))
    program = cfg.get("QPKG_SERVICE_PROGRAM", "")
    if program and result.data_members:
        names = {m.name[2:] if m.name.startswith("./") else m.name for m in result.data_members}
        if program not in names:
            result.problems.append("the service program %s (QPKG_SERVICE_PROGRAM) is not in the data archive"
                                   % program)


def inspect_qpkg(path: str) -> Inspection:
    """Run every check; raises QpkgReadError only when the file cannot be read at all."""
    result = Inspection(path=path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise QpkgReadError("cannot open %s: %s" % (path, exc.strerror or exc)) from None
    with handle:
        handle.seek(0, io.SEEK_END)
        result.size = handle.tell()
        if result.size < TAIL_SIZE + 16:
            raise QpkgReadError("%s is only %d bytes; not a QPKG" % (path, result.size))
        digest = hashlib.sha256()
        handle.seek(0)
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
        result.sha256 = digest.hexdigest()
        handle.seek(0)
        parse_header(handle.read(min(MAX_HEADER, result.size - TAIL_SIZE)), result)
        check_tail(handle, result)
        if result.script_len and result.offsets and not any("offset" in p for p in result.problems):
            check_layout(handle, result)
            sections = {s.name: s for s in result.sections}
            if "control.tar" in sections:
                check_control(handle, sections["control.tar"], result)
            if len(result.sections) > 2 and result.sections[2].name.startswith("data.tar."):
                check_data(handle, result.sections[2], result)
        check_consistency(result)
    if not result.signature_blocks:
        result.notes.append("unsigned: App Center installs it only with 'Allow installation of applications "
                            "without a valid digital signature' on")
    return result


# ---------------------------------------------------------------------------------------------------
# output

def render(result: Inspection, quiet: bool = False) -> str:
    lines: List[str] = []
    if not quiet:
        tail = result.tail
        lines.append("%s: %d bytes, sha256 %s" % (result.path, result.size, result.sha256))
        if tail:
            checksum_state = "ok" if tail.get("checksum") == result.checksum_expected else "WRONG"
            lines.append("  package %s %s  flag %s  model %s  checksum %s (%s)"
                         % (tail.get("name"), tail.get("version"), tail.get("flag", "").strip(),
                            tail.get("model") or "(any)", tail.get("checksum"), checksum_state))
        if result.qpkg_cfg:
            keys = ("QPKG_DISPLAY_NAME", "QPKG_AUTHOR", "QPKG_SERVICE_PROGRAM", "QPKG_REQUIRE", "QTS_MINI_VERSION")
            shown = ["%s=%s" % (k, result.qpkg_cfg[k]) for k in keys if result.qpkg_cfg.get(k)]
            lines.append("  qpkg.cfg: " + "  ".join(shown))
        if result.built_info:
            lines.append("  built_info: " + result.built_info)
        for section in result.sections:
            lines.append("  %-13s %9d .. %-9d (%d bytes)" % (section.name, section.start, section.end,
                                                             section.length))
        if result.signature_blocks:
            lines.append("  signature blocks: " + ", ".join("type %d (%d bytes)" % b for b in result.signature_blocks))
        if result.control_members:
            lines.append("control.tar.gz:")
            lines.extend("  " + m.line() for m in result.control_members)
        if result.data_members:
            files = sum(1 for m in result.data_members if m.kind == "file")
            lines.append("%s: %d entries (%d files), %d bytes unpacked"
                         % (result.data_name, len(result.data_members), files, result.data_unpacked))
            lines.extend("  " + m.line() for m in result.data_members)
        for note in result.notes:
            lines.append("note: " + note)
    for problem in result.problems:
        lines.append("PROBLEM: " + problem)
    if result.ok:
        name = "%s %s" % (result.tail.get("name", "?"), result.tail.get("version", "?"))
        lines.append("OK: %s is a well-formed QPKG (%s, %d bytes, sha256 %s)"
                     % (result.path, name, result.size, result.sha256))
    else:
        lines.append("NOT OK: %d problem(s) in %s" % (len(result.problems), result.path))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exposure_guard.qpkg_inspect",
                                     description="Check a QNAP .qpkg file and list its contents.")
    parser.add_argument("file", help="the .qpkg file")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only problems and the verdict")
    args = parser.parse_args(argv)
    try:
        result = inspect_qpkg(args.file)
    except QpkgReadError as exc:
        sys.stderr.write("qpkg_inspect: %s\n" % exc)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(render(result, quiet=args.quiet))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
