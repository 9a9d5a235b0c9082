"""Prints how many generated inputs each parser was given (the figure the fuzzing goal asks for)."""

from __future__ import annotations

from typing import Any

from tests.support.fuzz import FUZZ_EXAMPLES, TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY:
        return
    terminalreporter.section("fuzzing: generated inputs per parser (goal %d each)" % FUZZ_EXAMPLES)
    for name, count in sorted(TALLY.items()):
        terminalreporter.write_line("%-34s %7d inputs" % (name, count))
