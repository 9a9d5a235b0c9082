"""``firmware.*``: the running firmware against the dated table of fixes for exploited flaws
(the table and its comparison rules: facts/firmware.py)."""

from __future__ import annotations

from typing import Any, Dict

from exposure_guard.checks.references import SECURITY_ADVISORIES
from exposure_guard.checks.registry import Outcome, Unknowable, check, failed, passed, unknown
from exposure_guard.context import CheckContext
from exposure_guard.facts.firmware import assess_firmware


@check(
    "firmware.version",
    title="Firmware is older than the fix of a known exploited flaw",
    severity="high",
    family="local",
    rationale="""
DeadBolt, Qlocker, eCh0raix and QSnatch all used flaws QNAP had already fixed. A NAS on firmware older
than those fixes can be taken over without any password.""",
    remediation="""
Control Panel > System > Firmware Update > Live Update > Check for Update, and turn on automatic
updates for security fixes.""",
    reads=("/etc/default_config/uLinux.conf [System] Version, Number, Build Number (authoritative: the release is "
           "Version.Number, e.g. 5.0.1.2376, built on Build Number, e.g. 20230322; no default)",
           "/etc/config/uLinux.conf [System] Version, Number, Build Number (fallback; a disagreement is reported)",
           "bundled advisory table exposure_guard/data/firmware-advisories.json: affected branches and the fixed "
           "release per branch of each advisory"),
    references=(SECURITY_ADVISORIES,),
)
def firmware(ctx: CheckContext) -> Outcome:
    return evaluate_firmware(ctx)


# Undecorated so that mutation testing (docs/testing.md) reaches the verdict logic: mutmut skips decorated functions.
def evaluate_firmware(ctx: CheckContext) -> Outcome:
    identity = ctx.identity
    if identity.firmware == "unknown":
        raise Unknowable("no firmware version in /etc/default_config/uLinux.conf or /etc/config/uLinux.conf")
    assessment = assess_firmware(identity.firmware, identity.build)
    evidence: Dict[str, Any] = {"version": identity.firmware, "build": identity.build,
                                "source": identity.firmware_source, "table_date": assessment.table_date}
    if identity.firmware_note:
        evidence["copies_disagree"] = identity.firmware_note
    if assessment.unparsable:
        return unknown("firmware version %r is not in a form this agent understands" % identity.firmware, evidence)
    if assessment.unknown:
        evidence["undecided"] = assessment.unknown
    if assessment.missing:
        evidence["missing_fixes"] = assessment.missing
        names = ", ".join(m["id"] for m in assessment.missing[:5])
        return failed("firmware %s misses fixes for %d known flaw(s): %s" % (identity.firmware, len(assessment.missing),
                      names), evidence, severity=assessment.worst_severity())
    if assessment.unknown:
        first = assessment.unknown[0]
        return unknown("cannot tell whether firmware %s has the fix of %s: %s" % (
            identity.firmware, ", ".join(u["id"] for u in assessment.unknown[:5]), first["reason"]), evidence)
    return passed("firmware %s build %s has the fixes in the table of %s" % (identity.firmware, identity.build or "?",
                  assessment.table_date), evidence)
