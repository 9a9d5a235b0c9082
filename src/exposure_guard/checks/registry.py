"""The check catalogue: every check is one declarative unit (id, title, severity, rationale, references,
what it reads, an evaluate function and an optional safe fix). Adding a check = one ``@check`` unit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from exposure_guard.checks.context import CheckContext
    from exposure_guard.remediation import Action


@dataclass
class Outcome:
    """What one evaluation found. ``severity`` overrides the check's default (e.g. critical on 8080)."""

    status: str
    summary: str
    evidence: Dict[str, Any] = field(default_factory=dict)
    severity: Optional[str] = None
    data: Any = None  # passed on to the fix (never serialised)


def passed(summary: str, **evidence: Any) -> Outcome:
    return Outcome("pass", summary, evidence)


def failed(summary: str, severity: Optional[str] = None, data: Any = None, **evidence: Any) -> Outcome:
    return Outcome("fail", summary, evidence, severity, data)


def unknown(summary: str, **evidence: Any) -> Outcome:
    return Outcome("unknown", summary, evidence)


def skipped(summary: str, **evidence: Any) -> Outcome:
    return Outcome("skipped", summary, evidence)


Evaluate = Callable[["CheckContext"], Outcome]
PlanFix = Callable[["CheckContext", Outcome], List["Action"]]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    severity: str
    family: str  # local | router | reachability
    rationale: str
    remediation: str  # how to fix it by hand
    reads: Tuple[str, ...]  # the evidence it reads, for `explain`
    references: Tuple[str, ...]
    evaluate: Evaluate
    plan_fix: Optional[PlanFix] = None
    confirm: str = ""  # how a user can confirm an unverified key on their NAS
    exposure: bool = False  # failing means the NAS is exposed to the internet
    network: bool = False  # needs the LAN/internet: skipped with --offline

    @property
    def fixable(self) -> bool:
        return self.plan_fix is not None

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
            "reads": list(self.reads),
            "references": list(self.references),
            "confirm": self.confirm,
        }


_REGISTRY: Dict[str, Check] = {}


def check(
    id: str,
    *,
    title: str,
    severity: str,
    family: str,
    rationale: str,
    remediation: str,
    reads: Tuple[str, ...],
    references: Tuple[str, ...] = (),
    confirm: str = "",
    exposure: bool = False,
    network: bool = False,
) -> Callable[[Evaluate], Evaluate]:
    """Decorator registering ``evaluate`` as a check; attach a fix with ``fixes(id)``."""

    def register(evaluate: Evaluate) -> Evaluate:
        _REGISTRY[id] = Check(id, title, severity, family, rationale.strip(), remediation.strip(), reads,
                              references, evaluate, None, confirm.strip(), exposure, network)
        return evaluate

    return register


def fixes(check_id: str) -> Callable[[PlanFix], PlanFix]:
    def attach(plan: PlanFix) -> PlanFix:
        current = _REGISTRY[check_id]
        _REGISTRY[check_id] = Check(**{**current.__dict__, "plan_fix": plan})
        return plan

    return attach


# Families run in this order: reachability reads what the router audit found.
FAMILY_ORDER = ("local", "router", "reachability")


def all_checks() -> List[Check]:
    _load_families()
    rank = {family: index for index, family in enumerate(FAMILY_ORDER)}
    return sorted(_REGISTRY.values(), key=lambda c: rank.get(c.family, len(rank)))


def get_check(check_id: str) -> Optional[Check]:
    _load_families()
    return _REGISTRY.get(check_id)


def _load_families() -> None:
    # Importing a family module registers its checks; the order here is the catalogue's order.
    from exposure_guard.checks import local, reachability, router  # noqa: F401
