"""QPKG figures: package size, build time (warm wheel cache), install/upgrade/remove time in the simulated QTS.

    python3 -m bench.bench_qpkg [--runs N]        (from the repository root)

The install figures need root (namespaces + chroot, as tests/qpkg); without root only the build figures
are printed. Traffic: none (the simulated NAS has its own empty network namespace).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List

from tests.support.paths import QTS_TREES
from tests.support.qpkg_build import next_version, run_build
from tests.support.qts_rig import QPKG_DIR, Rig, find_python38


def spread(values: List[float]) -> str:
    return "%.2f s [%.2f s]" % (statistics.median(values), max(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-qpkg-"))
    try:
        run_build(work / "warm-up")  # fills the wheel cache
        builds = [run_build(work / ("dist%d" % i)) for i in range(args.runs)]
        built = builds[0]
        upgrade = run_build(work / "upgrade", next_version(built.version))
        size = built.path.stat().st_size
        print("qpkg size: %d bytes (%.2f MiB; goal <= 1.5 MiB)" % (size, size / 1048576.0))
        print("build time (build.sh, warm wheel cache): median %.2f s over %d runs"
              % (statistics.median(b.seconds for b in builds), args.runs))
        if os.geteuid() != 0 or find_python38() is None:
            print("install figures skipped: need root and pyenv Python 3.8")
            return 0
        for shell in ("busybox", "bash"):
            installs: List[float] = []
            upgrades: List[float] = []
            removes: List[float] = []
            for run in range(args.runs):
                base = work / ("rig-%s-%d" % (shell, run))
                base.mkdir()
                with Rig(base, shell=shell, python=find_python38(),
                         nas_tree=QTS_TREES / "exposed") as rig:
                    for package in (built, upgrade):
                        shutil.copy(str(package.path), str(rig.path("/share/CACHEDEV1_DATA/Public/")))
                    for package, bucket in ((built, installs), (upgrade, upgrades)):
                        started = time.monotonic()
                        proc = rig.run("sh /share/CACHEDEV1_DATA/Public/" + package.path.name)
                        bucket.append(time.monotonic() - started)
                        assert proc.returncode == 10, proc.stdout
                        if bucket[-1] > 5:
                            print("slow %s run (%.1f s):\n%s" % (package.version, bucket[-1], proc.stdout))
                    started = time.monotonic()
                    proc = rig.run("sh %s/ExposureGuard/.uninstall.sh" % QPKG_DIR)
                    removes.append(time.monotonic() - started)
                    assert proc.returncode == 0, proc.stdout
            print("simulated QTS, /bin/sh = %-7s install %s, upgrade %s, remove %s (median [max] of %d runs;"
                  " install and upgrade include starting the agent)"
                  % (shell, spread(installs), spread(upgrades), spread(removes), args.runs))
    finally:
        shutil.rmtree(str(work), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
