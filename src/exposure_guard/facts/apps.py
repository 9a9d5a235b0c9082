"""Installed App Center apps against a dated table of their advisories (``data/app-advisories.json``:
flaws rated critical or high, or exploited in the wild, with the first fixed version per version line).

Apps ship one version line per QTS branch (Photo Station 5.2 / 5.4 / 5.7 / 6.0, HBS 3 3.0 / 16.0), so an
installed version is compared with the fix of its own line. A line is the first ``series_parts`` numbers
(2 unless the entry says otherwise; Surveillance Station uses 4, its fourth number tells 32- from 64-bit
builds). For one installed version and one advisory:

- not affected: the version's line is listed as unaffected;
- when the advisory names the only affected lines (``affected``): a version of a later line is fixed, one
  of an older line is unknown (the advisory does not say; such lines are usually out of support);
- fixed: the fix of the lowest listed line not older than the version's own line is not newer than the
  version; or the version's line is newer than every listed fix (a later line, released after it);
- missing: that fix is newer than the version;
- unknown: the version has no numbers to compare.
Versions in a line between two listed ones (Photo Station 5.5 when 5.4 and 5.7 are listed) are compared
with the next listed line's fix, as the advisories' "before version X" ranges do.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from exposure_guard.contracts import SEVERITIES, Value, one_step_lower
from exposure_guard.facts.packages import Package

TABLE_FILE = Path(__file__).resolve().parent.parent / "data" / "app-advisories.json"
_VERSION = re.compile(r"^\s*v?(\d{1,9}(?:\.\d{1,9}){0,5})\s*(?:[-_ (].*)?$")

NOT_AFFECTED, FIXED, MISSING, UNKNOWN = "not-affected", "fixed", "missing", "unknown"

# An exploited flaw in an installed, enabled app is critical whatever its CVSS; a disabled app is one step
# less (it runs nothing until someone starts it again).


def parse_app_version(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    """``6.0.22`` → (6, 0, 22); ``16.0.0415`` → (16, 0, 415); None for anything without leading numbers."""
    match = _VERSION.match(text or "")
    if not match:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def _line(version: Tuple[int, ...], parts: int) -> Tuple[int, ...]:
    return (version + (0,) * parts)[:parts]


def judge_app(version: Optional[Tuple[int, ...]], advisory: Dict[str, Any]) -> Tuple[str, str]:
    """(verdict, the fix compared or why) for one installed version against one advisory."""
    if version is None:
        return UNKNOWN, "the installed version has no numbers to compare"
    parts = int(advisory.get("series_parts") or 2)
    for prefix in advisory.get("unaffected", []):
        wanted = parse_app_version(prefix)
        if wanted and version[:len(wanted)] == wanted:
            return NOT_AFFECTED, "line %s is not affected" % prefix
    affected = [p for p in (parse_app_version(text) for text in advisory.get("affected", [])) if p]
    if affected and not any(version[:len(p)] == p for p in affected):
        if all(version[:len(p)] > p for p in affected):
            return FIXED, "a later line than the affected ones (%s)" % ", ".join(advisory["affected"])
        return UNKNOWN, "the advisory names only line(s) %s as affected" % ", ".join(advisory["affected"])
    fixes = sorted((parse_app_version(text), text) for text in advisory["fixed"])
    own = _line(version, parts)
    for fix, text in fixes:
        if fix is not None and _line(fix, parts) >= own:
            return (FIXED if version >= fix else MISSING), text
    return FIXED, "a later line than every fix (%s)" % ", ".join(t for _f, t in fixes)


class AppFinding(Value):
    __slots__ = ("section", "name", "version", "enabled", "advisory", "verdict", "compared")

    def __init__(self, section: str, name: str, version: str, enabled: Optional[bool], advisory: Dict[str, Any],
                 verdict: str, compared: str) -> None:
        self.section = section
        self.name = name
        self.version = version
        self.enabled = enabled
        self.advisory = advisory
        self.verdict = verdict
        self.compared = compared

    @property
    def severity(self) -> str:
        base = "critical" if self.advisory.get("exploited") else self.advisory["severity"]
        return base if self.enabled is not False else one_step_lower(base)

    def to_dict(self) -> Dict[str, Any]:
        advisory = self.advisory
        out: Dict[str, Any] = {"app": self.name, "section": self.section, "version": self.version,
                               "enabled": self.enabled, "advisory": advisory["id"], "cve": advisory["cve"],
                               "severity": self.severity, "published": advisory["published"],
                               "fixed_in": advisory["fixed"], "compared_with": self.compared,
                               "note": advisory.get("note", ""), "sources": advisory.get("sources", [])}
        if advisory.get("exploited"):
            out["exploited"] = advisory["exploited"]
        return out


class AppAssessment:
    def __init__(self, table_date: str) -> None:
        self.table_date = table_date
        self.checked: List[Dict[str, Any]] = []  # every installed app the table knows, with its verdicts
        self.missing: List[AppFinding] = []
        self.unknown: List[AppFinding] = []

    def worst_severity(self) -> str:
        return min((m.severity for m in self.missing), key=SEVERITIES.index, default="high")


def load_table(path: Path = TABLE_FILE) -> Dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


def assess_apps(packages: List[Package], table: Optional[Dict[str, Any]] = None) -> AppAssessment:
    table = table or load_table()
    result = AppAssessment(table.get("table_date", "?"))
    apps = {section.lower(): (section, info) for section, info in table["apps"].items()}
    for package in packages:
        known = apps.get(package.section.lower())
        if known is None:
            continue
        section, info = known
        version_text = (package.get("Version") or "").strip()
        version = parse_app_version(version_text)
        verdicts = []
        for advisory in table["advisories"]:
            if advisory["app"] != section:
                continue
            verdict, compared = judge_app(version, advisory)
            verdicts.append({"advisory": advisory["id"], "verdict": verdict, "compared_with": compared})
            finding = AppFinding(package.section, info["name"], version_text, package.enabled, advisory, verdict,
                                 compared)
            if verdict == MISSING:
                result.missing.append(finding)
            elif verdict == UNKNOWN:
                result.unknown.append(finding)
        result.checked.append({"app": info["name"], "section": package.section, "version": version_text or None,
                               "enabled": package.enabled, "advisories": verdicts})
    return result
