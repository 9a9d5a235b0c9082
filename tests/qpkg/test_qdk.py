"""Our package as QNAP's own QDK 2.5.3 reads it: ``qbuild --extract`` evaluates only the header's
``script_len=`` / ``offset=`` lines and its ``dd if="${0}" ...`` lines, so the package must extract whole
that way, giving exactly the trees our inspector sees. QDK is not part of this repository: the tests use
the unmodified copy beside the checkout (``../shared/qdk``) and skip, saying so, where it is absent."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from exposure_guard.packaging.qpkg_inspect import inspect_qpkg
from tests.support.paths import REPO

QDK = REPO.parent / "shared" / "qdk"

pytestmark = pytest.mark.skipif(not (QDK / "bin/qbuild").is_file(),
                                reason="QNAP's QDK is not beside the checkout (%s); CI has it" % QDK)


def qbuild_extract(package: Path, work: Path) -> Path:
    """Run QDK's own extractor, laid out the way its qdk.conf expects (a QDK folder next to qdk.conf)."""
    shutil.copytree(str(QDK), str(work / "QDK"))
    shutil.copy(str(QDK / "qdk.conf"), str(work / "qdk.conf"))
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
