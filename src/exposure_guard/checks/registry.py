"""The check catalogue's building blocks: a check is one declarative unit (id, title, severity, rationale,
what it reads, an evaluate function and an optional safe fix), registered with ``@check`` and ``@fixes``.

A leaf module: it imports nothing of the agent at run time but ``errors`` and ``contracts``, so any layer may use it. The family
modules (one per id prefix) register their checks when ``exposure_guard.checks`` loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from exposure_guard.contracts import Value, one_step_lower
from exposure_guard.errors import Unknowable

if TYPE_CHECKING:
    from exposure_guard.context import CheckContext
    from exposure_guard.facts.keys import Key
    from exposure_guard.fixes.actions import Action

Evidence = Dict[str, Any]


class Outcome:
    """What one evaluation found. ``severity`` overrides the check's default (e.g. critical on 8080);
    ``fix_data`` goes to the check's fix planner and is never serialised."""

    __slots__ = ("status", "summary", "evidence", "severity", "fix_data")

    def __init__(self, status: str, summary: str, evidence: Optional[Evidence] = None,
                 severity: Optional[str] = None, fix_data: Any = None) -> None:
        self.status = status
        self.summary = summary
        self.evidence: Evidence = evidence if evidence is not None else {}
        self.severity = severity
        self.fix_data = fix_data

    def __repr__(self) -> str:
        return "Outcome(%r, %r, severity=%r)" % (self.status, self.summary, self.severity)


# Evidence is passed as one dict, never as keyword arguments: no evidence key can collide with a parameter
# (a key named "severity" must never change the result).
def passed(summary: str, evidence: Optional[Evidence] = None) -> Outcome:
    return Outcome("pass", summary, dict(evidence or {}))


def failed(summary: str, evidence: Optional[Evidence] = None, *, severity: Optional[str] = None,
           fix_data: Any = None) -> Outcome:
    return Outcome("fail", summary, dict(evidence or {}), severity, fix_data)


def tempered(ctx: CheckContext, outcome: Outcome, default: str) -> Outcome:
    """A failing exposure finding one step lower, saying why, when QuFirewall's live rules admit only LAN
    sources (``CheckContext.firewall_guard``): the router forwards, but the NAS drops what comes in."""
    guard = ctx.firewall_guard() if outcome.status == "fail" else ""
    if not guard:
        return outcome
    outcome.severity = one_step_lower(outcome.severity or default)
    outcome.summary += " (%s)" % guard
    outcome.evidence["qufirewall"] = guard
    return outcome


def unknown(summary: str, evidence: Optional[Evidence] = None) -> Outcome:
    return Outcome("unknown", summary, dict(evidence or {}))


def skipped(summary: str, evidence: Optional[Evidence] = None) -> Outcome:
    return Outcome("skipped", summary, dict(evidence or {}))


Evaluate = Callable[["CheckContext"], Outcome]
PlanFix = Callable[["CheckContext", Outcome], List["Action"]]
# What a check reads: a declared config key (rendered with its file, values and firmware default) or a
# sentence for anything else (a listener, a process, the router).
Read = Union["Key", str]


class Check(Value):
    """One catalogue entry: what it is, why it matters, what it reads, how it is evaluated and fixed."""

    __slots__ = ("id", "title", "severity", "family", "rationale", "remediation", "reads", "references", "evaluate",
                 "plan_fix", "confirm", "exposure", "network")

    def __init__(self, id: str, title: str, severity: str, family: str, rationale: str, remediation: str,
                 reads: Tuple[Read, ...], references: Tuple[str, ...], evaluate: Evaluate,
                 plan_fix: Optional[PlanFix] = None, confirm: str = "", exposure: bool = False,
                 network: bool = False) -> None:
        self.id = id
        self.title = title
        self.severity = severity
        self.family = family  # local | router | reachability: needs the NAS alone, the LAN, the internet
        self.rationale = rationale
        self.remediation = remediation  # how to fix it by hand
        self.reads = reads  # the evidence it reads, for `explain`
        self.references = references
        self.evaluate = evaluate
        self.plan_fix = plan_fix
        self.confirm = confirm  # how a user can confirm an unverified key on their NAS
        self.exposure = exposure  # failing means the NAS is exposed to the internet
        self.network = network  # needs the LAN/internet: skipped with --offline

    def replace(self, **changes: Any) -> Check:
        """A copy with some fields changed."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Check(**fields)

    @property
    def fixable(self) -> bool:
        return self.plan_fix is not None

    def read_lines(self) -> List[str]:
        return [item if isinstance(item, str) else item.describe() for item in self.reads]

    def catalogue_entry(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "family": self.family,
            "fixable": self.fixable,
            "network": self.network,
            "rationale": self.rationale,
            "remediation": self.remediation,
            "reads": self.read_lines(),
            "references": list(self.references),
            "confirm": self.confirm,
            "makes_exposed": self.exposure,  # failing as critical, it makes the NAS EXPOSED
        }


class Registry:
    """Checks by id, in registration order."""

    def __init__(self) -> None:
        self._checks: Dict[str, Check] = {}

    def add(self, item: Check) -> None:
        if item.id in self._checks:
            raise ValueError("check %s is registered twice" % item.id)
        self._checks[item.id] = item

    def attach_fix(self, check_id: str, plan: PlanFix) -> None:
        self._checks[check_id] = self._checks[check_id].replace(plan_fix=plan)

    def replace(self, item: Check) -> None:
        """Swap a registered check (tests use it to inject a failing evaluate)."""
        self._checks[item.id] = item

    def get(self, check_id: str) -> Optional[Check]:
        return self._checks.get(check_id)

    def all(self) -> List[Check]:
        return list(self._checks.values())


REGISTRY = Registry()


def check(
    id: str,
    *,
    title: str,
    severity: str,
    family: str,
    rationale: str,
    remediation: str,
    reads: Sequence[Read],
    references: Tuple[str, ...] = (),
    confirm: str = "",
    exposure: bool = False,
    network: bool = False,
) -> Callable[[Evaluate], Evaluate]:
    """Decorator registering ``evaluate`` as a check; attach a fix with ``fixes(id)``."""

    def register(evaluate: Evaluate) -> Evaluate:
        REGISTRY.add(Check(id, title, severity, family, rationale.strip(), remediation.strip(), tuple(reads),
                           references, evaluate, None, confirm.strip(), exposure, network))
        return evaluate

    return register


def fixes(check_id: str) -> Callable[[PlanFix], PlanFix]:
    def attach(plan: PlanFix) -> PlanFix:
        REGISTRY.attach_fix(check_id, plan)
        return plan

    return attach


__all__ = ["REGISTRY", "Check", "Outcome", "Registry", "Unknowable", "check", "failed", "fixes", "passed", "skipped",
           "unknown"]
