"""Firmware version against a small dated table of QNAP advisories for exploited QTS flaws."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from exposure_guard.contracts import SEVERITIES

TABLE_FILE = Path(__file__).resolve().parent.parent / "data" / "firmware-advisories.json"
_VERSION = re.compile(r"^\s*(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?")

Version = Tuple[int, int, int, int]


def parse_version(text: str) -> Optional[Version]:
    """``5.1.4.2596`` → (5, 1, 4, 2596); QuTS hero ``h5.1.4.2596`` works too."""
    match = _VERSION.match(text.lstrip("hH"))
    if not match:
        return None
    return tuple(int(g or 0) for g in match.groups())  # type: ignore[return-value]


def parse_build(text: str) -> int:
    digits = re.sub(r"\D", "", text or "")[:8]
    return int(digits) if len(digits) == 8 else 0


class Assessment:
    """The firmware against the table: unparsable, or the flaws whose fix it misses."""

    def __init__(self, table_date: str, unparsable: bool = False,
                 missing: Optional[List[Dict[str, Any]]] = None) -> None:
        self.table_date = table_date
        self.unparsable = unparsable
        self.missing: List[Dict[str, Any]] = missing if missing is not None else []

    def worst_severity(self) -> str:
        return min((m["severity"] for m in self.missing), key=SEVERITIES.index, default="high")


def load_table(path: Path = TABLE_FILE) -> Dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


def _fixed(fixed: List[Dict[str, str]], version: Version, build: int) -> bool:
    """Fixed when the device's branch (major.minor) has a fixed release at or below it, or when the device
    is newer than every branch listed. A branch older than all listed fixes is not fixed."""
    branch = version[:2]
    same_branch = [f for f in fixed if parse_version(f["version"])[:2] == branch]  # type: ignore[index]
    if same_branch:
        for entry in same_branch:
            wanted = parse_version(entry["version"])
            if version > wanted or (version == wanted and (not build or build >= parse_build(entry.get("build", "")))):  # type: ignore[operator]
                return True
        return False
    newest = max(parse_version(f["version"]) for f in fixed)  # type: ignore[type-var]
    return version > newest  # type: ignore[operator]


def assess_firmware(version_text: str, build_text: str, table: Optional[Dict[str, Any]] = None) -> Assessment:
    table = table or load_table()
    result = Assessment(table_date=table["as_of"])
    version = parse_version(version_text)
    if version is None:
        result.unparsable = True
        return result
    build = parse_build(build_text)
    for advisory in table["advisories"]:
        if not _fixed(advisory["fixed"], version, build):
            result.missing.append({"id": advisory["id"], "cve": advisory.get("cve", []), "severity": advisory["severity"],
                                   "title": advisory["title"], "url": advisory["url"],
                                   "fixed_in": ["%s build %s" % (f["version"], f.get("build", "?"))
                                                for f in advisory["fixed"]]})
    return result
