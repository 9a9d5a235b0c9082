"""One check cycle and one fix cycle, shared by the `check`/`fix` commands, the daemon and the demo:
run the catalogue, plan the safe fixes the policy allows, apply them (journaled), check again, record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional

from exposure_guard.atomicio import atomic_write
from exposure_guard.checks import get_check
from exposure_guard.checks.registry import Outcome
from exposure_guard.checks.runner import run_checks
from exposure_guard.context import CheckContext
from exposure_guard.report import Report

if TYPE_CHECKING:
    from exposure_guard.fixes.apply import FixResult, PlannedAction

LAST_REPORT = "last-report.json"


class CheckRun:
    """What a check cycle found: the report, and each check's raw outcome (to plan fixes from)."""

    def __init__(self, report: Report, outcomes: Dict[str, Outcome]) -> None:
        self.report = report
        self.outcomes = outcomes


class FixRun:
    """What a fix cycle did: the result of applying, and the report of the check run after it."""

    def __init__(self, report: Report, result: FixResult) -> None:
        self.report = report
        self.result = result


def check_once(ctx: CheckContext, only: Optional[Iterable[str]] = None) -> CheckRun:
    report, outcomes = run_checks(ctx, only)
    return CheckRun(report, outcomes)


def plan_fixes(ctx: CheckContext, outcomes: Dict[str, Outcome], *, daemon: bool) -> List[PlannedAction]:
    """Planned actions for failing fixable checks. The `fix` command fixes every one the owner has not set to
    ``report`` or ``ignore`` in [checks]; the daemon only those whose policy is ``fix``."""
    # The fix machinery (journal, UPnP client) loads only where fixes are planned, not for `check`.
    from exposure_guard.fixes.apply import plan

    planned: List[PlannedAction] = []
    for check_id, outcome in outcomes.items():
        check = get_check(check_id)
        if check is None or check.plan_fix is None or outcome.status != "fail":
            continue
        if daemon and ctx.settings.policy(check_id) != "fix":
            continue
        if not daemon and ctx.settings.policies.get(check_id) in ("report", "ignore"):
            continue
        planned.extend(plan(ctx, check.plan_fix(ctx, outcome)))
    return planned


def fix_once(ctx: CheckContext, planned: List[PlannedAction], only: Optional[Iterable[str]] = None) -> FixRun:
    """Apply the planned actions (journaled in the context's state dir), then check again: a finding is
    ``fixed`` when one of its changes was applied and it now passes."""
    from exposure_guard.fixes.apply import apply_actions
    from exposure_guard.fixes.journal import ChangeJournal

    result = apply_actions(ctx, ChangeJournal(_state_dir(ctx), ctx.root.root), planned)
    report = check_once(ctx, only).report
    fixed = {r.check_id for r in result.applied}
    for finding in report.findings:
        finding.fixed = finding.id in fixed and finding.status == "pass"
    report.changes = [r.to_report() for r in result.applied]
    return FixRun(report, result)


def write_last_report(state_dir: Path, report: Report) -> Optional[str]:
    """Keep the newest report in the state dir; returns why it could not be written (the findings matter
    more than this copy: a read-only state dir must not stop a run)."""
    try:
        atomic_write(Path(state_dir) / LAST_REPORT, json.dumps(report.to_dict(), indent=2).encode("utf-8"), mode=0o600)
    except OSError as exc:
        return "cannot write %s: %s" % (Path(state_dir) / LAST_REPORT, exc.strerror or exc)
    return None


def _state_dir(ctx: CheckContext) -> Path:
    if ctx.state_dir is None:
        raise ValueError("a fix needs a state dir for its journal")
    return ctx.state_dir
