"""The built .qpkg byte for byte: header, control.tar, data.tar.gz, tail, checksum, reproducibility.

Facts compared against are the published ones of QDK 2.x output (docs/qpkg-format.md#File layout through
#Verified against a QDK-built package, including the te0dor/QDK build/QDK_2.3.4.qpkg sample).
"""

from __future__ import annotations

import gzip
import io
import re
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from exposure_guard.qpkg_inspect import inspect_qpkg, main, render
from tests.support.paths import REPO
from tests.support.qpkg_build import builder, run_build, split

build_qpkg = builder()


def tar_members(blob: bytes, mode: str = "r:*") -> List[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode=mode) as archive:
        return archive.getmembers()


# ---- the whole file -------------------------------------------------------------------------------------

def test_inspector_accepts_the_built_package(built):
    result = inspect_qpkg(str(built.path))
    assert result.problems == []
    assert [s.name for s in result.sections] == ["header", "control.tar", "data.tar.gz", "tail"]
    assert result.tail["name"] == "ExposureGuard" and result.tail["version"] == built.version
    assert result.qpkg_cfg["QPKG_VER"] == built.version
    assert result.signature_blocks == []


def test_size_is_within_budget(built):
    assert len(built.data) <= 1.5 * 1024 * 1024


def test_sections_cover_the_file_exactly(built):
    data = built.data
    parts = split(data)
    assert len(parts["rest"]) == 100, "no signature area: content is followed directly by the 100-byte tail"
    assert len(parts["header"]) + len(parts["control"]) + len(parts["data"]) + 100 == len(data)


def test_qbuild_style_reader_finds_the_content_size(built):
    # qbuild get_content_size: eval the script_len=/offset= lines up to the first "exit 1" line.
    script = ("eval \"$(sed -n '1,/^exit 1/{/^script_len=/p;/^offset=/p}' %s)\"; echo \"$script_len $offset\""
              % built.path)
    proc = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True, check=True)
    script_len, offset = (int(x) for x in proc.stdout.split())
    assert offset == len(built.data) - 100
    assert script_len == len(split(built.data)["header"])
    # ... and extracts the control files the way the header does (busybox dd and tar, as on QTS).
    extract = ("dd if=%s bs=%d skip=1 2>/dev/null | busybox tar -xO | busybox tar -tz" % (built.path, script_len))
    listing = subprocess.run(["busybox", "sh", "-c", extract], capture_output=True, text=True, check=True).stdout
    assert "./qpkg.cfg" in listing.split() and "./qinstall.sh" in listing.split()


# ---- header ---------------------------------------------------------------------------------------------

def test_header_shape(built):
    header = split(built.data)["header"]
    text = header.decode("ascii")
    assert text.startswith("#!/bin/sh\n")
    assert text.endswith("\nexit 1\n")
    lines = text.splitlines()
    assert [i for i, line in enumerate(lines) if line.startswith("exit 1")] == [len(lines) - 1]
    assert "script_len=%d" % len(header) in lines
    assert len(header) % 1024 == 0, "header padded to whole KiB so the data copy is block aligned"
    ctrl_len = len(split(built.data)["control"])
    data_len = len(split(built.data)["data"])
    assert "offset=$(/usr/bin/expr $script_len + %d)" % ctrl_len in lines
    assert "offset=$(/usr/bin/expr $offset + %d)" % data_len in lines
    assert 'count=%d of="$_EXTRACT_DIR/data.tar.gz"' % (data_len // 1024) in text
    # The QDK contract lines.
    assert '/bin/grep "/mnt/HDA_ROOT" /proc/mounts' in text
    assert '_EXTRACT_DIR="$QPKG_INSTALL_PATH/.tmp-ExposureGuard"' in text
    assert '( cd "$_EXTRACT_DIR" && /bin/sh qinstall.sh )' in text
    assert '/bin/rm -fr "$_EXTRACT_DIR" && exit 10' in text
    assert "uname -m" not in text, "a generic package has no architecture check"


@pytest.mark.parametrize("shell", [["busybox", "sh"], ["bash"]])
def test_shell_scripts_parse(built, shell, tmp_path):
    header = split(built.data)["header"]
    (tmp_path / "header.sh").write_bytes(header)
    scripts = [tmp_path / "header.sh", REPO / "qpkg/qinstall.sh", REPO / "qpkg/shared/exposure-guard.sh",
               REPO / "qpkg/package_routines", REPO / "qpkg/qpkg.cfg", REPO / "build.sh"]
    for script in scripts:
        proc = subprocess.run(shell + ["-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, (script, proc.stderr)


# ---- control.tar ----------------------------------------------------------------------------------------

def test_control_tar_holds_only_control_tar_gz(built):
    control = split(built.data)["control"]
    assert len(control) % 10240 == 0, "GNU tar / tarfile default record size"
    assert control[257:265] == b"ustar  \0", "GNU tar magic, as in the QDK sample"
    members = tar_members(control, "r:")
    assert [m.name for m in members] == ["control.tar.gz"]
    assert members[0].mode == 0o644 and members[0].uid == 0 and members[0].gid == 0


def test_control_tar_gz_members(built):
    control = split(built.data)["control"]
    with tarfile.open(fileobj=io.BytesIO(control), mode="r:") as outer:
        inner = outer.extractfile("control.tar.gz").read()
    assert inner[:3] == b"\x1f\x8b\x08"
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as archive:
        members = {m.name: m for m in archive.getmembers()}
        files = {name: archive.extractfile(m).read() for name, m in members.items() if m.isfile()}
    assert sorted(members) == [".", "./built_info", "./package_routines", "./qinstall.sh", "./qpkg.cfg"]
    assert members["./qinstall.sh"].mode == 0o755
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members.values())
    assert re.fullmatch(rb"time = \d{8}\n", files["./built_info"])
    cfg = files["./qpkg.cfg"].decode()
    assert 'QPKG_NAME="ExposureGuard"' in cfg
    assert 'QPKG_VER="%s"' % built.version in cfg
    assert 'QPKG_SERVICE_PROGRAM="exposure-guard.sh"' in cfg
    assert "@VERSION@" not in cfg
    # QDK parses QPKG_CONFIG with sed: it must be exactly NAME="value" at a line start.
    assert re.search(r'^QPKG_CONFIG="etc/exposure-guard.ini"$', cfg, re.MULTILINE)
    assert files["./qinstall.sh"] == (REPO / "qpkg/qinstall.sh").read_bytes()


# ---- data.tar.gz ----------------------------------------------------------------------------------------

def test_data_archive(built):
    blob = split(built.data)["data"]
    assert blob[:4] == b"\x1f\x8b\x08\x04", "gzip with an FEXTRA field (the 1024-byte alignment padding)"
    assert len(blob) % 1024 == 0
    assert struct.unpack("<I", blob[4:8])[0] == 0, "gzip mtime 0"
    members = tar_members(blob, "r:gz")
    names = [m.name for m in members]
    assert names[0] == "."
    assert all(name.startswith("./") for name in names[1:])
    assert names == sorted(names, key=lambda n: n.rstrip("/"))
    assert len({m.mtime for m in members}) == 1
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    by_name = {m.name: m for m in members}
    assert by_name["./exposure-guard.sh"].mode == 0o755
    for required in ("./etc/exposure-guard.ini", "./etc/exposure-guard.ini.default",
                     "./lib/exposure_guard/__main__.py", "./lib/exposure_guard/cli.py",
                     "./lib/exposure_guard/qpkg_inspect.py",
                     "./lib/exposure_guard/data/report-v1.schema.json"):
        assert by_name[required].isfile(), required
    for library in ("requests", "urllib3", "idna", "certifi", "charset_normalizer", "schedule", "defusedxml"):
        assert by_name["./lib/%s/__init__.py" % library].isfile(), library
    assert not [n for n in names if n.endswith((".so", ".pyd"))], "pure Python only (generic package)"


def test_data_archive_reads_with_busybox_and_gnu_tar(built, tmp_path):
    (tmp_path / "data.tar.gz").write_bytes(split(built.data)["data"])
    for argv in (["busybox", "tar", "-tzf"], ["tar", "-tzf"], ["gzip", "-t"]):
        proc = subprocess.run(argv + [str(tmp_path / "data.tar.gz")], capture_output=True, text=True)
        assert proc.returncode == 0, (argv, proc.stderr)


def test_icons_are_pngs_of_the_right_size(built):
    with tarfile.open(fileobj=io.BytesIO(split(built.data)["data"]), mode="r:gz") as archive:
        for name, size in ((".qpkg_icon.gif", 64), (".qpkg_icon_80.gif", 80), (".qpkg_icon_gray.gif", 64)):
            png = archive.extractfile("./" + name).read()
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            assert struct.unpack(">II", png[16:24]) == (size, size), name


def test_vendored_agent_carries_the_package_version(built):
    with tarfile.open(fileobj=io.BytesIO(split(built.data)["data"]), mode="r:gz") as archive:
        init = archive.extractfile("./lib/exposure_guard/__init__.py").read().decode()
    assert '__version__ = "%s"' % built.version in init


# ---- tail and checksum ----------------------------------------------------------------------------------

def test_tail_fields_and_checksum(built):
    data = built.data
    tail = data[-100:].decode("ascii")
    assert tail[0:10] == " " * 10  # model: any
    assert tail[10:40] == " " * 30
    assert tail[40:50] == str(len(data) * 3589 + 1000000000)[:10]
    assert tail[50:60] == " " * 10  # fw version: unused
    assert tail[60:80] == "ExposureGuard".ljust(20)
    assert tail[80:90] == built.version.ljust(10)
    assert tail[90:100] == "QNAPQPKG  "


def test_tail_writer_reproduces_the_published_qdk_sample_tail():
    # te0dor/QDK build/QDK_2.3.4.qpkg: 2,050,524 bytes, tail checksum 8359330636.
    expected = " " * 40 + "8359330636" + " " * 10 + "QDK".ljust(20) + "2.3.4".ljust(10) + "QNAPQPKG  "
    original = build_qpkg.NAME
    try:
        build_qpkg.NAME = "QDK"
        assert build_qpkg.make_tail("2.3.4", 2050524).decode() == expected
    finally:
        build_qpkg.NAME = original


# ---- reproducibility and versions ----------------------------------------------------------------------

def test_build_is_reproducible(built, tmp_path):
    again = run_build(tmp_path / "again")
    assert again.path.read_bytes() == built.data
    sha = (built.path.parent / (built.path.name + ".sha256")).read_text()
    import hashlib

    assert sha == "%s  %s\n" % (hashlib.sha256(built.data).hexdigest(), built.path.name)


def test_version_override_and_bad_versions(built, built_upgrade, tmp_path):
    assert built_upgrade.path.name == "ExposureGuard_%s.qpkg" % built_upgrade.version
    assert inspect_qpkg(str(built_upgrade.path)).problems == []
    for bad in ("1.0.0rc1", "1.2.3.4.5", "12345.67890"):
        with pytest.raises(build_qpkg.BuildError):
            build_qpkg.check_version(bad)


def test_padded_gzip_is_standard_gzip():
    for size in (0, 1, 1000, 50000):
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        blob = build_qpkg.gzip_padded(payload)
        assert len(blob) % 1024 == 0
        assert gzip.decompress(blob) == payload


# ---- the inspector on QDK-shaped and damaged packages ---------------------------------------------------

def qdk_style_package(name: str = "Demo", version: str = "0.1.0", signature: bytes = b"",
                      data_names: Optional[List[str]] = None) -> bytes:
    """A package laid out exactly like qbuild's: QDK header lines (dd | cat | dd, python truncate)."""
    def tar(files: Dict[str, bytes], gz: bool, dot: bool = True) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as archive:
            for rel, content in files.items():
                info = tarfile.TarInfo(("./" if dot else "") + rel)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
        return buffer.getvalue()

    cfg = b'QPKG_NAME="%s"\nQPKG_VER="%s"\nQPKG_AUTHOR="t"\nQPKG_SERVICE_PROGRAM="demo.sh"\n' % (
        name.encode(), version.encode())
    control_gz = tar({"qpkg.cfg": cfg, "qinstall.sh": b"#!/bin/sh\n", "package_routines": b"",
                      "built_info": b"time = 20240101\n"}, gz=True)
    control = tar({"control.tar.gz": control_gz}, gz=False, dot=False)
    if data_names is None:
        data = tar({"demo.sh": b"#!/bin/sh\necho demo\n"}, gz=True)
    else:
        data = tar({rel: b"x\n" for rel in data_names}, gz=True, dot=False)
    lines = [
        "#!/bin/sh", "find_base(){", "\tQPKG_INSTALL_PATH=$QINSTALL_PATH", "}",
        '/bin/echo "Install QNAP package on TS-NAS..."', '/bin/grep "/mnt/HDA_ROOT" /proc/mounts >/dev/null 2>&1 || exit 1',
        "find_base", '_EXTRACT_DIR="$QPKG_INSTALL_PATH/.tmp-%s"' % name, "/bin/mkdir -p $_EXTRACT_DIR || exit 1",
        "script_len=SCRIPT_LEN",
        '/bin/dd if="${0}" bs=$script_len skip=1 | /bin/tar -xO | /bin/tar -xzv -C $_EXTRACT_DIR || exit 1',
        "offset=$(/usr/bin/expr $script_len + %d)" % len(control),
        '/bin/dd if="${0}" bs=$offset skip=1 | /bin/cat | /bin/dd bs=1024 count=%d of=$_EXTRACT_DIR/data.tar.gz || exit 1'
        % -(-len(data) // 1024),
        "[ -f /usr/local/bin/python ] && /usr/local/bin/python -c \"with open('$_EXTRACT_DIR/data.tar.gz', 'rw+') as f: "
        "f.seek(%d); f.truncate()\"" % len(data),
        "offset=$(/usr/bin/expr $offset + %d)" % len(data),
        '( cd $_EXTRACT_DIR && /bin/sh qinstall.sh || echo "Installation Abort." )',
        "/bin/rm -fr $_EXTRACT_DIR && exit 10", "exit 1", "",
    ]
    text = "\n".join(lines)
    length = len(text) - len("SCRIPT_LEN")
    length += len(str(length + 4))
    header = text.replace("SCRIPT_LEN", str(length)).encode()
    assert len(header) == length
    body = header + control + data + signature
    size = len(body) + 100
    tail = (" " * 40 + str(size * 3589 + 1000000000)[:10] + " " * 10 + name.ljust(20) + version.ljust(10)
            + "QNAPQPKG  ").encode()
    return body + tail


def inspect_bytes(tmp_path: Path, data: bytes) -> List[str]:
    path = tmp_path / "x.qpkg"
    path.write_bytes(data)
    return inspect_qpkg(str(path)).problems


def test_inspector_accepts_a_qdk_shaped_package(tmp_path):
    path = tmp_path / "Demo_0.1.0.qpkg"
    path.write_bytes(qdk_style_package())
    result = inspect_qpkg(str(path))
    assert result.problems == []
    assert result.qpkg_cfg["QPKG_NAME"] == "Demo"
    assert [m.name for m in result.data_members] == ["./demo.sh"]


def test_inspector_reads_a_signature_area(tmp_path):
    area = b"QDK" + bytes([254]) + (5).to_bytes(4, "big") + b"sig!!" + b"\xff"
    path = tmp_path / "signed.qpkg"
    path.write_bytes(qdk_style_package(signature=area))
    result = inspect_qpkg(str(path))
    assert result.problems == []
    assert result.signature_blocks == [(254, 5)]


def test_inspector_finds_damage(built, tmp_path):
    good = built.data
    # Wrong checksum (one digit changed).
    bad = bytearray(good)
    bad[-55] = ord("0") if bad[-55] != ord("0") else ord("1")
    assert any("checksum" in p for p in inspect_bytes(tmp_path, bytes(bad)))
    # Truncated download.
    assert inspect_bytes(tmp_path, good[:-5000])
    # A flipped byte inside the data archive.
    middle = len(good) // 2
    flipped = good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1:]
    assert inspect_bytes(tmp_path, flipped)
    # script_len that does not match the header.
    script_len = len(split(good)["header"])
    wrong = good.replace(b"script_len=%d" % script_len, b"script_len=%d" % (script_len + 1), 1)
    assert wrong != good
    assert any("script_len" in p for p in inspect_bytes(tmp_path, wrong))
    # Junk between content and tail.
    assert any("unexplained" in p for p in inspect_bytes(tmp_path, good[:-100] + b"junk" + good[-100:]))
    # Not a package at all.
    assert inspect_bytes(tmp_path, b"#!/bin/sh\necho hi\n" + b"x" * 300)


def test_inspector_refuses_path_traversal(tmp_path):
    data = qdk_style_package(data_names=["./demo.sh", "../../etc/passwd"])
    assert any("outside" in p for p in inspect_bytes(tmp_path, data))
    data = qdk_style_package(data_names=["./demo.sh", "/etc/passwd"])
    assert any("outside" in p for p in inspect_bytes(tmp_path, data))


def test_inspector_caps_decompression(monkeypatch, built, tmp_path):
    import exposure_guard.packaging.qpkg_inspect as qi

    monkeypatch.setattr(qi, "MAX_UNPACKED", 100000)
    assert any("unpacks to more than" in p for p in inspect_qpkg(str(built.path)).problems)


def test_inspector_cli(built, tmp_path, capsys):
    assert main([str(built.path)]) == 0
    out = capsys.readouterr().out
    assert "OK:" in out and "./exposure-guard.sh" in out and "checksum" in out
    assert main([str(built.path), "--json"]) == 0
    import json

    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True and document["tail"]["flag"] == "QNAPQPKG  "
    assert main([str(tmp_path / "missing.qpkg")]) == 2
    damaged = tmp_path / "damaged.qpkg"
    shutil.copy(str(built.path), str(damaged))
    with open(str(damaged), "r+b") as handle:
        handle.truncate(len(built.data) - 1)
    assert main([str(damaged), "--quiet"]) == 1
    assert "NOT OK" in capsys.readouterr().out
    assert "OK" in render(inspect_qpkg(str(built.path)), quiet=True)


# ---- the App Center repository feed ----------------------------------------------------------------------

def read_feed(data: bytes):
    """The feed as App Center reads it: <plugins><item> with text fields and <platform> entries."""
    import xml.etree.ElementTree as ET  # our own build output, not hostile input

    root = ET.fromstring(data)
    assert root.tag == "plugins"
    items = root.findall("item")
    assert len(items) == 1
    item = items[0]
    fields = {child.tag: (child.text or "") for child in item if child.tag != "platform"}
    platforms = {p.findtext("platformID"): p.findtext("location") for p in item.findall("platform")}
    return root.findtext("cachechk"), fields, platforms


def test_feed_offers_exactly_the_built_package_on_every_platform(built):
    stamp, fields, platforms = read_feed((built.path.parent / "ExposureGuard.xml").read_bytes())
    assert re.fullmatch(r"\d{12}", stamp)
    assert fields["internalName"] == "ExposureGuard" and fields["version"] == built.version
    assert fields["fwVersion"] == "4.3.0" and fields["name"] == "ExposureGuard"
    assert {"TS-NASX86", "TS-NASARM_64", "TS-NASARM", "TS-X28A", "TS-X41", "TS-X31"} <= set(platforms)
    base = build_qpkg.DEFAULT_FEED_BASE
    assert set(platforms.values()) == {base + built.path.name}
    assert fields["icon80"] == base + "ExposureGuard_80.gif"
    assert (built.path.parent / "ExposureGuard_80.gif").read_bytes()[:4] == b"\x89PNG"
    assert "Unsigned package" in fields["changeLog"]


def test_feed_base_is_the_repository_address_and_must_be_a_url():
    cfg = (REPO / "qpkg/qpkg.cfg").read_bytes()
    _, fields, platforms = read_feed(build_qpkg.make_feed("1.2.3", "ExposureGuard_1.2.3.qpkg",
                                                          "https://msp.example/qpkg/", cfg, 1700000000))
    assert set(platforms.values()) == {"https://msp.example/qpkg/ExposureGuard_1.2.3.qpkg"}
    assert fields["version"] == "1.2.3" and fields["publishedDate"] == "2023/11/14"
    for bad in ("ftp://x/", "https://x/qpkg", "https://x/<y>/", ""):
        with pytest.raises(build_qpkg.BuildError):
            build_qpkg.make_feed("1.2.3", "p.qpkg", bad, cfg, 0)
