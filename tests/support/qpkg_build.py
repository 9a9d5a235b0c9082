"""Building the .qpkg for the QPKG tests, the advisory scenario and bench/bench_qpkg.py: ./build.sh, versions,
the package's parts, and tools/build_qpkg.py as a module."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Dict

from tests.support.paths import REPO, TOOLS

EPOCH = "1700000000"


@dataclass
class Built:
    path: Path
    version: str
    seconds: float

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def package_version() -> str:
    text = (REPO / "src/exposure_guard/__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert match
    return match.group(1)


def next_version(version: str) -> str:
    parts = version.split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return ".".join(parts)


def run_build(out: Path, version: str = "", epoch: str = EPOCH) -> Built:
    env: Dict[str, str] = dict(os.environ, EXPOSURE_GUARD_DIST=str(out), SOURCE_DATE_EPOCH=epoch)
    env.pop("EXPOSURE_GUARD_VERSION", None)
    if version:
        env["EXPOSURE_GUARD_VERSION"] = version
    started = time.monotonic()
    proc = subprocess.run(["sh", str(REPO / "build.sh")], cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, "build.sh failed:\n" + proc.stdout
    version = version or package_version()
    path = out / ("ExposureGuard_%s.qpkg" % version)
    assert path.is_file(), proc.stdout
    return Built(path, version, seconds)


def split(data: bytes) -> Dict[str, bytes]:
    """Cut a package at the offsets its header declares (evaluated like qbuild's reader)."""
    header = re.search(rb"^script_len=(\d+)$", data, re.MULTILINE)
    assert header is not None, "no script_len= line in the package header"
    script_len = int(header.group(1))
    ctrl_len, data_len = (int(x) for x in re.findall(rb"^offset=\$\(/usr/bin/expr \$\w+ \+ (\d+)\)$", data[:script_len],
                                                     re.MULTILINE))
    return {
        "header": data[:script_len],
        "control": data[script_len:script_len + ctrl_len],
        "data": data[script_len + ctrl_len:script_len + ctrl_len + data_len],
        "rest": data[script_len + ctrl_len + data_len:],
    }


def builder() -> ModuleType:
    """tools/build_qpkg.py (the builder build.sh runs) imported as the module ``build_qpkg``."""
    if "build_qpkg" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_qpkg", str(TOOLS / "build_qpkg.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_qpkg"] = module  # registered first: its dataclasses look themselves up there
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["build_qpkg"]
            raise
    return sys.modules["build_qpkg"]
