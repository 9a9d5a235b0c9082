"""Agent figures: import time, full local check cycle (wall time, peak RSS), as medians of N runs.

Usage (from the repository root): python3 -m bench.bench_agent [--runs 20]
Baseline in the same run: a bare `python -c pass` start, so the figures can be read as added cost.
No network: the checks run --offline against the bundled example NAS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from tests.support.paths import SRC as SRC_PATH

SRC = str(SRC_PATH)
DEMO = str(SRC_PATH / "exposure_guard" / "data" / "demo_nas")
# On a NAS Python caches bytecode next to the installed agent; measure that state ("warm") by caching it in a
# private folder, and also the first run after install ("cold", every module compiled from source).
PYCACHE = tempfile.mkdtemp(prefix="eg-bench-pycache-")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV.update(PYTHONPATH=SRC, PYTHONPYCACHEPREFIX=PYCACHE)
COLD_ENV = dict(ENV, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=tempfile.mkdtemp(prefix="eg-bench-empty-"))


def timed(argv, env=None):
    """Wall time (s) and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env or ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
    return elapsed, usage.ru_maxrss / 1024.0


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import exposure_guard.cli, exposure_guard.checks.runner; " \
           "print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    return float(out.stdout.strip())


def in_process_cycle(runs: int) -> float:
    from exposure_guard.checks.runner import run_checks
    from exposure_guard.context import CheckContext
    from exposure_guard.qts.root import QtsRoot

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_checks(CheckContext(QtsRoot(DEMO), offline=True))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    check = [sys.executable, "-m", "exposure_guard", "check", "--root", DEMO, "--offline", "--json"]
    baseline = [timed([sys.executable, "-c", "pass"]) for _ in range(runs)]
    cold = [timed(check, COLD_ENV) for _ in range(max(3, runs // 4))]
    timed(check)  # fills the bytecode cache
    cycle = [timed(check) for _ in range(runs)]
    imports = [import_seconds() for _ in range(runs)]
    base_wall = statistics.median(t for t, _ in baseline)
    cycle_wall = statistics.median(t for t, _ in cycle)
    print("python %s, %d runs each, medians" % (sys.version.split()[0], runs))
    print("bare interpreter start        %7.1f ms   peak RSS %5.1f MiB" % (
        base_wall * 1000, statistics.median(r for _, r in baseline)))
    print("import exposure_guard (CLI)   %7.1f ms   (goal <= 100 ms)" % (statistics.median(imports) * 1000))
    print("full local check, CLI process %7.1f ms   peak RSS %5.1f MiB (goal <= 150 ms, <= 30 MB); "
          "%.2fx a bare start" % (cycle_wall * 1000, statistics.median(r for _, r in cycle), cycle_wall / base_wall))
    print("  first run, no bytecode yet  %7.1f ms   peak RSS %5.1f MiB" % (
        statistics.median(t for t, _ in cold) * 1000, statistics.median(r for _, r in cold)))
    print("full local check, in process  %7.1f ms" % (in_process_cycle(runs) * 1000))


if __name__ == "__main__":
    main()
