"""Where things are: the repository, its src/ and tools/, and the test fixtures."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
TOOLS = REPO / "tools"
FIXTURES = REPO / "tests" / "fixtures"
QTS_TREES = FIXTURES / "qts"  # fixture QTS roots by scenario: exposed, factory-default, hardened, nasty
IGD_FIXTURES = FIXTURES / "igd"  # real miniupnpd 2.3.1 descriptions and captured SOAP / SSDP answers
