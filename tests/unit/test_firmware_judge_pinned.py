"""The firmware judgement pinned on small synthetic advisories: each rule of facts/firmware.py gives exactly
this state and this reason, and an assessment lists exactly these fields. (The bundled table is tested in
test_firmware.py and test_firmware_pinned.py.)"""

from __future__ import annotations

from typing import Any, Dict

import pytest

from exposure_guard.facts.firmware import (
    FIXED,
    HERO,
    MISSING,
    NOT_AFFECTED,
    QTS,
    UNKNOWN,
    Assessment,
    assess_firmware,
    judge,
    parse_build,
    parse_release,
)


def advisory(**fields: Any) -> Dict[str, Any]:
    base: Dict[str, Any] = {"id": "QSA-T-1", "title": "t", "severity": "high", "url": "https://example.invalid/a"}
    base.update(fields)
    return base


def verdict(version: str, build: str, adv: Dict[str, Any]):
    release = parse_release(version, build)
    assert release is not None
    result = judge(release, adv)
    return result.state, result.reason


FIX_506 = {"product": QTS, "branch": "5.0.1", "version": "5.0.1.2376", "build": "20230322"}


# ---------------------------------------------------------------- which product and branch
def test_an_advisory_for_the_other_product_does_not_concern_the_box():
    adv = advisory(fixed=[dict(FIX_506, product=HERO, version="h5.0.1.2376")], affected=[{"product": HERO,
                                                                                           "branch": "h5.0.1"}])
    assert verdict("5.0.1.2000", "20230101", adv) == (NOT_AFFECTED, "the advisory does not concern QTS")
    assert verdict("h5.0.1.2000", "20230101", advisory()) == (NOT_AFFECTED, "the advisory does not concern QuTS hero")


def test_rows_without_a_product_are_qts_rows():
    adv = advisory(fixed=[{"branch": "5.0.1", "version": "5.0.1.2376", "build": "20230322"}],
                   affected=[{"branch": "5.0.1"}])
    assert verdict("5.0.1.2000", "20230101", adv)[0] == MISSING
    assert verdict("h5.0.1.2000", "20230101", adv)[0] == NOT_AFFECTED


def test_a_branch_outside_the_affected_ones_names_them_all():
    adv = advisory(fixed=[FIX_506], affected=[{"branch": "5.0.1"}, {"product": QTS}, {"branch": "4.5.4"}])
    assert verdict("5.1.0.2399", "20230101", adv) == (
        NOT_AFFECTED, "QTS 5.1.0.2399 is not among the affected branches (5.0.1, ?, 4.5.4)")


def test_an_advisory_without_fixed_or_affected_lists_does_not_concern_anyone():
    assert verdict("5.0.1.2000", "20230101", advisory())[0] == NOT_AFFECTED
    assert verdict("5.0.1.2000", "20230101", advisory(affected=[{"branch": "5.0.1"}])) == (
        MISSING, "branch 5.0.1 gets no fix; fixed in no release")


# ---------------------------------------------------------------- against the fix of its own branch
@pytest.mark.parametrize("version,build,expected", [
    ("5.0.1.2376", "20230322", (FIXED, "5.0.1.2376 build 20230322 includes the fix 5.0.1.2376 build 20230322")),
    ("5.0.1.2377", "", (FIXED, "5.0.1.2377 build ? includes the fix 5.0.1.2376 build 20230322")),
    ("5.0.1.2375", "20230322", (MISSING, "5.0.1.2375 is older than the fix 5.0.1.2376 build 20230322")),
    ("5.0.1.2376", "20230321", (UNKNOWN, "5.0.1.2376 build 20230321 has the fix's number or a later one, but was "
                                         "built before the fixed build 5.0.1.2376 build 20230322")),
    ("5.0.1", "20230322", (FIXED, "build 20230322 is not older than the fix 5.0.1.2376 build 20230322")),
    ("5.0.1", "20230321", (MISSING, "build 20230321 is older than the fix 5.0.1.2376 build 20230322")),
    ("5.0.1", "", (UNKNOWN, "the release number is unknown ([System] Number absent), so it cannot be compared "
                            "with the fix 5.0.1.2376 build 20230322")),
])
def test_against_the_fix_of_its_branch(version, build, expected):
    assert verdict(version, build, advisory(fixed=[FIX_506], affected=[{"branch": "5.0.1"}])) == expected


def test_a_fix_named_by_build_date_only_is_compared_by_build_date():
    fix = {"branch": "4.2.6", "version": "4.2.6", "build": "20200421"}
    adv = advisory(fixed=[fix])
    assert verdict("4.2.6.9999", "20200420", adv) == (MISSING, "build 20200420 is older than the fix 4.2.6 build 20200421")
    assert verdict("4.2.6.1", "20200421", adv)[0] == FIXED


@pytest.mark.parametrize("fix,shown", [({"branch": "5.0.1", "version": "five"}, "'five'"),
                                       ({"branch": "5.0.1", "version": "5.0.1"}, "'5.0.1'"),
                                       ({"branch": "5.0.1"}, "None")])
def test_a_malformed_fixed_release_is_unknown(fix, shown):
    assert verdict("5.0.1.2376", "20230322", advisory(fixed=[fix])) == (
        UNKNOWN, "the table's fixed release %s is malformed" % shown)


def test_the_most_specific_branch_row_wins():
    fixes = [{"branch": "5.0", "version": "5.0.0.1000", "build": "20220101"},
             {"branch": "5.0.1", "version": "5.0.1.2376", "build": "20230322"}]
    assert verdict("5.0.1.2000", "20230101", advisory(fixed=fixes))[0] == MISSING
    assert verdict("5.0.1.2000", "20230101", advisory(fixed=list(reversed(fixes))))[0] == MISSING


def test_a_row_without_branch_takes_its_branch_from_its_version():
    fix = {"version": "5.0.1.2376", "build": "20230322"}
    assert verdict("5.0.1.2000", "20230101", advisory(fixed=[fix]))[0] == MISSING
    assert verdict("5.0.0.2000", "20230101", advisory(fixed=[fix]))[1].startswith("branch 5.0.0 gets no fix")


# ---------------------------------------------------------------- a branch newer than every fix
NEWER = [{"branch": "4.5.4", "version": "4.5.4.1800", "build": "20210923"},
         {"branch": "5.0.0", "version": "5.0.0.1808", "build": "20211001"}]


@pytest.mark.parametrize("build,expected", [
    ("20211001", (FIXED, "QTS 5.0.1.1850 build 20211001 is newer than the fix 5.0.0.1808 build 20211001")),
    ("20210930", (MISSING, "build 20210930 predates the fix 5.0.0.1808 build 20211001")),
    ("", (UNKNOWN, "no build date to tell whether QTS 5.0.1.1850 predates the fix in 5.0.0.1808 build 20211001")),
])
def test_a_branch_newer_than_every_fix_is_judged_by_the_newest_fixs_build(build, expected):
    assert verdict("5.0.1.1850", build, advisory(fixed=NEWER)) == expected


def test_a_newest_fix_without_build_date_is_unknown_for_newer_branches():
    fixes = [{"branch": "5.0.0", "version": "5.0.0.1808"}]
    assert verdict("5.0.1.1850", "20220101", advisory(fixed=fixes)) == (
        UNKNOWN, "no build date to tell whether QTS 5.0.1.1850 predates the fix in 5.0.0.1808 build ?")


def test_an_older_branch_without_a_fix_lists_every_fix_of_its_product():
    hero = {"product": HERO, "branch": "h5.0.1", "version": "h5.0.1.2376", "build": "20230322"}
    assert verdict("4.3.0.1000", "20200101", advisory(fixed=NEWER + [hero])) == (
        MISSING, "branch 4.3.0 gets no fix; fixed in 4.5.4.1800 build 20210923, 5.0.0.1808 build 20211001")


# ---------------------------------------------------------------- disputed releases
DISPUTED = advisory(fixed=[FIX_506], disputed=[{"branch": "5.0.1", "since": "5.0.1.2300", "since_build": "20230101",
                                                 "note": "the vendor says fixed, the CVE record does not"}])


@pytest.mark.parametrize("version,build,expected", [
    ("5.0.1.2300", "20230101", (UNKNOWN, "sources disagree whether 5.0.1.2300 is fixed: the vendor says fixed, "
                                         "the CVE record does not")),
    ("5.0.1.2300", "20221231", (MISSING, "5.0.1.2300 is older than the fix 5.0.1.2376 build 20230322")),
    ("5.0.1.2299", "20230101", (MISSING, "5.0.1.2299 is older than the fix 5.0.1.2376 build 20230322")),
])
def test_a_disputed_range_turns_missing_into_unknown_only_inside_it(version, build, expected):
    assert verdict(version, build, DISPUTED) == expected


def test_a_disputed_row_without_build_or_note_and_for_the_other_product():
    row = {"branch": "5.0.1", "since": "5.0.1.2300"}
    assert verdict("5.0.1.2300", "", advisory(fixed=[FIX_506], disputed=[row])) == (
        UNKNOWN, "sources disagree whether 5.0.1.2300 is fixed: see the advisory table")
    hero_row = dict(row, product=HERO)
    assert verdict("5.0.1.2300", "", advisory(fixed=[FIX_506], disputed=[hero_row]))[0] == MISSING
    assert verdict("5.0.1.2300", "", advisory(fixed=[FIX_506], disputed=[dict(row, branch="5.0.2")]))[0] == MISSING
    assert verdict("5.0.1.2300", "", advisory(fixed=[FIX_506], disputed=[dict(row, since="x")]))[0] == MISSING


# ---------------------------------------------------------------- the assessment
def test_assessment_entries_carry_exactly_these_fields():
    hero = {"product": HERO, "branch": "h5.0.1", "version": "h5.0.1.2376", "build": "20230322"}
    table = {"table_date": "2026-01-01", "advisories": [
        advisory(id="A-1", cve=["CVE-1"], severity="critical", exploited=True, fixed=[FIX_506, hero]),
        advisory(id="A-2", fixed=[{"branch": "5.0.1", "version": "5.0.1"}]),
    ]}
    result = assess_firmware("5.0.1.2000", "20230101", table)
    assert result.table_date == "2026-01-01" and not result.unparsable
    assert result.missing == [{"id": "A-1", "cve": ["CVE-1"], "severity": "critical", "title": "t",
                               "url": "https://example.invalid/a", "exploited": True,
                               "reason": "5.0.1.2000 is older than the fix 5.0.1.2376 build 20230322",
                               "fixed_in": ["5.0.1.2376 build 20230322"]}]
    assert result.unknown == [{"id": "A-2", "cve": [], "severity": "high", "title": "t",
                               "url": "https://example.invalid/a",
                               "reason": "the table's fixed release '5.0.1' is malformed", "fixed_in": ["5.0.1 build ?"]}]
    assert result.worst_severity() == "critical"


def test_assessment_table_date_falls_back_to_as_of_then_a_question_mark():
    assert assess_firmware("5.0.1.2000", "", {"as_of": "2025-05-05", "advisories": []}).table_date == "2025-05-05"
    assert assess_firmware("5.0.1.2000", "", {"advisories": []}).table_date == "?"
    result = assess_firmware("five", "", {"table_date": "d", "advisories": [advisory(fixed=[FIX_506])]})
    assert (result.unparsable, result.missing, result.unknown) == (True, [], [])


def test_worst_severity_is_the_most_severe_missing_fix_and_high_when_none():
    result = Assessment("d")
    assert result.unparsable is False and result.worst_severity() == "high"
    result.missing = [{"severity": "low"}, {"severity": "medium"}, {"severity": "low"}]
    assert result.worst_severity() == "medium"


def test_parse_build_and_release_take_none():
    assert parse_build(None) == 0 and parse_release(None) is None
    assert parse_release("5.0.1.2376", None).build == 0
