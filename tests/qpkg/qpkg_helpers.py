"""Helpers shared by the QPKG tests and bench/bench_qpkg.py: build the package, versions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
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
