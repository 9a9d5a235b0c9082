"""Our package as QNAP's own QDK 2.5.3 reads it, and QDK's own packages as our simulated QTS installs them.

``qbuild --extract`` evaluates only the header's ``script_len=`` / ``offset=`` lines and its ``dd if="${0}"
...`` lines, so our package must extract whole that way, giving exactly the trees our inspector sees. And a
reference package that the real ``qbuild`` builds from our own qpkg.cfg, installed by QDK's own installer in
the simulated QTS, must leave the NAS the way our installer leaves it (same qpkg.conf keys and values, links,
started service), apart from the differences listed and explained below. QDK is not part of this repository:
the tests use the unmodified copy beside the checkout (``../shared/qdk``) and skip, saying so, where it is
absent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Set

import pytest

from exposure_guard.packaging.qpkg_inspect import inspect_qpkg
from tests.support.paths import REPO
from tests.support.qpkg_build import Built
from tests.support.qts_rig import QPKG_DIR, Rig, find_python27, find_python38, needs_rig
from tests.support.wait import wait_for

QDK = REPO.parent / "shared" / "qdk"

pytestmark = pytest.mark.skipif(not (QDK / "bin/qbuild").is_file(),
                                reason="QNAP's QDK is not beside the checkout (%s); CI has it" % QDK)


def qdk_workspace(work: Path) -> Path:
    """A copy of QDK laid out the way its qdk.conf expects (a QDK folder next to qdk.conf)."""
    shutil.copytree(str(QDK), str(work / "QDK"))
    shutil.copy(str(QDK / "qdk.conf"), str(work / "qdk.conf"))
    return work / "QDK"


def qbuild_extract(package: Path, work: Path) -> Path:
    """Run QDK's own extractor on a package."""
    qdk_workspace(work)
    out = work / "out"
    proc = subprocess.run(["bash", "QDK/bin/qbuild", "--extract", str(package), "out"], cwd=str(work),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout
    return out


def test_qdk_extracts_the_whole_package_as_our_inspector_sees_it(built, tmp_path):
    seen = inspect_qpkg(str(built.path))
    assert not seen.problems, seen.problems
    out = qbuild_extract(built.path, tmp_path)

    control = {m.name[2:] if m.name.startswith("./") else m.name: m.size
               for m in seen.control_members if m.kind == "file"}
    extracted = {p.name: p.stat().st_size for p in out.iterdir() if p.name != "data.tar.gz"}
    assert extracted == control
    for name in control:
        assert (out / name).is_file()

    data = out / "data.tar.gz"
    assert data.is_file(), "qbuild --extract did not write data.tar.gz: %s" % sorted(p.name for p in out.iterdir())
    section = next(s for s in seen.sections if s.name == "data.tar.gz")
    with built.path.open("rb") as handle:
        handle.seek(section.start)
        assert data.read_bytes() == handle.read(section.length)  # byte for byte what the installer gets
    with tarfile.open(str(data), "r:gz") as archive:
        members = {(m.name, m.size) for m in archive.getmembers()}
    assert members == {(m.name, m.size) for m in seen.data_members}


# ---- a package made by QNAP's qbuild, installed by QNAP's installer, in the simulated QTS ------------------

NAME = "ExposureGuard"
PKG_DIR = QPKG_DIR + "/" + NAME
SERVICE = "/etc/init.d/exposure-guard.sh"
REFERENCE_LOG = "/tmp/reference-service.log"
REFERENCE_SERVICE = """#!/bin/sh
# the reference package's service: records what QTS asked of it
echo "$1" >> %s
""" % REFERENCE_LOG

# QDK's installer sources its qpkg.cfg as `. qpkg.cfg`, which POSIX sh and busybox ash look up in PATH
# only: it works on QTS, so App Center's install environment must find it there (unverified; here: `.` last
# in PATH). ExposureGuard's installer sources `./qpkg.cfg` and needs no such thing.
QDK_INSTALL_PATH = "/bin:/sbin:/usr/bin:/usr/sbin:."

# Where the two installers deliberately differ, and why (docs/qpkg-format.md, "Where ExposureGuard differs
# from qbuild"): keys only ours writes ...
ONLY_OURS = {"Status"}  # "complete", as App Center and real packages leave it after an install went through
# ... and keys whose values differ by design.
DIFFERENT_VALUES = {
    "Date",      # the install day: the two installs may straddle midnight (both YYYY-MM-DD)
    "Build",     # qbuild: the build day; ours: the day of SOURCE_DATE_EPOCH (reproducible packages)
    "Pid_File",  # qbuild copies QPKG_SERVICE_PIDFILE as written (relative here); ours makes it absolute
}


@dataclass
class Installed:
    returncode: int
    output: str
    section: Dict[str, str]
    links: Dict[str, str]
    files: Set[str]


def build_reference(work: Path, version: str) -> Path:
    """Our qpkg.cfg and default settings file, with a tiny service script, built by QNAP's own qbuild."""
    package = qdk_workspace(work) / NAME
    (package / "shared/etc").mkdir(parents=True)
    cfg = (REPO / "qpkg/qpkg.cfg").read_text(encoding="utf-8").replace("@VERSION@", version)
    (package / "qpkg.cfg").write_text(cfg, encoding="utf-8")
    shutil.copy(str(QDK / "template/package_routines"), str(package / "package_routines"))
    shutil.copy(str(REPO / "qpkg/shared/etc/exposure-guard.ini"), str(package / "shared/etc/exposure-guard.ini"))
    service = package / "shared/exposure-guard.sh"
    service.write_text(REFERENCE_SERVICE, encoding="utf-8")
    service.chmod(0o755)
    proc = subprocess.run(["bash", "../bin/qbuild"], cwd=str(package), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300, stdin=subprocess.DEVNULL)
    built = package / "build" / ("%s_%s.qpkg" % (NAME, version))
    assert proc.returncode == 0 and built.is_file(), proc.stdout
    return built


def install_and_look(rig: Rig, package: Path, path: str) -> Installed:
    """Run the package the way App Center's manual install does and read what it left on the NAS."""
    target = "/share/CACHEDEV1_DATA/Public/" + package.name
    shutil.copy(str(package), str(rig.path(target)))
    proc = rig.run("sh " + target, env={"PATH": path})
    links = {}
    for folder in ("/etc/init.d", "/etc/rcS.d", "/etc/rcK.d"):
        for entry in sorted(rig.path(folder).iterdir()):
            links[folder + "/" + entry.name] = os.readlink(str(entry))
    files = {str(p.relative_to(rig.path(PKG_DIR))) for p in rig.path(PKG_DIR).rglob("*")} \
        if rig.path(PKG_DIR).is_dir() else set()
    return Installed(proc.returncode, proc.stdout, rig.ini("/etc/config/qpkg.conf").get(NAME, {}), links, files)


def reference_rig(base: Path) -> Rig:
    return Rig(base, shell="busybox", python=find_python38(), nas_tree=REPO / "tests/fixtures/qts/exposed",
               firmware_python2=find_python27())


@pytest.mark.skipif(shutil.which("rsync") is None, reason="qbuild copies the package's files with rsync")
@pytest.mark.skipif(find_python27() is None, reason="pyenv Python 2.7 (the firmware Python QDK's header uses) "
                    "is not installed (~/.pyenv/versions/2.7.*)")
@needs_rig
def test_a_package_built_by_qbuild_installs_as_ours_does(built: Built, tmp_path: Path):
    reference = build_reference(tmp_path / "qdk", built.version)
    with reference_rig(tmp_path / "theirs") as rig:
        theirs = install_and_look(rig, reference, QDK_INSTALL_PATH)
        assert "Installation Abort" not in theirs.output, theirs.output
        started = wait_for("QDK's installer to start the reference service",
                           lambda: "start" in rig.read(REFERENCE_LOG).split() if rig.path(REFERENCE_LOG).exists()
                           else False)
        assert started
        removed = rig.run("sh %s/.uninstall.sh" % PKG_DIR)
        assert removed.returncode == 0, removed.stdout
        assert rig.read(REFERENCE_LOG).split()[-2:] == ["stop", "remove"]  # as ours: `stop`, then `remove`
        theirs_left = {link for link in theirs.links if os.path.lexists(str(rig.path(link)))}
        assert not rig.path(PKG_DIR).exists() and not theirs_left
        assert NAME in rig.ini("/etc/config/qpkg.conf"), "QDK's uninstaller leaves the qpkg.conf section"
    with reference_rig(tmp_path / "ours") as rig:
        ours = install_and_look(rig, built.path, "/bin:/sbin:/usr/bin:/usr/sbin")
        wait_for("our agent to start", rig.agent_pids)
        removed = rig.run("sh %s/.uninstall.sh" % PKG_DIR)
        assert removed.returncode == 0, removed.stdout
        wait_for("our agent to stop", lambda: not rig.agent_pids())
        ours_left = {link for link in ours.links if os.path.lexists(str(rig.path(link)))}
        assert not rig.path(PKG_DIR).exists() and not ours_left
        assert NAME not in rig.ini("/etc/config/qpkg.conf"), "ours also unregisters"

    # both exit 10 ("installed; remove the package file"), as qbuild's header does
    assert theirs.returncode == ours.returncode == 10, (theirs.output, ours.output)
    # the same qpkg.conf section, key for key
    assert set(ours.section) - set(theirs.section) == ONLY_OURS
    assert set(theirs.section) <= set(ours.section), "keys only QDK's installer writes: %s" % sorted(
        set(theirs.section) - set(ours.section))
    for key in sorted(set(theirs.section) - DIFFERENT_VALUES):
        assert ours.section[key] == theirs.section[key], key
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", ours.section["Date"]) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", theirs.section["Date"])
    assert re.fullmatch(r"\d{8}", ours.section["Build"]) and re.fullmatch(r"\d{8}", theirs.section["Build"])
    assert ours.section["Pid_File"] == PKG_DIR + "/" + theirs.section["Pid_File"]
    assert theirs.section["Win_Width"] == "1100" and theirs.section["WebUI"].endswith("/index.cgi")
    # the same service links, and the files both installers add to the QPKG folder
    assert ours.links == theirs.links == {SERVICE: PKG_DIR + "/exposure-guard.sh",
                                          "/etc/rcS.d/QS190" + NAME: SERVICE, "/etc/rcK.d/QK810" + NAME: SERVICE}
    for rel in (".list", ".uninstall.sh", "exposure-guard.sh", "etc/exposure-guard.ini"):
        assert rel in theirs.files and rel in ours.files, rel
