"""Waiting in tests: poll a condition against a generous deadline instead of sleeping for a fixed time.

A test may assert that something happens, never that it happens within a tight window: the deadline
only bounds how long a broken run hangs, so it is far longer than a loaded machine ever needs."""

from __future__ import annotations

import time
from typing import Callable, Type, TypeVar

T = TypeVar("T")

DEADLINE = 60.0


def wait_for(what: str, predicate: Callable[[], T], timeout: float = DEADLINE, interval: float = 0.05,
             error: Type[Exception] = AssertionError) -> T:
    """Call ``predicate`` until it returns something true and return that; raise ``error`` (naming
    ``what``) when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)
