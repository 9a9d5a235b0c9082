"""Fixtures for every test directory: fixture QTS trees, the CLI in-process, seeded randomness, loopback NAS
services. Helpers that are not fixtures live in tests/support (``from tests.support.<module> import ...``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator, Tuple

import pytest

from tests.support.fuzz import FUZZ_EXAMPLES, TALLY
from tests.support.paths import QTS_TREES
from tests.support.seeds import SeededRandom, seeded


@pytest.fixture
def qts_tree(tmp_path: Path):
    """Copy a fixture tree (by scenario name) into tmp and return its root."""

    def make(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(str(QTS_TREES / name), str(target), symlinks=True)
        return target

    return make


@pytest.fixture
def run_cli(capsys):
    """Run ``exposure-guard ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from exposure_guard.cli import main

    def run(*args: str) -> Tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> SeededRandom:
    """A seeded ``random.Random`` for tests that make random choices. The seed is printed (pytest shows it
    with a failure), recorded as the user property ``random_seed``, and ``EG_TEST_SEED=<seed>`` replays it;
    put ``rng.replay`` in assertion messages."""
    generator = seeded()
    request.node.user_properties.append(("random_seed", generator.seed_value))
    print("%s: %s" % (request.node.nodeid, generator.replay))
    return generator


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A NAS's services on loopback (tests.support.reach.Services): admin HTTP/HTTPS, an SSH banner."""
    from tests.support.reach import Services

    running = Services(tmp_path_factory.mktemp("svc"))
    try:
        yield running
    finally:
        running.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many generated inputs each fuzzed parser was given (the figure the fuzzing goal asks for)."""
    if not TALLY:
        return
    terminalreporter.section("fuzzing: generated inputs per parser (goal %d each)" % FUZZ_EXAMPLES)
    width = max(len(name) for name in TALLY)
    for name, count in sorted(TALLY.items()):
        terminalreporter.write_line("%-*s %7d inputs" % (width, name, count))
