"""Shared settings for the parser fuzz tests: how many generated inputs each parser gets, and a tally of the
inputs really tried (printed at the end of the run, so the figure can be reported).

``EG_FUZZ_EXAMPLES`` lowers or raises the count (default 10,000 per parser). A hang is an input that takes
longer than the per-input deadline; Hypothesis replays it before failing, so a loaded machine does not
turn a slow input into a failure."""

from __future__ import annotations

import functools
import os
from collections import Counter
from datetime import timedelta
from typing import Any, Callable

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = int(os.environ.get("EG_FUZZ_EXAMPLES", "10000"))
PER_INPUT_DEADLINE = timedelta(seconds=10)  # a parser that spends this long on one small input hangs

TALLY: Counter = Counter()


def fuzz(parser_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator (put it under ``@given``): run FUZZ_EXAMPLES inputs and count each under ``parser_name``."""

    def wrap(test: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(test)  # keeps the signature @given maps its strategies onto
        def counted(*args: Any, **kwargs: Any) -> None:
            TALLY[parser_name] += 1
            test(*args, **kwargs)

        return settings(max_examples=FUZZ_EXAMPLES, deadline=PER_INPUT_DEADLINE, database=None,
                        suppress_health_check=list(HealthCheck))(counted)

    return wrap


def json_paths(doc: Any, prefix: tuple = ()) -> list:
    """Every path into a JSON document (keys and list indexes), the document itself first: where a
    generated mutation can be put."""
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += json_paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += json_paths(value, prefix + (index,))
    return out
