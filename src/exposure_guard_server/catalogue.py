"""The check catalogue the server shares with the agent (the same ``Check`` declarations, versioned with
the agent package): title, why it matters, how to fix it by hand, whether the agent can fix it, and whether
it can make a box EXPOSED. The device page and the printable report explain findings with it."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, List

from exposure_guard import __version__

VERSION = __version__  # the agent release whose catalogue this is; newer agents may report more checks


@lru_cache(maxsize=1)
def catalogue() -> Dict[str, Dict[str, Any]]:
    from exposure_guard.checks import all_checks

    return {check.id: check.catalogue_entry() for check in all_checks()}


def effect(finding: Dict[str, Any]) -> str:
    """What a finding does to its box's verdict: exposed | at_risk | accepted | none (the same rules as
    ``reportlogic.verdict_of``, per finding)."""
    if finding.get("status") != "fail":
        return "none"
    if isinstance(finding.get("accepted"), dict):
        return "accepted"
    entry = catalogue().get(str(finding.get("id")), {})
    if entry.get("makes_exposed") and finding.get("severity") == "critical":
        return "exposed"
    return "none" if finding.get("severity") == "info" else "at_risk"


def explained(findings: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The findings, each with ``check`` (its catalogue entry, or None for a check this server does not know)
    and ``effect``."""
    known = catalogue()
    return [dict(f, check=known.get(str(f.get("id"))), effect=effect(f)) for f in findings]
