"""Firmware releases (Version.Number + build date) against the dated advisory table: affected branches,
fixed release per branch, QuTS hero, and never a false "missing" on a box that has the fix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exposure_guard.facts.firmware import (
    FIXED,
    MISSING,
    NOT_AFFECTED,
    UNKNOWN,
    assess_firmware,
    judge,
    load_table,
    parse_build,
    parse_release,
    parse_version,
)

# Shaped like the real entries (QSA-23-01 affects 5.0.1 only; QSA-23-57 has per-branch fixes; DeadBolt
# named two force-update builds), with numbers chosen for the edge cases.
TABLE = {
    "table_date": "2026-01-01",
    "advisories": [
        {"id": "ONLY-501", "title": "t", "severity": "critical", "url": "u",
         "affected": [{"product": "QTS", "branch": "5.0.1"}, {"product": "QuTS hero", "branch": "h5.0.1"}],
         "fixed": [{"product": "QTS", "branch": "5.0.1", "version": "5.0.1.2234", "build": "20221201"},
                   {"product": "QuTS hero", "branch": "h5.0.1", "version": "h5.0.1.2248", "build": "20221215"}]},
        {"id": "PER-BRANCH", "title": "t", "severity": "high", "url": "u",
         "affected": [{"product": "QTS", "branch": "5.1"}, {"product": "QTS", "branch": "4.5"},
                      {"product": "QTS", "branch": "4.3"}, {"product": "QTS", "branch": "4.2"}],
         "fixed": [{"product": "QTS", "branch": "5.1", "version": "5.1.5.2645", "build": "20240116"},
                   {"product": "QTS", "branch": "4.5", "version": "4.5.4.2627", "build": "20231225"},
                   {"product": "QTS", "branch": "4.3.6", "version": "4.3.6.2665", "build": "20240131"},
                   {"product": "QTS", "branch": "4.3.4", "version": "4.3.4.2675", "build": "20240131"}]},
        {"id": "ALL-UP-TO", "title": "t", "severity": "critical", "url": "u", "exploited": True,
         "fixed": [{"product": "QTS", "branch": "4.5.4", "version": "4.5.4.1892", "build": "20211223"},
                   {"product": "QTS", "branch": "5.0.0", "version": "5.0.0.1891", "build": "20211221"}]},
    ],
}
ADVISORY = {a["id"]: a for a in TABLE["advisories"]}


def state(version: str, build: str, advisory: str) -> str:
    release = parse_release(version, build)
    assert release is not None
    return judge(release, ADVISORY[advisory]).state


@pytest.mark.parametrize("version,build,advisory,expected", [
    # affected ranges: a flaw of 5.0.1 only is not reported on 4.x, 5.0.0 or 5.1
    ("4.5.4.2627", "20231225", "ONLY-501", NOT_AFFECTED),
    ("5.0.0.1891", "20211221", "ONLY-501", NOT_AFFECTED),
    ("5.1.0.2348", "20230325", "ONLY-501", NOT_AFFECTED),
    ("5.0.1.2131", "20220912", "ONLY-501", MISSING),
    ("5.0.1.2234", "20221201", "ONLY-501", FIXED),  # exactly the fixed release
    ("5.0.1.2376", "20230322", "ONLY-501", FIXED),  # the patched 5.0.1 box
    ("5.0.1.2234", "20221130", "ONLY-501", UNKNOWN),  # the fix's number, an older build: do not guess
    ("h5.0.1.2248", "20221215", "ONLY-501", FIXED),
    ("h5.0.1.2194", "20221010", "ONLY-501", MISSING),
    ("h5.1.0.2424", "20230519", "ONLY-501", NOT_AFFECTED),
    # per-branch fixes; a branch of the affected line without its own fix gets none
    ("4.3.6.2665", "20240131", "PER-BRANCH", FIXED),
    ("4.3.5.0760", "20181114", "PER-BRANCH", MISSING),  # 4.3.5 > 4.3.4 but has no fix and is old
    ("4.3.4.2675", "20240131", "PER-BRANCH", FIXED),
    ("4.3.4.1463", "20201006", "PER-BRANCH", MISSING),
    ("4.5.4.2627", "20231225", "PER-BRANCH", FIXED),
    ("4.5.1.1540", "20201223", "PER-BRANCH", MISSING),
    ("5.1.5.2645", "20240116", "PER-BRANCH", FIXED),
    ("5.1.7.2770", "20240520", "PER-BRANCH", FIXED),
    ("5.2.0.2737", "20240417", "PER-BRANCH", NOT_AFFECTED),  # 5.2 is not an affected branch
    ("4.2.6.2400", "20240131", "PER-BRANCH", MISSING),  # a legacy build date proves nothing without a fix
    # no affected list: every older branch is affected; newer branches need a newer build
    ("4.3.6.1446", "20200929", "ALL-UP-TO", MISSING),
    ("4.5.4.1892", "20211223", "ALL-UP-TO", FIXED),
    ("5.0.0.1891", "20211220", "ALL-UP-TO", UNKNOWN),  # the fixed number, an older build
    ("5.0.1.2234", "20221201", "ALL-UP-TO", FIXED),  # newer branch, built after the newest fix
    ("5.0.1.1800", "20211101", "ALL-UP-TO", MISSING),  # newer branch, built before the fix
    ("h5.0.0.1900", "20220101", "ALL-UP-TO", NOT_AFFECTED),  # QuTS hero is not in this advisory
])
def test_verdicts(version, build, advisory, expected):
    assert state(version, build, advisory) == expected


def test_unknown_where_only_the_missing_number_or_build_could_tell():
    assert state("5.0.1", "", "ONLY-501") == UNKNOWN  # no [System] Number, no build date
    assert state("5.0.1", "20230322", "ONLY-501") == FIXED  # the build date alone tells
    assert state("5.0.1", "20220912", "ONLY-501") == MISSING
    assert state("5.0.1.2234", "", "ONLY-501") == FIXED  # exactly the fix, build unknown
    assert state("5.2.0.2737", "", "ALL-UP-TO") == UNKNOWN  # newer branch, no build date
    assert state("5.0.1.2300", "20221101", "ONLY-501") == UNKNOWN  # numbered after the fix, built before it
    legacy = {"id": "L", "affected": [{"product": "QTS", "branch": "4.2"}],
              "fixed": [{"product": "QTS", "branch": "4.2", "version": "4.2.6", "build": "20240131"}]}
    assert judge(parse_release("4.2.6.2400", "20240131"), legacy).state == FIXED  # a fix named by build only
    assert judge(parse_release("4.2.6.2300", "20230101"), legacy).state == MISSING
    assert judge(parse_release("4.2.6.2400", ""), legacy).state == UNKNOWN


def test_assessment_lists_missing_and_undecided_with_reasons():
    result = assess_firmware("4.3.5.0760", "20181114", TABLE)
    assert [m["id"] for m in result.missing] == ["PER-BRANCH", "ALL-UP-TO"]
    assert "gets no fix" in result.missing[0]["reason"] and result.missing[1]["exploited"] is True
    assert result.worst_severity() == "critical"
    assert [u["id"] for u in assess_firmware("5.2.0.2737", "", TABLE).unknown] == ["ALL-UP-TO"]
    assert assess_firmware("banana", "", TABLE).unparsable


def test_parsing():
    assert parse_version("5.1.4.2596") == (5, 1, 4, 2596) and parse_version("h5.1.4.2596") == (5, 1, 4, 2596)
    assert parse_version("5.1.4") == (5, 1, 4, 0) and parse_version("5.1") is None
    assert parse_release("5.1.4", "").number is None
    assert parse_release("h5.1.4.2596", "").product == "QuTS hero"
    for bad in ("", "2024011", "202401160", "abcdefgh", "21240116"):
        assert parse_build(bad) == 0, bad
    assert parse_build(" 20240116 ") == 20240116


releases = st.tuples(st.integers(3, 6), st.integers(0, 5), st.integers(0, 9), st.integers(0, 3000),
                     st.integers(20150101, 20291231))


@given(fix=releases, later_number=st.integers(0, 500), later_days=st.integers(0, 3000), hero=st.booleans(),
       branch_depth=st.integers(1, 3))
def test_a_box_on_or_after_its_branch_fix_is_never_missing_it(fix, later_number, later_days, hero, branch_depth):
    """Property: on exactly a fixed release, or any later release of that branch with a build not older,
    the advisory is never reported missing."""
    major, minor, patch, number, build = fix
    prefix = "h" if hero else ""
    product = "QuTS hero" if hero else "QTS"
    branch = prefix + ".".join(str(p) for p in (major, minor, patch)[:branch_depth])
    advisory = {"id": "X", "title": "t", "severity": "high", "url": "u",
                "affected": [{"product": product, "branch": branch}],
                "fixed": [{"product": product, "branch": branch, "version": "%s%d.%d.%d.%04d" % (
                    prefix, major, minor, patch, number), "build": str(build)}]}
    box = parse_release("%s%d.%d.%d.%04d" % (prefix, major, minor, patch, number + later_number),
                        str(min(build + later_days, 29991231)) if parse_build(str(build + later_days)) else str(build))
    assert box is not None
    assert judge(box, advisory).state == FIXED


def test_bundled_table_is_well_formed():
    table = load_table()
    assert table.get("table_date") or table.get("as_of")
    assert table["advisories"]
    for advisory in table["advisories"]:
        assert advisory["url"].startswith("https://www.qnap.com/"), advisory["id"]
        assert advisory["severity"] in ("critical", "high", "medium", "low"), advisory["id"]
        assert advisory["confidence"] in ("confirmed", "likely"), advisory["id"]
        for fix in advisory["fixed"]:
            release = parse_release(fix["version"], fix.get("build", ""))
            assert release is not None, (advisory["id"], fix)
            assert parse_build(fix.get("build", "")), (advisory["id"], fix)  # the build date is always known
            assert fix["product"] in ("QTS", "QuTS hero") and fix["branch"], (advisory["id"], fix)


def test_a_disputed_release_is_undecided_never_missing():
    advisory = dict(ADVISORY["ONLY-501"], disputed=[
        {"product": "QTS", "branch": "5.0.1", "since": "5.0.1.2100", "since_build": "20220801", "note": "X says fixed"}])
    assert judge(parse_release("5.0.1.2131", "20220912"), advisory).state == UNKNOWN  # in the disputed range
    assert "X says fixed" in judge(parse_release("5.0.1.2131", "20220912"), advisory).reason
    assert judge(parse_release("5.0.1.2000", "20220601"), advisory).state == MISSING  # before it: still missing
    assert judge(parse_release("5.0.1.2234", "20221201"), advisory).state == FIXED  # a fix stays a fix
