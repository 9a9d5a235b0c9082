"""The running firmware against a dated table of QNAP advisories for exploited or critical flaws.

A release is ``Version.Number`` plus a build date: QTS ``5.0.1.2376 build 20230322``, QuTS hero
``h5.0.1.2376``. Each advisory lists the branches it affects and the first fixed release per branch
(``data/firmware-advisories.json``; its sources: docs/qts-facts.md). For one box and one advisory:

- not affected: the box's product is not in the advisory, or its branch is not among the affected ones;
- fixed: its branch has a fixed release and the box is on it or later (its number and build date not
  older; a fix QNAP names by build date only is compared by build date); or the box is on a branch newer
  than every fixed one *and* built no earlier than the newest fix (an older build of a later-numbered
  branch predates the fix);
- missing: its branch is affected and older than the fix, or gets no fix at all;
- unknown: the box's release number or build date is missing where the answer depends on it, number and
  build date disagree, or the table marks the release ``disputed`` (sources disagree whether it is fixed).
Never "missing" when in doubt: a false critical on a patched NAS is the worst outcome.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from exposure_guard.contracts import SEVERITIES, Value

TABLE_FILE = Path(__file__).resolve().parent.parent / "data" / "firmware-advisories.json"
_RELEASE = re.compile(r"^\s*([hH]?)(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\.(\d{1,6}))?\s*$")
_BRANCH = re.compile(r"^\s*([hH]?)(\d{1,3}(?:\.\d{1,6}){0,3})(?:\.x)?\s*$")
QTS, HERO = "QTS", "QuTS hero"

NOT_AFFECTED, FIXED, MISSING, UNKNOWN = "not-affected", "fixed", "missing", "unknown"


class Release(Value):
    """A firmware release: product, (major, minor, patch, number) — number None when the box did not say
    — and the build date as YYYYMMDD (0: unknown)."""

    __slots__ = ("product", "parts", "number", "build")

    def __init__(self, product: str, parts: Tuple[int, int, int], number: Optional[int], build: int) -> None:
        self.product = product
        self.parts = parts
        self.number = number
        self.build = build

    @property
    def text(self) -> str:
        core = "%d.%d.%d" % self.parts + ("" if self.number is None else ".%04d" % self.number)
        return ("h" if self.product == HERO else "") + core

    def key(self) -> Tuple[int, int, int, int]:
        return self.parts + (self.number or 0,)


def parse_release(version: Optional[str], build: Optional[str] = None) -> Optional[Release]:
    """``5.0.1.2376`` / ``h5.0.1.2376`` / ``5.0.1`` (number unknown) and a build like ``20230322``."""
    match = _RELEASE.match(version or "")
    if not match:
        return None
    product = HERO if match.group(1) else QTS
    parts = (int(match.group(2)), int(match.group(3)), int(match.group(4)))
    number = int(match.group(5)) if match.group(5) is not None else None
    return Release(product, parts, number, parse_build(build))


def parse_version(text: str) -> Optional[Tuple[int, int, int, int]]:
    """``5.1.4.2596`` → (5, 1, 4, 2596); the number is 0 when absent."""
    release = parse_release(text)
    return release.key() if release else None


def parse_build(text: Optional[str]) -> int:
    """An 8-digit build date (``20230322``) as an int; 0 when absent or malformed."""
    text = (text or "").strip()
    return int(text) if re.match(r"^(19|20)\d{6}$", text) else 0


def _branch(text: Optional[str]) -> Optional[Tuple[str, Tuple[int, ...]]]:
    match = _BRANCH.match(text or "")
    if not match:
        return None
    return (HERO if match.group(1) else QTS), tuple(int(p) for p in match.group(2).split("."))


def _in_branch(release: Release, product: str, text: Optional[str]) -> bool:
    branch = _branch(text)
    if branch is None or branch[0] != release.product or product != release.product:
        return False
    return release.key()[: len(branch[1])] == branch[1]


class Verdict(Value):
    __slots__ = ("state", "reason")

    def __init__(self, state: str, reason: str) -> None:
        self.state = state
        self.reason = reason


def judge(release: Release, advisory: Dict[str, Any]) -> Verdict:
    """One advisory against one release (the rules are in the module docstring)."""
    verdict = _judge(release, advisory)
    if verdict.state == MISSING:
        for row in advisory.get("disputed", []):
            since = parse_release(row.get("since"), row.get("since_build"))
            if since is not None and _in_branch(release, row.get("product", QTS), row.get("branch")) \
                    and release.key() >= since.key() and (not since.build or release.build >= since.build):
                return Verdict(UNKNOWN, "sources disagree whether %s is fixed: %s" % (
                    release.text, row.get("note", "see the advisory table")))
    return verdict


def _judge(release: Release, advisory: Dict[str, Any]) -> Verdict:
    product = release.product
    fixes = [f for f in advisory.get("fixed", []) if f.get("product", QTS) == product]
    affected = [a for a in advisory.get("affected", []) if a.get("product", QTS) == product]
    if not fixes and not affected:
        return Verdict(NOT_AFFECTED, "the advisory does not concern %s" % product)
    if affected and not any(_in_branch(release, product, a.get("branch")) for a in affected):
        return Verdict(NOT_AFFECTED, "%s %s is not among the affected branches (%s)" % (
            product, release.text, ", ".join(a.get("branch", "?") for a in affected)))
    own = [f for f in fixes if _in_branch(release, product, f.get("branch") or _branch_of(f["version"]))]
    if own:
        fix = max(own, key=lambda f: len(str(f.get("branch") or "")))
        return _against_fix(release, fix)
    newest = max(fixes, key=lambda f: _fix_key(f)) if fixes else None
    if newest is not None and release.parts > _fix_key(newest)[:3]:
        # A branch newer than every fixed one: it has the fix if it was built after the newest fix.
        fix_build = parse_build(newest.get("build"))
        if not release.build or not fix_build:
            return Verdict(UNKNOWN, "no build date to tell whether %s %s predates the fix in %s" % (
                product, release.text, _fix_text(newest)))
        if release.build >= fix_build:
            return Verdict(FIXED, "%s %s build %d is newer than the fix %s" % (
                product, release.text, release.build, _fix_text(newest)))
        return Verdict(MISSING, "build %d predates the fix %s" % (release.build, _fix_text(newest)))
    fixed_in = ", ".join(_fix_text(f) for f in fixes) or "no release"
    return Verdict(MISSING, "branch %d.%d.%d gets no fix; fixed in %s" % (release.parts + (fixed_in,)))


def _branch_of(version: Optional[str]) -> str:
    release = parse_release(version)
    return "" if release is None else release.text.rsplit(".", 1)[0]


def _fix_key(fix: Dict[str, Any]) -> Tuple[int, int, int, int]:
    release = parse_release(fix.get("version"))
    return release.key() if release else (0, 0, 0, 0)


def _fix_text(fix: Dict[str, Any]) -> str:
    return "%s build %s" % (fix.get("version", "?"), fix.get("build", "?"))


def _against_fix(release: Release, fix: Dict[str, Any]) -> Verdict:
    wanted = parse_release(fix.get("version"))
    fix_build = parse_build(fix.get("build"))
    if wanted is None or (wanted.number is None and not fix_build):
        return Verdict(UNKNOWN, "the table's fixed release %r is malformed" % fix.get("version"))
    if release.number is None or wanted.number is None:
        # No release number on one side (QNAP names some legacy fixes "4.2.6 build 20240131"): only the
        # build date can tell, within the branch.
        if release.build and fix_build:
            state = FIXED if release.build >= fix_build else MISSING
            return Verdict(state, "build %d is %s the fix %s" % (
                release.build, "not older than" if state == FIXED else "older than", _fix_text(fix)))
        return Verdict(UNKNOWN, "the release number is unknown ([System] Number absent), so it cannot "
                       "be compared with the fix %s" % _fix_text(fix))
    if release.key() < wanted.key():
        return Verdict(MISSING, "%s is older than the fix %s" % (release.text, _fix_text(fix)))
    if release.build and fix_build and release.build < fix_build:
        # The number says fixed, the build date says older: the table or the box is off; do not guess.
        return Verdict(UNKNOWN, "%s build %d has the fix's number or a later one, but was built before "
                       "the fixed build %s" % (release.text, release.build, _fix_text(fix)))
    return Verdict(FIXED, "%s build %s includes the fix %s" % (
        release.text, release.build or "?", _fix_text(fix)))


class Assessment:
    """The firmware against the table: unparsable, or per advisory missing / unknown."""

    def __init__(self, table_date: str, unparsable: bool = False) -> None:
        self.table_date = table_date
        self.unparsable = unparsable
        self.missing: List[Dict[str, Any]] = []
        self.unknown: List[Dict[str, Any]] = []

    def worst_severity(self) -> str:
        return min((m["severity"] for m in self.missing), key=SEVERITIES.index, default="high")


def load_table(path: Path = TABLE_FILE) -> Dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


def assess_firmware(version_text: str, build_text: str, table: Optional[Dict[str, Any]] = None) -> Assessment:
    table = table or load_table()
    result = Assessment(table_date=table.get("table_date") or table.get("as_of", "?"))
    release = parse_release(version_text, build_text)
    if release is None:
        result.unparsable = True
        return result
    for advisory in table["advisories"]:
        verdict = judge(release, advisory)
        if verdict.state in (MISSING, UNKNOWN):
            entry = {"id": advisory["id"], "cve": advisory.get("cve", []), "severity": advisory["severity"],
                     "title": advisory["title"], "url": advisory["url"], "reason": verdict.reason,
                     "fixed_in": [_fix_text(f) for f in advisory.get("fixed", [])
                                  if f.get("product", QTS) == release.product]}
            if advisory.get("exploited"):
                entry["exploited"] = True
            (result.missing if verdict.state == MISSING else result.unknown).append(entry)
    return result
