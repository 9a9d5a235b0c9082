"""The agent as packaged: Python 3.8 from pyenv, only the package's lib/ on the path, no site-packages."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.qpkg_build import split
from tests.support.qts_rig import find_python38

PYTHON38 = find_python38()
pytestmark = pytest.mark.skipif(PYTHON38 is None, reason="pyenv Python 3.8 not installed (~/.pyenv/versions/3.8.*)")

LIBRARIES = ("requests", "urllib3", "idna", "certifi", "charset_normalizer", "schedule", "defusedxml")


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory) -> Path:
    """The data archive extracted, as it lands in <volume>/.qpkg/ExposureGuard."""
    target = tmp_path_factory.mktemp("ExposureGuard")
    with tarfile.open(fileobj=io.BytesIO(split(built.data)["data"]), mode="r:gz") as archive:
        archive.extractall(str(target))
    return target


def run38(installed: Path, *args: str, state: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(installed / "lib"), "EXPOSURE_GUARD_STATE_DIR": str(state),
           "PYTHONNOUSERSITE": "1", "LANG": "C"}
    return subprocess.run([str(PYTHON38 / "bin/python3.8"), "-S"] + list(args), env=env, cwd=str(installed),
                          capture_output=True, text=True, timeout=120)


def test_libraries_come_from_the_package(installed, tmp_path):
    code = ("import json, sys\n"
            "import %s\n"
            "print(json.dumps({'path': sys.path, 'version': list(sys.version_info[:2]), "
            "'files': {n: sys.modules[n].__file__ for n in %r}}))" % (", ".join(LIBRARIES), LIBRARIES))
    proc = run38(installed, "-c", code, state=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["version"] == [3, 8]
    assert not [p for p in found["path"] if "site-packages" in p]
    for name, file in found["files"].items():
        assert file.startswith(str(installed / "lib") + os.sep), (name, file)


def test_packaged_agent_checks_a_nas_on_python38(installed, tmp_path):
    proc = run38(installed, "-m", "exposure_guard", "check", "--json", "--offline",
                 "--root", str(REPO / "tests/fixtures/qts/exposed"),
                 "--settings", str(installed / "etc/exposure-guard.ini"), state=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the "exposed" NAS has failing findings
    document = json.loads(proc.stdout)
    assert document["schema"] == "exposure-guard/report/v1"
    assert document["agent"]["python"].startswith("3.8.")
    assert document["device"]["model"] == "TS-453D"
    statuses = {f["id"]: f["status"] for f in document["findings"]}
    assert statuses["myqnapcloud.upnp-forwarding"] == "fail"
    assert "error" not in statuses.values(), [f for f in document["findings"] if f["status"] == "error"]


def test_packaged_inspector_runs_on_python38(installed, built, tmp_path):
    proc = run38(installed, "-m", "exposure_guard.qpkg_inspect", "--quiet", str(built.path), state=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK: ")
