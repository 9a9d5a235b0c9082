"""Fixtures for lab tests: ``lab`` (the default topology) and ``make_lab(**options)`` (see tests.support.netlab.Lab).

Every lab is torn down after its test, even on failure; tests skip with the reason when this machine
cannot build one (not root, miniupnpd / ip / nft missing)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from tests.support.netlab import Lab


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.lab)


_reaped = False


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    built: List[Lab] = []

    def make(**options: object) -> Lab:
        global _reaped
        reason = Lab.missing(bool(options.get("igd", True)))
        if reason:
            pytest.skip("lab: " + reason)
        if not _reaped:
            _reaped = True
            Lab.reap_stale()  # namespaces of earlier runs that were killed before their teardown
        lab = Lab(**options)  # type: ignore[arg-type]
        built.append(lab)
        return lab.up()

    try:
        yield make
    finally:
        for lab in built:
            lab.down()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    return make_lab()
