"""Pins the ``firmware.version`` verdicts against the bundled advisory table (issue 18): QuTS hero
releases as QNAP prints them, builds that are missing or malformed, versions that cannot be parsed, and
the boundary at each fixed release (equal = patched, one number below = vulnerable)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exposure_guard.checks import firmware as firmware_module
from exposure_guard.checks.firmware import firmware as firmware_check
from exposure_guard.checks.registry import Outcome, Unknowable
from exposure_guard.facts.firmware import HERO, QTS, assess_firmware, load_table, parse_build, parse_release
from exposure_guard.qts.config import QtsConfig
from exposure_guard.qts.identity import read_firmware
from exposure_guard.qts.root import QtsRoot

FACTORY = "etc/default_config/uLinux.conf"
RUNTIME = "etc/config/uLinux.conf"


def run(version: str, build: str, note: str = "") -> Outcome:
    identity = SimpleNamespace(firmware=version, build=build, firmware_source="/" + FACTORY, firmware_note=note)
    return firmware_check(SimpleNamespace(identity=identity))


def missing_ids(outcome: Outcome) -> list:
    return [m["id"] for m in outcome.evidence.get("missing_fixes", [])]


# --- QuTS hero, as QNAP prints its releases -------------------------------------------------------------

@pytest.mark.parametrize("version,build,expected_missing", [
    # h5.1.0 (mid-2023): misses every later h5.1 fix
    ("h5.1.0.2466", "20230721", ["QSA-23-57", "QSA-24-09", "QSA-24-23", "QSA-24-49"]),
    ("h5.2.0.2782", "20240601", ["QSA-24-49"]),
    ("h5.2.2.2951", "20241116", ["QSA-24-49"]),  # one number below the h5.2 fix
    # QSA-23-57 on h5.0.1 from 2192 on is disputed in the table: undecided, not missing
    ("h5.0.1.2247", "20221214", ["QSA-23-01", "QSA-23-31"]),
])
def test_vulnerable_hero_release_fails_and_names_its_missing_fixes(version, build, expected_missing):
    outcome = run(version, build)
    assert outcome.status == "fail"
    assert missing_ids(outcome) == expected_missing
    assert outcome.evidence["version"] == version and outcome.evidence["build"] == build


@pytest.mark.parametrize("version,build", [
    ("h5.2.2.2952", "20241116"),  # exactly the h5.2 fix of QSA-24-49
    ("h5.2.4.3079", "20250321"),
    ("H5.2.4.3079", "20250321"),  # case of the product letter does not matter
])
def test_patched_hero_release_passes(version, build):
    outcome = run(version, build)
    assert outcome.status == "pass", outcome.summary
    assert "missing_fixes" not in outcome.evidence and "undecided" not in outcome.evidence


def test_hero_release_is_judged_by_hero_rows_not_qts_rows():
    # QSA-25-56 affects QTS 5.2 only: the same numbers on hero pass, on QTS they fail
    assert run("5.2.2.2952", "20241116").status == "fail"
    assert "QSA-25-56" in missing_ids(run("5.2.2.2952", "20241116"))
    assert run("h5.2.2.2952", "20241116").status == "pass"
    # and the hero fix of QSA-24-49 is 2952 while QTS's is 2950: 5.2.2.2951 passes that one on QTS only
    assert "QSA-24-49" not in missing_ids(run("5.2.2.2951", "20241116"))
    assert "QSA-24-49" in missing_ids(run("h5.2.2.2951", "20241116"))


def test_hero_release_parses_with_product_and_number():
    release = parse_release("h5.1.0.2466", "20230721")
    assert release is not None
    assert (release.product, release.parts, release.number, release.build) == (HERO, (5, 1, 0), 2466, 20230721)
    assert release.text == "h5.1.0.2466"
    qts = parse_release("5.1.0.2466")
    assert qts is not None and qts.product == QTS and qts.build == 0


# --- boundaries at every fixed release in the table -------------------------------------------------------

def _fixes() -> list:
    rows = []
    for advisory in load_table()["advisories"]:
        for fix in advisory.get("fixed", []):
            release = parse_release(fix["version"])
            # only fixes with a number, for a branch that is the fix's own (not "4.4 → fixed in 4.5.4")
            if release is not None and release.number and release.text.startswith(fix["branch"]):
                rows.append((advisory["id"], fix["version"], fix["build"]))
    return rows


FIXES = _fixes()


def _one_below(version: str) -> str:
    head, number = version.rsplit(".", 1)
    return "%s.%d" % (head, int(number) - 1)


def test_table_has_fixes_for_both_products():
    assert len(FIXES) >= 30
    assert any(v.startswith("h") for _, v, _ in FIXES) and any(not v.startswith("h") for _, v, _ in FIXES)


@pytest.mark.parametrize("advisory,version,build", FIXES, ids=["%s-%s" % (a, v) for a, v, _ in FIXES])
def test_exactly_the_fixed_release_has_that_fix_and_one_below_misses_it(advisory, version, build):
    assert advisory not in missing_ids(run(version, build))
    assert advisory not in [u["id"] for u in run(version, build).evidence.get("undecided", [])]
    below = run(_one_below(version), build)
    assert below.status == "fail"
    disputed = [u for u in below.evidence.get("undecided", []) if u["id"] == advisory]
    if disputed:  # the table marks this stretch as disputed between sources: undecided, never "fixed"
        assert disputed[0]["reason"].startswith("sources disagree whether %s is fixed" % _one_below(version))
    else:
        assert advisory in missing_ids(below)


BRANCH_FIX = {"QTS": ("5.2.7", 3256, "20250913", "QSA-25-56"), "hero": ("h5.2.2", 2952, "20241116", "QSA-24-49")}


@settings(max_examples=200, deadline=None)
@given(product=st.sampled_from(sorted(BRANCH_FIX)), below=st.integers(min_value=0, max_value=3255))
def test_any_number_below_the_fix_in_its_branch_fails(product, below):
    branch, number, build, advisory = BRANCH_FIX[product]
    outcome = run("%s.%d" % (branch, min(below, number - 1)), build)
    assert outcome.status == "fail" and advisory in missing_ids(outcome)


@settings(max_examples=200, deadline=None)
@given(product=st.sampled_from(sorted(BRANCH_FIX)), delta=st.integers(min_value=0, max_value=999999 - 3256),
       days=st.integers(min_value=0, max_value=400))
def test_any_number_at_or_above_the_fix_passes_when_built_no_earlier(product, delta, days):
    import datetime

    branch, number, build, advisory = BRANCH_FIX[product]
    built = datetime.date(int(build[:4]), int(build[4:6]), int(build[6:])) + datetime.timedelta(days=days)
    outcome = run("%s.%d" % (branch, number + delta), built.strftime("%Y%m%d"))
    assert outcome.status == "pass", outcome.summary


def test_fixed_number_with_an_older_build_is_unknown_not_pass_or_fail():
    outcome = run("5.2.7.3256", "20250912")  # the fix's number, built a day before the fix
    assert outcome.status == "unknown"
    assert [u["id"] for u in outcome.evidence["undecided"]] == ["QSA-25-56"]
    assert "built before" in outcome.summary


# --- builds: missing, short, non-digit, over-long -------------------------------------------------------

MALFORMED_BUILDS = ["", "2025", "2025091", "2025091x", "202509130", "20250913 x", "18000101", "abcdefgh"]


@pytest.mark.parametrize("build", MALFORMED_BUILDS)
def test_malformed_build_reads_as_no_build(build):
    assert parse_build(build) == 0
    release = parse_release("5.2.7.3256", build)
    assert release is not None and release.build == 0


def test_well_formed_build_is_its_date():
    assert parse_build(" 20250913 ") == 20250913
    assert parse_build("19991231") == 19991231


@pytest.mark.parametrize("build", MALFORMED_BUILDS)
def test_malformed_build_lets_the_release_number_decide(build):
    # the number is authoritative; a bad build must neither fail a patched box nor pass a vulnerable one
    assert run("5.2.7.3256", build).status == "pass"
    below = run("5.2.7.3255", build)
    assert below.status == "fail" and missing_ids(below) == ["QSA-25-56"]


@pytest.mark.parametrize("build", MALFORMED_BUILDS)
def test_malformed_build_is_unknown_where_only_the_build_date_can_tell(build):
    # QNAP names the 4.2.6 fixes by build date only: without a readable build there is no answer
    outcome = run("4.2.6", build)
    assert outcome.status == "unknown"
    assert outcome.evidence["undecided"], outcome.evidence
    assert all("cannot be compared" in u["reason"] for u in outcome.evidence["undecided"])


def test_legacy_release_without_number_is_judged_by_build_date():
    assert run("4.2.6", "20240131").status == "pass"
    old = run("4.2.6", "20240130")
    assert old.status == "fail" and "QSA-23-57" in missing_ids(old)


# --- unparsable or absent versions ---------------------------------------------------------------------

@pytest.mark.parametrize("version", [
    "5.2",  # two components: no patch level
    "h5.1",
    "5",
    "h5.2.x",
    "5.2.7.3256.1",  # five components
    "5.2.7.1234567",  # an over-long number
    "1234.2.7.3256",  # an over-long major
    "h 5.2.2.2952",
    "QuTS hero h5.2.2.2952",
    "v5.2.7.3256",
    "garbage",
    "5.2.7.",
])
def test_present_but_unparsable_version_is_unknown_with_a_reason(version):
    assert parse_release(version, "20250913") is None
    outcome = run(version, "20250913")
    assert outcome.status == "unknown"
    assert outcome.summary == "firmware version %r is not in a form this agent understands" % version
    assert outcome.evidence["version"] == version and "missing_fixes" not in outcome.evidence


def test_no_version_at_all_is_unknowable_with_the_files_named():
    with pytest.raises(Unknowable, match=r"^no firmware version in /etc/default_config/uLinux\.conf or "
                                         r"/etc/config/uLinux\.conf$"):
        run("unknown", "")


@pytest.mark.parametrize("version,expected", [
    ("5.2.7", ((5, 2, 7), None)),  # three components: the number is not known
    ("5.2.7.3256", ((5, 2, 7), 3256)),
    (" 5.2.7.3256 ", ((5, 2, 7), 3256)),
    ("5.2.7.03256", ((5, 2, 7), 3256)),
])
def test_three_and_four_component_versions(version, expected):
    release = parse_release(version)
    assert release is not None and (release.parts, release.number) == expected


def test_three_component_version_without_number_is_judged_by_build_date_within_its_branch():
    # 5.2.7 without [System] Number against the fix 5.2.7.3256 build 20250913: only the build date can tell
    assert run("5.2.7", "20250913").status == "pass"
    older = run("5.2.7", "20250912")
    assert older.status == "fail" and missing_ids(older) == ["QSA-25-56"]
    none = run("5.2.7", "")
    assert none.status == "unknown"
    # no number and no build: every fix of the 5.2 branch is undecided
    assert [u["id"] for u in none.evidence["undecided"]] == ["QSA-24-49", "QSA-25-56"]
    assert "[System] Number absent" in none.summary


def test_copies_disagree_note_is_carried_into_evidence():
    outcome = run("5.2.7.3256", "20250913", note="the two copies disagree")
    assert outcome.evidence["copies_disagree"] == "the two copies disagree"
    assert "copies_disagree" not in run("5.2.7.3256", "20250913").evidence


def test_pass_summary_names_the_release_build_and_table_date():
    outcome = run("5.2.7.3256", "20250913")
    assert outcome.summary == "firmware 5.2.7.3256 build 20250913 has the fixes in the table of %s" % (
        load_table()["table_date"])
    assert outcome.evidence["table_date"] == load_table()["table_date"]
    assert outcome.evidence["source"] == "/" + FACTORY
    assert run("5.2.7.3256", "").summary.startswith("firmware 5.2.7.3256 build ? has")


def test_fail_summary_counts_and_names_the_flaws_and_takes_the_worst_severity():
    outcome = run("h5.1.0.2466", "20230721")
    assert outcome.summary == ("firmware h5.1.0.2466 misses fixes for 4 known flaw(s): "
                               "QSA-23-57, QSA-24-09, QSA-24-23, QSA-24-49")
    severities = {m["severity"] for m in outcome.evidence["missing_fixes"]}
    assert outcome.severity == ("critical" if "critical" in severities else "high")


SEVEN = {"table_date": "2026-01-01", "advisories": [
    {"id": "A%d" % i, "title": "t", "severity": "high", "url": "u",
     "affected": [{"product": "QTS", "branch": "5.0.1"}],
     "fixed": [{"product": "QTS", "branch": "5.0.1", "version": "5.0.1.2234", "build": "20221201"}]}
    for i in range(1, 8)]}


@pytest.fixture
def seven_advisories(monkeypatch):
    monkeypatch.setattr(firmware_module, "assess_firmware", lambda version, build: assess_firmware(version, build, SEVEN))


def test_fail_summary_names_at_most_five_flaws_but_counts_and_lists_all(seven_advisories):
    outcome = run("5.0.1.2233", "20221130")
    assert outcome.summary == "firmware 5.0.1.2233 misses fixes for 7 known flaw(s): A1, A2, A3, A4, A5"
    assert missing_ids(outcome) == ["A1", "A2", "A3", "A4", "A5", "A6", "A7"]


def test_unknown_summary_names_at_most_five_flaws_and_the_first_reason(seven_advisories):
    outcome = run("5.0.1", "")
    assert outcome.status == "unknown"
    assert outcome.summary == (
        "cannot tell whether firmware 5.0.1 has the fix of A1, A2, A3, A4, A5: the release number is unknown "
        "([System] Number absent), so it cannot be compared with the fix 5.0.1.2234 build 20221201")
    assert [u["id"] for u in outcome.evidence["undecided"]] == ["A1", "A2", "A3", "A4", "A5", "A6", "A7"]


# --- read_firmware: how the release is put together from uLinux.conf ------------------------------------

def _tree(tmp_path: Path, factory: str, runtime: str = "[System]\n") -> Tuple[QtsRoot, QtsConfig]:
    for rel, text in ((FACTORY, factory), (RUNTIME, runtime)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    root = QtsRoot(tmp_path)
    return root, QtsConfig(root)


@pytest.mark.parametrize("version,number,expected", [
    ("h5.1.0", "2466", "h5.1.0.2466"),  # hero with the h in the file
    ("5.1.0", "2466", "5.1.0.2466"),
    ("5.1.0.2466", "2466", "5.1.0.2466"),  # already four components: Number not appended again
    ("5.2", "3256", "5.2"),  # two components: left as is (then unparsable → unknown)
    ("5.1.0", "", "5.1.0"),  # no Number: the three-part version alone
])
def test_read_firmware_joins_version_and_number(tmp_path, version, number, expected):
    text = "[System]\nVersion = %s\n%sBuild Number = 20230721\n" % (
        version, "Number = %s\n" % number if number else "")
    root, config = _tree(tmp_path, text)
    found = read_firmware(root, config)
    assert (found.version, found.build, found.note) == (expected, "20230721", "")
    assert found.source.endswith(FACTORY)


def test_read_hero_box_end_to_end_is_not_unknown(tmp_path):
    root, config = _tree(tmp_path, "[System]\nVersion = h5.1.0\nNumber = 2466\nBuild Number = 20230721\n")
    found = read_firmware(root, config)
    outcome = run(found.version, found.build)
    assert outcome.status == "fail" and "QSA-24-49" in missing_ids(outcome)


def test_read_firmware_falls_back_to_runtime_copy_and_says_when_copies_disagree(tmp_path):
    root, config = _tree(tmp_path, "[System]\n", "[System]\nVersion = 5.2.7\nNumber = 3256\nBuild Number = 20250913\n")
    found = read_firmware(root, config)
    assert (found.version, found.build, found.note) == ("5.2.7.3256", "20250913", "")
    assert found.source.endswith(RUNTIME)

    other = tmp_path / "b"
    root, config = _tree(other, "[System]\nVersion = 5.2.7\nNumber = 3256\nBuild Number = 20250913\n",
                         "[System]\nVersion = 5.2.6\nNumber = 3195\nBuild Number = 20250705\n")
    found = read_firmware(root, config)
    assert (found.version, found.build) == ("5.2.7.3256", "20250913")
    assert found.note == ("/etc/config/uLinux.conf says 5.2.6.3195 build 20250705, /etc/default_config/uLinux.conf "
                          "says 5.2.7.3256 build 20250913; the factory copy is authoritative")


def test_read_firmware_without_any_version_is_empty(tmp_path):
    root, config = _tree(tmp_path, "[System]\nBuild Number = 20250913\n", "[System]\nNumber = 3256\n")
    found = read_firmware(root, config)
    assert (found.version, found.build, found.source) == ("", "", "")
