"""Headless Debian Chromium through Playwright (no downloaded browser) for the browser tests."""

from __future__ import annotations

import os
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def require_chromium() -> None:
    """Skip, saying why, where Debian's chromium or python playwright is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed at %s" % CHROMIUM)
    pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
