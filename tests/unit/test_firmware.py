"""Firmware versions against the dated advisory table."""

from __future__ import annotations

import pytest

from exposure_guard.facts.firmware import assess_firmware, load_table, parse_version

TABLE = {
    "as_of": "2026-01-01",
    "advisories": [
        {"id": "A", "title": "t", "severity": "critical", "url": "u",
         "fixed": [{"version": "4.5.4.1892", "build": "20211223"}, {"version": "5.0.0.1891", "build": "20211221"}]},
        {"id": "B", "title": "t", "severity": "high", "url": "u", "fixed": [{"version": "5.1.5.2645", "build": "20240116"}]},
    ],
}


@pytest.mark.parametrize(
    "version,build,missing",
    [
        ("4.3.6.1446", "20200929", ["A", "B"]),  # older branch than every fix
        ("4.5.4.1800", "20210923", ["A", "B"]),
        ("4.5.4.1892", "20211223", ["B"]),  # fixed on its own branch; B has no 4.5 fix
        ("5.0.0.1891", "20211220", ["A", "B"]),  # same version, older build
        ("5.0.0.1891", "20211221", ["B"]),
        ("5.0.1.2234", "20221201", ["B"]),
        ("5.1.5.2645", "20240116", []),
        ("5.2.0.2737", "20240417", []),  # newer branch than every fix
        ("h5.1.5.2647", "20240118", []),  # QuTS hero form
    ],
)
def test_assessment(version, build, missing):
    assert [m["id"] for m in assess_firmware(version, build, TABLE).missing] == missing


def test_unparsable_and_table_is_well_formed():
    assert assess_firmware("banana", "", TABLE).unparsable
    assert parse_version("5.1.4") == (5, 1, 4, 0)
    table = load_table()
    assert table["as_of"] and table["advisories"]
    for advisory in table["advisories"]:
        assert advisory["url"].startswith("https://www.qnap.com/")
        assert advisory["severity"] in ("critical", "high", "medium", "low")
        assert all(parse_version(f["version"]) for f in advisory["fixed"])
