"""Build the QPKG once per test session (and an upgrade build only when a test asks for it)."""

from __future__ import annotations

import pytest

from tests.support.qpkg_build import Built, next_version, run_build


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return run_build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def built_upgrade(tmp_path_factory: pytest.TempPathFactory, built: Built) -> Built:
    return run_build(tmp_path_factory.mktemp("dist-upgrade"), next_version(built.version))
