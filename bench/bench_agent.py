"""Agent figures on an installed (not editable) copy: start-up and a full local check, as medians of N
runs, each against a bare ``python -c pass`` of the same interpreter measured interleaved in the same run.

Usage (from the repository root): python3 -m bench.bench_agent [--runs 25] [--python PATH]

The agent and its three libraries are copied into a fresh virtual environment's site-packages, the way
pip or the QPKG lays them out (an editable install adds an import hook to every start and is not what a
NAS runs). States measured:
- warm: bytecode cached next to the sources (every run on a NAS after the first);
- first after install: bytecode compiled by ``compileall`` beforehand, as the package's installer does;
- cold: no bytecode at all (every module compiled from source: what the first run cost before that).
No network: the checks run --offline against the bundled example NAS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

from tests.support.paths import SRC

LIBRARIES = ("requests", "urllib3", "idna", "certifi", "charset_normalizer", "schedule", "defusedxml")


def peak_rss(argv: List[str], env: dict) -> float:
    """Peak RSS (MiB) of one run, as GNU time measures it (the rusage a parent gets back never shows less
    than the parent's own size, so it cannot measure a process smaller than this bench); 0 without it."""
    if not os.path.exists("/usr/bin/time"):
        return 0.0
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + argv, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    return int(out.stderr.strip().splitlines()[-1]) / 1024.0


def timed(argv: List[str], env: dict) -> Tuple[float, float]:  # (seconds, unused)
    """Wall time (s) of one child process, spawned with posix_spawn (no copy of this bench's memory)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1),
                                                                (os.POSIX_SPAWN_DUP2, devnull, 2)])
        _, status, _usage = os.wait4(pid, 0)
        elapsed = time.perf_counter() - start
    finally:
        os.close(devnull)
    code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
    if code not in (0, 1):  # 1: the demo NAS has failing findings
        raise SystemExit("%s exited %d" % (argv, code))
    return elapsed, 0.0


# The console script exactly as pip writes it for the `exposure-guard = exposure_guard.cli:main` entry point.
CONSOLE_SCRIPT = """#!%s
import re
import sys
from exposure_guard.cli import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def install(python: str, where: Path) -> Tuple[str, Path]:
    """A venv at ``where`` with the agent and its libraries copied into site-packages and the
    ``exposure-guard`` console script in bin/; (python, site)."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(where)], check=True)
    venv_python = str(where / "bin" / "python")
    site = Path(subprocess.check_output([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(str(SRC / "exposure_guard"), str(site / "exposure_guard"), ignore=ignore)
    # The libraries of the interpreter running this bench, located by a child (importing them here would
    # grow this process, and every child forked from it would start with that peak RSS).
    where_code = "import importlib, sys; [print(importlib.import_module(n).__file__) for n in sys.argv[1:]]"
    files = subprocess.check_output([sys.executable, "-c", where_code] + list(LIBRARIES), text=True).split()
    for source in map(Path, files):
        if source.name == "__init__.py":
            shutil.copytree(str(source.parent), str(site / source.parent.name), ignore=ignore)
        else:
            shutil.copy2(str(source), str(site / source.name))
    script = where / "bin" / "exposure-guard"
    script.write_text(CONSOLE_SCRIPT % venv_python)
    script.chmod(0o755)
    return venv_python, site


def clean_bytecode(site: Path) -> None:
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(str(cache), ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure (the libraries are copied "
                        "from this bench's own interpreter: use the same minor version)")
    args = parser.parse_args()
    runs = args.runs
    work = Path(tempfile.mkdtemp(prefix="eg-bench-agent-"))
    try:
        python, site = install(args.python, work / "venv")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH",
                                                                "PYTHONPYCACHEPREFIX")}
        cold_env = dict(env, PYTHONDONTWRITEBYTECODE="1")
        demo = str(site / "exposure_guard" / "data" / "demo_nas")
        check = [str(Path(python).parent / "exposure-guard"), "check", "--root", demo, "--offline", "--json"]
        module = [python, "-m", "exposure_guard", "check", "--root", demo, "--offline", "--json"]
        bare = [python, "-c", "pass"]

        clean_bytecode(site)
        cold = [timed(check, cold_env) for _ in range(max(5, runs // 4))]
        first = []
        for _ in range(max(5, runs // 4)):  # a fresh install each time, compiled like the package's installer
            clean_bytecode(site)
            subprocess.run([python, "-I", "-S", "-m", "compileall", "-q", str(site)], check=True,
                           stdout=subprocess.DEVNULL, env=env)
            first.append(timed(check, env))
        timed(check, env)  # bytecode of everything the check imports is now cached
        baseline, warm, warm_module = [], [], []
        for _ in range(runs):  # interleaved, so a busy moment of the machine hits all alike
            baseline.append(timed(bare, env))
            warm.append(timed(check, env))
            warm_module.append(timed(module, env))
        code = ("import time; t = time.perf_counter(); import exposure_guard.cli, exposure_guard.core; "
                "print(time.perf_counter() - t)")
        imports = [float(subprocess.check_output([python, "-c", code], env=env, text=True)) for _ in range(runs)]
        rss_bare = statistics.median(peak_rss(bare, env) for _ in range(5))
        rss_check = statistics.median(peak_rss(check, env) for _ in range(5))
    finally:
        shutil.rmtree(str(work), ignore_errors=True)

    def wall(samples: List[Tuple[float, float]]) -> float:
        return statistics.median(t for t, _ in samples)

    base, warm_wall = wall(baseline), wall(warm)
    version = subprocess.check_output([args.python, "-c", "import platform; print(platform.python_version())"],
                                      text=True).strip()
    print("python %s, installed copy (not editable), %d runs each, medians" % (version, runs))
    print("bare interpreter start          %7.1f ms   peak RSS %5.1f MiB" % (base * 1000, rss_bare))
    print("import exposure_guard (CLI)     %7.1f ms" % (statistics.median(imports) * 1000))
    print("exposure-guard check --offline  %7.1f ms   peak RSS %5.1f MiB   %.2fx a bare start (goal <= 4x)" % (
        warm_wall * 1000, rss_check, warm_wall / base))
    print("  the same as python -m ...     %7.1f ms   %.2fx (runpy and importlib.util come with -m)" % (
        wall(warm_module) * 1000, wall(warm_module) / base))
    print("  first check after install     %7.1f ms   %+.0f%% vs warm (precompiled at install; goal within 20%%)" % (
        wall(first) * 1000, (wall(first) / warm_wall - 1) * 100))
    print("  cold, no bytecode at all      %7.1f ms   %.2fx warm" % (wall(cold) * 1000, wall(cold) / warm_wall))


if __name__ == "__main__":
    main()
