"""Shared test helpers: fixture QTS trees and running the CLI in-process."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Tuple

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
QTS_TREES = FIXTURES / "qts"


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


def tree_bytes(root: Path) -> List[Tuple[str, bytes]]:
    """Every file below root with its bytes (state dirs excluded), for byte-identical comparisons."""
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and "var" not in path.relative_to(root).parts:
            out.append((str(path.relative_to(root)), path.read_bytes()))
    return out
