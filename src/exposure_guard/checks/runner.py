"""Run the catalogue against one NAS and build the report."""

from __future__ import annotations

import time
import traceback
from typing import Dict, Iterable, List, Optional, Tuple

from exposure_guard.checks.context import CheckContext
from exposure_guard.checks.evidence import Unknowable
from exposure_guard.checks.registry import Check, Outcome, all_checks, get_check, skipped
from exposure_guard.errors import UsageError
from exposure_guard.report import Finding, Report


def select_checks(only: Optional[Iterable[str]] = None) -> List[Check]:
    checks = all_checks()
    if not only:
        return checks
    wanted = [item.strip() for item in only if item.strip()]
    unknown_ids = [item for item in wanted if get_check(item) is None]
    if unknown_ids:
        raise UsageError("unknown check id(s): %s; run `exposure-guard checks` for the list" % ", ".join(unknown_ids))
    # Keep catalogue order: later families read what earlier ones left in ctx.shared.
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


def run_checks(ctx: CheckContext, only: Optional[Iterable[str]] = None) -> Tuple[Report, Dict[str, Outcome]]:
    """Evaluate every selected check; returns the report and the raw outcomes (for planning fixes)."""
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
    report = Report(device=device, findings=findings, mode=ctx.settings.mode)
    report.duration_ms = int((time.monotonic() - started) * 1000)
    return report, outcomes
