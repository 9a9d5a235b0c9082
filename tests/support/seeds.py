"""Randomness in tests: every random choice comes from a seed that is printed and can be replayed.

``seeded()`` draws a fresh seed, or takes ``EG_TEST_SEED`` from the environment to replay a failure:
``EG_TEST_SEED=1234 python -m pytest tests/unit/test_crash_safety.py``. The ``rng`` fixture
(tests/conftest.py) prints it (pytest shows it with a failure) and records it as a user property;
tests put ``rng.replay`` into their assertion messages."""

from __future__ import annotations

import os
import random
from typing import Optional

ENV = "EG_TEST_SEED"


class SeededRandom(random.Random):
    """A ``random.Random`` that remembers the seed it started from."""

    def __init__(self, seed_value: int) -> None:
        super().__init__(seed_value)
        self.seed_value = seed_value

    @property
    def replay(self) -> str:
        """How to rerun with the same choices, for assertion messages."""
        return "random seed %d (replay with %s=%d)" % (self.seed_value, ENV, self.seed_value)


def seeded(seed: Optional[int] = None) -> SeededRandom:
    """``seed``, else ``EG_TEST_SEED``, else a fresh one."""
    if seed is None:
        text = os.environ.get(ENV, "").strip()
        seed = int(text) if text else random.SystemRandom().randrange(1 << 32)
    return SeededRandom(seed)
