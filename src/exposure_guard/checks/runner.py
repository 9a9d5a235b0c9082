"""Run the catalogue against one NAS and build the report. Checks may run in any order: what they share
comes from the context's cached facts, never from each other."""

from __future__ import annotations

import datetime as _dt
import time
from typing import Dict, Iterable, List, Optional, Tuple

from exposure_guard.checks import all_checks, get_check
from exposure_guard.checks.registry import Check, Outcome, skipped
from exposure_guard.context import CheckContext
from exposure_guard.errors import SettingsError, Unknowable, UsageError
from exposure_guard.report import Finding, Report
from exposure_guard.settings import Acceptance, Settings


def validate_policies(settings: Settings) -> None:
    """``[checks]`` names real checks, and ``fix`` only for checks that have a fix (errors name the line)."""
    for check_id, policy in settings.policies.items():
        where = settings.sources.get("checks." + check_id, "")
        file, _, line = where.rpartition(":")
        at = {"file": file, "line": int(line)} if line.isdigit() else {"file": where}
        found = get_check(check_id)
        if found is None:
            raise SettingsError("unknown check id %r in [checks]; run `exposure-guard checks` for the list" % check_id,
                                key=check_id, **at)  # type: ignore[arg-type]
        if policy == "fix" and not found.fixable:
            raise SettingsError("[checks] %s = fix: this check has no automatic fix; allowed: report, ignore"
                                % check_id, key=check_id, **at)  # type: ignore[arg-type]


def select_checks(only: Optional[Iterable[str]] = None) -> List[Check]:
    checks = all_checks()
    if not only:
        return checks
    wanted = [item.strip() for item in only if item.strip()]
    unknown_ids = [item for item in wanted if get_check(item) is None]
    if unknown_ids:
        raise UsageError("unknown check id(s): %s; run `exposure-guard checks` for the list" % ", ".join(unknown_ids))
    return [c for c in checks if c.id in wanted]


def evaluate(check: Check, ctx: CheckContext) -> Outcome:
    if ctx.settings.policy(check.id) == "ignore":
        return skipped("ignored by the settings ([checks] %s = ignore)" % check.id)
    if check.network and ctx.offline:
        return skipped("skipped: --offline")
    try:
        return check.evaluate(ctx)
    except Unknowable as exc:
        return Outcome("unknown", str(exc), {"reason": str(exc)})
    except Exception as exc:  # a broken check must not take the others down
        import traceback

        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Outcome("error", "the check itself failed: %s" % detail, {"error": detail})


def to_finding(check: Check, outcome: Outcome) -> Finding:
    evidence = dict(outcome.evidence)
    if check.confirm and "how_to_confirm" not in evidence and outcome.status in ("fail", "unknown", "pass"):
        evidence["how_to_confirm"] = "see `exposure-guard explain %s`" % check.id
    return Finding(
        id=check.id,
        title=check.title,
        severity=outcome.severity or check.severity,
        status=outcome.status,
        summary=outcome.summary,
        evidence=evidence,
        fixable=check.fixable,
        references=list(check.references),
        family=check.family,
        exposure=check.exposure,
    )


def apply_acceptances(findings: List[Finding], acceptances: Dict[str, Acceptance],
                      today: Optional[_dt.date] = None) -> None:
    """Mark the failing findings the owner accepts until a day not yet past (UTC); an acceptance that has
    ended leaves its finding counting again, and says so in the evidence."""
    today = today or _dt.datetime.now(_dt.timezone.utc).date()
    for finding in findings:
        acceptance = acceptances.get(finding.id)
        if acceptance is None or finding.status != "fail":
            continue
        if acceptance.active(today):
            finding.accepted = {"reason": acceptance.reason, "until": acceptance.until.isoformat(),
                                "by": "settings " + acceptance.source}
        else:
            finding.evidence["acceptance_ended"] = "accepted until %s (%s); counts again" % (
                acceptance.until.isoformat(), acceptance.reason)


def run_checks(ctx: CheckContext, only: Optional[Iterable[str]] = None) -> Tuple[Report, Dict[str, Outcome]]:
    """Evaluate every selected check; returns the report and the raw outcomes (for planning fixes)."""
    validate_policies(ctx.settings)
    started = time.monotonic()
    outcomes: Dict[str, Outcome] = {}
    findings: List[Finding] = []
    for check in select_checks(only):
        outcome = evaluate(check, ctx)
        outcomes[check.id] = outcome
        findings.append(to_finding(check, outcome))
    try:
        device = ctx.identity.to_dict()
    except Exception as exc:  # identity problems must not hide the findings
        device = {"device_id": "unknown", "hostname": "unknown", "model": "unknown", "firmware": "unknown",
                  "build": "", "lan_addresses": [], "error": str(exc)}
    apply_acceptances(findings, ctx.settings.acceptances)
    report = Report(device=device, findings=findings, mode=ctx.settings.mode)
    report.duration_ms = int((time.monotonic() - started) * 1000)
    return report, outcomes
