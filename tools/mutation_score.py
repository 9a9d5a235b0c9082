"""Mutation score of the modules that decide verdicts and change NAS config.

Runs mutmut (settings: ``[tool.mutmut]`` in pyproject.toml) over the modules listed in its ``only_mutate``,
then prints one line per module: mutants, killed, timed out, survived, without a test, and the score
(killed + timed out, of all mutants). Exits 1 when a module scores below ``--min``. See docs/testing.md.

    python tools/mutation_score.py                 # fresh run of every listed module, then the table
    python tools/mutation_score.py --table         # only the table of the last run (mutants/ kept)
    python tools/mutation_score.py --survivors     # also list each surviving mutant by name
    python tools/mutation_score.py --module src/exposure_guard/upnp/soap.py   # one module only (repeatable)

Needs Python 3.11+ (tomllib) and ``pip install -e '.[dev]'`` (mutmut). Not part of CI: a full run takes
tens of minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import tomllib

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"

# mutmut's exit codes per mutant (mutmut/stats.py): 1 and 3 are a failing test run, i.e. the mutant was killed
KILLED = {1, 3}
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


@dataclass
class ModuleScore:
    path: str
    total: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    no_tests: int = 0
    other: int = 0
    survivors: List[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return 100.0 * (self.killed + self.timeout) / self.total if self.total else 100.0


def listed_modules() -> List[str]:
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["mutmut"]
    return list(settings["only_mutate"])


def mutant_pattern(module: str) -> str:
    """mutmut's names for the mutants of src/a/b.py: a.b.<function>__mutmut_<n>."""
    return module[len("src/"):-len(".py")].replace("/", ".") + ".*"


def run_mutmut(modules: List[str], max_children: int, every: bool) -> float:
    if MUTANTS.exists():
        shutil.rmtree(MUTANTS)  # a fresh run: mutmut would otherwise keep results for code that changed since
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    started = time.monotonic()
    names = [] if every else [mutant_pattern(m) for m in modules]
    MUTANTS.mkdir()
    log = MUTANTS / "mutmut-run.log"
    with log.open("wb") as out:
        result = subprocess.run(["mutmut", "run", "--max-children", str(max_children)] + names, cwd=str(ROOT),
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log.read_bytes()[-3000:].decode("utf-8", "replace").replace("\r", "\n")
        sys.stderr.write(tail + "\n")
        raise SystemExit("mutmut run failed (exit %d); its whole output: %s" % (result.returncode, log))
    return time.monotonic() - started


def read_scores(modules: List[str]) -> List[ModuleScore]:
    scores = []
    for module in modules:
        meta = MUTANTS / (module + ".meta")
        if not meta.is_file():
            raise SystemExit("no mutmut results for %s (%s missing): run without --table first" % (module, meta))
        exit_codes: Dict[str, object] = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        score = ModuleScore(module)
        for name, code in sorted(exit_codes.items()):
            score.total += 1
            if code in KILLED:
                score.killed += 1
            elif code in TIMEOUT:
                score.timeout += 1
            elif code in SURVIVED:
                score.survived += 1
                score.survivors.append(name)
            elif code in NO_TESTS:
                score.no_tests += 1
                score.survivors.append(name + "  (no test runs it)")
            else:
                score.other += 1
                score.survivors.append("%s  (exit code %r)" % (name, code))
        scores.append(score)
    return scores


def print_table(scores: List[ModuleScore], minimum: float, survivors: bool) -> bool:
    width = max(len(s.path) for s in scores)
    print("%-*s %7s %7s %7s %8s %8s %7s" % (width, "module", "mutants", "killed", "timeout", "survived",
                                           "no test", "score"))
    for s in scores:
        flag = "" if s.score >= minimum else "  < %.0f %%" % minimum
        print("%-*s %7d %7d %7d %8d %8d %6.1f%%%s" % (width, s.path, s.total, s.killed, s.timeout, s.survived,
                                                     s.no_tests, s.score, flag))
    total = sum(s.total for s in scores)
    caught = sum(s.killed + s.timeout for s in scores)
    print("%-*s %7d %7d %7s %8d %8d %6.1f%%" % (width, "all", total, caught, "", sum(s.survived for s in scores),
                                               sum(s.no_tests for s in scores), 100.0 * caught / max(total, 1)))
    if survivors:
        for s in scores:
            for name in s.survivors:
                print("survived: %s" % name)
    return all(s.score >= minimum for s in scores)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="only print the table of the last run")
    parser.add_argument("--survivors", action="store_true", help="list every mutant that was not killed")
    parser.add_argument("--min", type=float, default=85.0, help="lowest acceptable score per module (default 85)")
    parser.add_argument("--module", action="append", default=[], metavar="PATH",
                        help="only this module (one of only_mutate in pyproject.toml); repeatable")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="parallel test runs")
    args = parser.parse_args()
    modules = listed_modules()
    unknown = [m for m in args.module if m not in modules]
    if unknown:
        parser.error("not in [tool.mutmut] only_mutate: %s" % ", ".join(unknown))
    chosen = args.module or modules
    elapsed = None if args.table else run_mutmut(chosen, args.max_children, every=not args.module)
    modules = chosen
    ok = print_table(read_scores(modules), args.min, args.survivors)
    if elapsed is not None:
        print("mutmut run took %.0f s" % elapsed)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
