"""Assemble dist/ExposureGuard_<ver>.qpkg without QDK (called by build.sh; stdlib only).

Layout, as QDK 2.x ``qbuild`` writes a generic (all-architecture) package (see docs/qpkg-format.md#File layout):

    header (sh script, ends "exit 1\\n", length = script_len)
    control.tar      plain tar holding one member control.tar.gz (./qinstall.sh ./package_routines
                     ./qpkg.cfg ./built_info), padded to 10240-byte records
    data.tar.gz      the QPKG directory: service script, settings, icons, lib/ (agent + vendored libraries)
    100-byte tail    model(10) reserved(50, checksum at -60) name(20) version(10) "QNAPQPKG  "

Reproducible: every archive entry has mtime = SOURCE_DATE_EPOCH, uid/gid 0 and no user names, entries are
sorted, gzip headers carry mtime 0 and no file name, and nothing depends on the build machine.

Two deliberate hardenings over qbuild's output, both invisible to qbuild-style readers (QDK's
``qbuild --extract`` evaluates only the ``script_len=`` / ``offset=`` lines and the ``dd if="${0}" ...``
lines, so every value a ``dd`` line needs is computed inside that line):
* the header is padded to a multiple of 1024 bytes and data.tar.gz to a multiple of 1024 bytes (gzip
  FEXTRA field), so the installer copies the data archive with ``dd bs=1024`` from the file itself:
  no partial pipe reads, no trailing junk, no need for the firmware Python's truncate step;
* the installer's exit status is 10 on success (as qbuild's) but 1 when the install failed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import stat
import struct
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qpkg_icons  # noqa: E402

NAME = "ExposureGuard"
SERVICE_PROGRAM = "exposure-guard.sh"
SETTINGS = "etc/exposure-guard.ini"
RECORD = 10240  # tar record size (GNU tar and Python's tarfile default)
MAX_TAR_NAME = 99  # keep every member name inside the classic 100-byte field: no GNU/pax extensions

Entry = Tuple[bytes, int]  # (content, mode) of a regular file


class BuildError(Exception):
    pass


# -------------------------------------------------------------------------------------------------------
# inputs

def read_version(src: Path) -> str:
    text = (src / "exposure_guard" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if not match:
        raise BuildError("no __version__ in src/exposure_guard/__init__.py")
    return match.group(1)


def check_version(version: str) -> None:
    # QTS compares versions part by part as numbers; the tail holds at most 10 characters.
    if not re.match(r"^\d+(\.\d+){0,3}$", version) or len(version) > 10:
        raise BuildError("version %r is not usable for a QPKG: dotted numbers, at most 10 characters" % version)


def read_requirements(path: Path) -> List[Tuple[str, str, str]]:
    """(name, version, sha256) for every pinned line of qpkg/requirements.txt."""
    pins = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})$", line)
        if not match:
            raise BuildError("%s:%d: expected `name==version --hash=sha256:HEX`, got %r" % (path, number, raw))
        pins.append((match.group(1), match.group(2), match.group(3)))
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def find_wheel(wheels: Path, name: str, version: str, sha256: str) -> Path:
    prefix = "%s-%s-" % (_normalise(name), version)
    for candidate in sorted(wheels.glob("*.whl")):
        if candidate.name.lower().startswith(prefix.lower()) and candidate.name.endswith("-none-any.whl"):
            digest = hashlib.sha256(candidate.read_bytes()).hexdigest()
            if digest == sha256:
                return candidate
            raise BuildError("%s has sha256 %s, requirements.txt pins %s" % (candidate, digest, sha256))
    raise BuildError("no pure-Python wheel for %s==%s in %s (build.sh downloads them)" % (name, version, wheels))


def _safe_member(name: str) -> str:
    if name.startswith("/") or "\\" in name or any(part in ("", "..") for part in name.rstrip("/").split("/")):
        raise BuildError("unsafe path in archive member %r" % name)
    return name


def wheel_files(path: Path) -> Dict[str, Entry]:
    files: Dict[str, Entry] = {}
    with zipfile.ZipFile(str(path)) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = _safe_member(info.filename)
            if ".data/" in name.split(".dist-info/")[0]:
                raise BuildError("%s has a .data directory (scripts/headers); not a plain library" % path.name)
            if name.endswith(".dist-info/RECORD"):
                continue  # lists install-time hashes; meaningless once vendored
            mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
            files["lib/" + name] = (archive.read(info), mode)
    return files


def agent_files(src: Path, version: str) -> Dict[str, Entry]:
    files: Dict[str, Entry] = {}
    package = src / "exposure_guard"
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if not path.is_file() or "__pycache__" in rel.split("/") or path.suffix in (".pyc", ".pyo"):
            continue
        if path.name.startswith(".") or path.name.endswith(("~", ".orig", ".rej", ".swp")):
            continue
        data = path.read_bytes()
        if rel == "exposure_guard/__init__.py":
            data = re.sub(rb'(?m)^__version__\s*=\s*["\'][^"\']*["\']', b'__version__ = "%s"' % version.encode(), data)
        files["lib/" + rel] = (data, 0o644)
    if "lib/exposure_guard/__main__.py" not in files:
        raise BuildError("src/exposure_guard/__main__.py is missing: the service runs `python3 -m exposure_guard`")
    return files


def shared_files(shared: Path) -> Dict[str, Entry]:
    files: Dict[str, Entry] = {}
    for path in sorted(shared.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(shared).as_posix()
        executable = rel.endswith((".sh", ".cgi")) or bool(path.stat().st_mode & stat.S_IXUSR)
        files[rel] = (path.read_bytes(), 0o755 if executable else 0o644)
    if SERVICE_PROGRAM not in files or SETTINGS not in files:
        raise BuildError("qpkg/shared must hold %s and %s" % (SERVICE_PROGRAM, SETTINGS))
    # The defaults of this version, always current (the settings file itself is kept on upgrade).
    files[SETTINGS + ".default"] = (files[SETTINGS][0], 0o644)
    return files


# -------------------------------------------------------------------------------------------------------
# archives

def _tarinfo(name: str, size: int, mode: int, mtime: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mode = mode
    info.mtime = mtime
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def tar_bytes(files: Dict[str, Entry], mtime: int, dot_prefix: bool = True) -> bytes:
    """A GNU-format tar: "." then every directory and file, sorted, with fixed metadata."""
    directories = set()
    for rel in files:
        parts = rel.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directories.add("/".join(parts[:depth]))
    entries: List[Tuple[str, Optional[Entry]]] = [(d, None) for d in directories]
    entries += [(rel, entry) for rel, entry in files.items()]
    entries.sort(key=lambda item: item[0])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        if dot_prefix:
            archive.addfile(_tarinfo(".", 0, 0o755, mtime, directory=True))
        for rel, entry in entries:
            name = ("./" + rel) if dot_prefix else rel
            if len(name) + (1 if entry is None else 0) > MAX_TAR_NAME:
                raise BuildError("archive member name too long for a plain tar header: %s" % name)
            if entry is None:
                archive.addfile(_tarinfo(name, 0, 0o755, mtime, directory=True))
            else:
                data, mode = entry
                archive.addfile(_tarinfo(name, len(data), mode, mtime), io.BytesIO(data))
    return buffer.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """Standard gzip, mtime 0, no file name (what `gzip -n` writes)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as handle:
        handle.write(data)
    return buffer.getvalue()


def gzip_padded(data: bytes, multiple: int = 1024) -> bytes:
    """One gzip member whose total length is a multiple of ``multiple``, padded in the FEXTRA field
    (RFC 1952 2.3.1.1: readers skip extra subfields they do not know)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    deflated = compressor.compress(data) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    fixed = 10 + 2 + 4 + len(deflated) + len(trailer)  # header, XLEN, one subfield header
    pad = (-fixed) % multiple
    subfield = b"EG" + struct.pack("<H", pad) + b"\0" * pad
    header = b"\x1f\x8b\x08\x04" + struct.pack("<I", 0) + b"\x02\xff" + struct.pack("<H", len(subfield))
    out = header + subfield + deflated + trailer
    assert len(out) % multiple == 0
    return out


# -------------------------------------------------------------------------------------------------------
# header and tail

HEADER_TEMPLATE = """#!/bin/sh
# {name} {version} for QNAP QTS / QuTS hero: generic QPKG (pure Python, every CPU architecture).
# Install it from App Center (Install Manually), or on the NAS: sh {name}_{version}.qpkg
# Layout (as QDK 2.x qbuild): this header | control.tar | data.tar.gz | 100-byte tail.
# Built without QDK by ExposureGuard's build.sh; the installer (qinstall.sh) is ExposureGuard's own.
find_base(){{
	if [ -n "$QINSTALL_PATH" ]; then
		QPKG_INSTALL_PATH="$QINSTALL_PATH"
	else
		_base=$(/sbin/getcfg SHARE_DEF defVolMP -f /etc/config/def_share.info 2>/dev/null)
		if [ -z "$_base" ]; then
			_public=$(/sbin/getcfg Public path -f /etc/config/smb.conf 2>/dev/null)
			_rest=${{_public#/}}
			_first=${{_rest%%/*}}
			_rest=${{_rest#*/}}
			[ -n "$_public" ] && _base="/$_first/${{_rest%%/*}}"
		fi
		if [ -z "$_base" ] || [ ! -d "$_base" ]; then
			/bin/echo "-1" > /tmp/update_process
			/bin/echo "{name}: no data volume found (the volume of the Public share)."
			_msg="[App Center] {name} was not installed: no data volume found."
			[ -x /sbin/log_tool ] && /sbin/log_tool -t2 -uSystem -p127.0.0.1 -mlocalhost -a "$_msg"
			exit 1
		fi
		QPKG_INSTALL_PATH="$_base/.qpkg"
	fi
	/bin/mkdir -p "$QPKG_INSTALL_PATH" || exit 1
}}
/bin/echo "Install QNAP package on TS-NAS..."
/bin/grep "/mnt/HDA_ROOT" /proc/mounts >/dev/null 2>&1 || {{ /bin/echo "{name}: installs only on QTS."; exit 1; }}
find_base
_EXTRACT_DIR="$QPKG_INSTALL_PATH/.tmp-{name}"
/bin/rm -rf "$_EXTRACT_DIR"
/bin/mkdir -p "$_EXTRACT_DIR" || exit 1
script_len={script_len}
/bin/dd if="${{0}}" bs=$script_len skip=1 2>/dev/null | /bin/tar -xO | /bin/tar -xzv -C "$_EXTRACT_DIR" || exit 1
offset=$(/usr/bin/expr $script_len + {ctrl_len})
/bin/dd if="${{0}}" bs=1024 skip=$((offset / 1024)) count={data_blocks} of="$_EXTRACT_DIR/data.tar.gz" 2>/dev/null || exit 1
offset=$(/usr/bin/expr $offset + {data_len})
( cd "$_EXTRACT_DIR" && /bin/sh qinstall.sh )
if [ $? -ne 0 ]; then /bin/echo "Installation Abort."; /bin/rm -fr "$_EXTRACT_DIR"; exit 1; fi
/bin/rm -fr "$_EXTRACT_DIR" && exit 10
{padding}
exit 1
"""


def make_header(version: str, ctrl_len: int, data_len: int) -> bytes:
    """The header, padded so that its length (= script_len, written inside it) is a multiple of 1024."""
    if ctrl_len % 1024 or data_len % 1024:
        raise BuildError("control and data archives must be 1024-byte aligned")

    def render(script_len: int, pad: int) -> bytes:
        lines = []
        while pad > 80:  # comment lines of 80 bytes (newline included), then the remainder
            lines.append("#" + "-" * 78)
            pad -= 80
        lines.append("#" + "-" * (pad - 1))
        padding = "\n".join(lines)
        return HEADER_TEMPLATE.format(name=NAME, version=version, script_len=script_len, ctrl_len=ctrl_len,
                                      data_len=data_len, data_blocks=data_len // 1024,
                                      padding=padding).encode("ascii")

    script_len = 1024
    for _ in range(10):
        base = len(render(script_len, 1))  # with a one-character padding line
        target = -(-base // 1024) * 1024
        if target != script_len:
            script_len = target
            continue
        header = render(script_len, 1 + target - base)
        if len(header) == script_len:
            return header
    raise BuildError("could not size the header")


def make_tail(version: str, total_size: int) -> bytes:
    checksum = str(total_size * 3589 + 1000000000)[:10]
    tail = (" " * 10 + " " * 30 + checksum + " " * 10 + NAME.ljust(20)[:20] + version.ljust(10)[:10]
            + "QNAPQPKG  ")
    data = tail.encode("ascii")
    assert len(data) == 100
    return data


# -------------------------------------------------------------------------------------------------------

def build(repo: Path, wheels: Path, out_dir: Path, version: Optional[str], epoch: int) -> Path:
    src = repo / "src"
    qpkg = repo / "qpkg"
    version = version or read_version(src)
    check_version(version)

    data_files: Dict[str, Entry] = {}
    data_files.update(shared_files(qpkg / "shared"))
    data_files.update({name: (png, 0o644) for name, png in qpkg_icons.icons().items()})
    data_files.update(agent_files(src, version))
    for name, pinned, digest in read_requirements(qpkg / "requirements.txt"):
        for rel, entry in wheel_files(find_wheel(wheels, name, pinned, digest)).items():
            if rel in data_files:
                raise BuildError("%s from the %s wheel would overwrite another file" % (rel, name))
            data_files[rel] = entry
    data = gzip_padded(tar_bytes(data_files, epoch))

    cfg = (qpkg / "qpkg.cfg").read_bytes()
    if b'QPKG_VER="@VERSION@"' not in cfg:
        raise BuildError('qpkg/qpkg.cfg must contain QPKG_VER="@VERSION@" (filled in from the package version)')
    cfg = cfg.replace(b"@VERSION@", version.encode("ascii"))
    built_info = ("time = %s\n" % time.strftime("%Y%m%d", time.gmtime(epoch))).encode("ascii")
    control_files: Dict[str, Entry] = {
        "qpkg.cfg": (cfg, 0o644),
        "package_routines": ((qpkg / "package_routines").read_bytes(), 0o644),
        "qinstall.sh": ((qpkg / "qinstall.sh").read_bytes(), 0o755),
        "built_info": (built_info, 0o644),
    }
    control_gz = gzip_bytes(tar_bytes(control_files, epoch))
    control = tar_bytes({"control.tar.gz": (control_gz, 0o644)}, epoch, dot_prefix=False)
    # tar_bytes adds no "." for the outer archive, and the member must be the only one.
    header = make_header(version, len(control), len(data))

    body = header + control + data
    total = len(body) + 100
    package = body + make_tail(version, total)

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ("%s_%s.qpkg" % (NAME, version))
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_bytes(package)
    os.replace(str(temporary), str(target))
    digest = hashlib.sha256(package).hexdigest()
    (out_dir / (target.name + ".sha256")).write_text("%s  %s\n" % (digest, target.name), encoding="ascii")
    icons = qpkg_icons.icons()
    (out_dir / (NAME + "_80.gif")).write_bytes(icons[".qpkg_icon_80.gif"])
    (out_dir / (NAME + ".gif")).write_bytes(icons[".qpkg_icon.gif"])
    feed_base = os.environ.get("EXPOSURE_GUARD_FEED_BASE") or DEFAULT_FEED_BASE
    (out_dir / (NAME + ".xml")).write_bytes(make_feed(version, target.name, feed_base, cfg, epoch))
    return target


# -------------------------------------------------------------------------------------------------------
# App Center repository feed

# Where an MSP's repository serves dist/: set EXPOSURE_GUARD_FEED_BASE when building (the fleet server
# rewrites it to its own address when it serves the feed). The default is a placeholder that never resolves.
DEFAULT_FEED_BASE = "https://exposure-guard.invalid/qpkg/"
# A generic (noarch) package runs on every model family App Center knows; the IDs real feeds use
# (QNAP's own repository and third-party ones): x86_64, ARM 64-bit, ARM 32-bit and their older names.
FEED_PLATFORMS = ("TS-NASX86", "TS-X28A", "TS-X32", "TS-X32U", "TS-XA28A", "TS-X33", "TS-X35A", "TS-X16",
                  "TS-NASARM_64", "TS-NASARM", "TS-X41", "TS-X31P2", "TS-X31P3", "TS-X31X", "TS-X31", "OLD_X86")


def _cfg_value(cfg: bytes, key: str) -> str:
    match = re.search(rb'^' + key.encode("ascii") + rb'="([^"]*)"', cfg, re.M)
    return match.group(1).decode("utf-8") if match else ""


def make_feed(version: str, package_name: str, base: str, cfg: bytes, epoch: int) -> bytes:
    """An App Center repository feed (``<plugins><item>``) offering this package on every platform."""
    from xml.sax.saxutils import escape

    if not re.match(r"^https?://[^\s<>\"]+/$", base):
        raise BuildError("EXPOSURE_GUARD_FEED_BASE must be an http(s) URL ending in / (got %r)" % base)
    stamp = time.gmtime(epoch)

    def cdata(tag: str, value: str) -> str:
        return "    <%s><![CDATA[%s]]></%s>\n" % (tag, value.replace("]]>", "]]]]><![CDATA[>"), tag)

    platforms = "".join("    <platform>\n      <platformID>%s</platformID>\n      <location>%s</location>\n"
                        "    </platform>\n" % (pid, escape(base + package_name)) for pid in FEED_PLATFORMS)
    item = "".join([
        cdata("name", _cfg_value(cfg, "QPKG_DISPLAY_NAME") or NAME),
        cdata("internalName", NAME),
        cdata("category", "Security"),
        cdata("type", "Security"),
        cdata("icon80", base + NAME + "_80.gif"),
        cdata("icon100", base + NAME + "_80.gif"),
        cdata("description", _cfg_value(cfg, "QPKG_SUMMARY")),
        cdata("fwVersion", _cfg_value(cfg, "QTS_MINI_VERSION")),
        cdata("version", version),
        platforms,
        cdata("publishedDate", time.strftime("%Y/%m/%d", stamp)),
        cdata("maintainer", _cfg_value(cfg, "QPKG_AUTHOR")),
        cdata("developer", _cfg_value(cfg, "QPKG_AUTHOR")),
        cdata("forumLink", ""),
        cdata("language", "English"),
        cdata("changeLog", "ExposureGuard %s. Unsigned package: allow apps without a valid digital signature in "
                           "App Center settings to install it." % version),
    ])
    return ('<?xml version="1.0" encoding="utf-8"?>\n<plugins>\n  <cachechk>%s</cachechk>\n  <item>\n%s  </item>\n'
            "</plugins>\n" % (time.strftime("%Y%m%d%H%M", stamp), item)).encode("utf-8")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--wheels", type=Path, required=True, help="directory with the pinned wheels")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default REPO/dist)")
    parser.add_argument("--version", default=os.environ.get("EXPOSURE_GUARD_VERSION") or None)
    parser.add_argument("--epoch", type=int, default=None, help="archive mtime (default $SOURCE_DATE_EPOCH)")
    parser.add_argument("--check-wheels", action="store_true",
                        help="only check that every pinned wheel is in --wheels with the right hash")
    args = parser.parse_args(argv)
    if args.check_wheels:
        try:
            for name, pinned, digest in read_requirements(args.repo / "qpkg" / "requirements.txt"):
                find_wheel(args.wheels, name, pinned, digest)
        except (BuildError, OSError) as exc:
            sys.stderr.write("build_qpkg: %s\n" % exc)
            return 1
        return 0
    epoch = args.epoch
    if epoch is None:
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    if epoch <= 0:
        epoch = 315532800  # 1980-01-01, the zip/tar-safe fixed date
    try:
        target = build(args.repo, args.wheels, args.out or args.repo / "dist", args.version, epoch)
    except (BuildError, OSError) as exc:
        sys.stderr.write("build_qpkg: %s\n" % exc)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
