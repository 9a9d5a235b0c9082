"""``apps.*``: installed App Center apps against the dated table of their advisories (the table and its
comparison rules: facts/apps.py)."""

from __future__ import annotations

from typing import Any, Dict

from exposure_guard.checks.references import SECURITY_ADVISORIES
from exposure_guard.checks.registry import Outcome, check, failed, passed, unknown
from exposure_guard.context import CheckContext
from exposure_guard.facts.apps import assess_apps
from exposure_guard.facts.packages import read_packages


@check(
    "apps.exposed",
    title="An installed app misses the fix of a critical or exploited flaw",
    severity="high",
    family="local",
    rationale="""
The ransomware waves after the January 2022 advisory came through apps, not the admin page: DeadBolt's
September 2022 wave through Photo Station (QSA-22-24), Qlocker through HBS 3 (QSA-21-13) and Multimedia
Console / Media Streaming (QSA-21-11), eCh0raix through Photo Station (NAS-201911-25). An app that misses
such a fix can be taken over from wherever its web page is reachable, without a password.""",
    remediation="""
App Center > My Apps > Update all (or the app's Update button). An app you do not use: App Center > the
app > Remove. Turn on automatic app updates: App Center > Settings > Update.""",
    reads=("/etc/config/qpkg.conf: each installed app's section, Version and Enable",
           "bundled advisory table exposure_guard/data/app-advisories.json: fixed version per version line of each "
           "app advisory (critical, high or exploited), with sources"),
    references=(SECURITY_ADVISORIES,),
)
def apps_exposed(ctx: CheckContext) -> Outcome:
    return evaluate_apps(ctx)


# Undecorated so that mutation testing reaches the verdict logic (mutmut skips decorated functions).
def evaluate_apps(ctx: CheckContext) -> Outcome:
    result = assess_apps(read_packages(ctx.config))
    evidence: Dict[str, Any] = {"table_date": result.table_date, "apps_checked": result.checked}
    if result.missing:
        evidence["missing_fixes"] = [m.to_dict() for m in result.missing]
        if result.unknown:
            evidence["undecided"] = [u.to_dict() for u in result.unknown]
        shown = ["%s %s (%s%s)" % (m.name, m.version, m.advisory["id"],
                                   ", exploited" if m.advisory.get("exploited") else "") for m in result.missing[:4]]
        disabled = all(m.enabled is False for m in result.missing)
        return failed("%d app fix(es) missing: %s%s%s" % (len(result.missing), ", ".join(shown),
                      " …" if len(result.missing) > 4 else "", " (the apps are disabled)" if disabled else ""),
                      evidence, severity=result.worst_severity())
    if result.unknown:
        evidence["undecided"] = [u.to_dict() for u in result.unknown]
        first = result.unknown[0]
        return unknown("cannot tell whether %s %s has the fix of %s: %s" % (
            first.name, first.version or "(no version)", first.advisory["id"], first.compared), evidence)
    if not result.checked:
        return passed("none of the %d apps in the advisory table is installed" % _table_apps(), evidence)
    return passed("%d installed app(s) have the fixes in the table of %s: %s" % (
        len(result.checked), result.table_date, ", ".join("%s %s" % (c["app"], c["version"] or "?")
                                                          for c in result.checked)), evidence)


def _table_apps() -> int:
    from exposure_guard.facts.apps import load_table

    return len(load_table()["apps"])
