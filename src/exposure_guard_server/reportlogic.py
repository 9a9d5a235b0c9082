"""What the server derives from report documents: verdict, failing checks, transitions and diffs."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from exposure_guard.contracts import SEVERITY_RANK

VERDICTS = ("pending", "ok", "at_risk", "exposed")
RISK = {name: rank for rank, name in enumerate(VERDICTS)}
VERDICT_LABEL = {"pending": "no report yet", "ok": "OK", "at_risk": "AT RISK", "exposed": "EXPOSED"}
# Mutually exclusive: stale (silent past its interval and grace) overrides the verdict, except exposed: a box
# whose last report said the internet reaches it stays counted as exposed when it goes silent.
STATES = ("exposed", "at_risk", "ok", "stale", "pending")
TRANSITION_KINDS = ("enrolled", "first_report", "became_exposed", "became_at_risk", "no_longer_exposed", "fixed",
                    "went_stale", "back", "re_enrolled", "re_enroll_pending", "risk_accepted", "acceptance_expired",
                    "acceptance_revoked")
# Onboarding a box is not news: webhooks that want every event ("*") get all kinds but these, which must be
# asked for by name. A first report that says exposed is still ``became_exposed``.
ONBOARDING_KINDS = ("enrolled", "first_report")
KIND_LABEL = {
    "enrolled": "enrolled", "first_report": "first report", "became_exposed": "became exposed",
    "became_at_risk": "became at risk", "no_longer_exposed": "no longer exposed (still at risk)",
    "fixed": "fixed (now OK)", "went_stale": "went silent", "back": "reporting again", "re_enrolled": "re-enrolled",
    "re_enroll_pending": "re-enrollment waits for approval", "risk_accepted": "risk accepted",
    "acceptance_expired": "acceptance expired", "acceptance_revoked": "acceptance revoked",
}
SEVERITY_ORDER = SEVERITY_RANK  # info=0 … critical=4: the one order the agent, the prober and the server share
DEVICE_FIELDS = ("hostname", "model", "firmware", "build", "lan_addresses")


def counts(finding: Dict[str, Any]) -> bool:
    """A failing finding the owner has not accepted (an accepted one keeps status "fail" and carries
    ``accepted``): only these make the verdict and the failing list."""
    return finding.get("status") == "fail" and not isinstance(finding.get("accepted"), dict)


def verdict_of(doc: Dict[str, Any], accepted: FrozenSet[str] = frozenset()) -> str:
    """exposed (the report says the internet reaches it), at_risk (a failing non-info check that is not
    accepted), or ok. The agent leaves the findings its owner accepted out of ``summary.exposed``;
    ``accepted`` are the checks accepted on the server: a box stays exposed unless every finding that makes
    it so (per the check catalogue) is among them — one the catalogue does not know keeps it exposed."""
    if doc.get("summary", {}).get("exposed"):
        if not accepted:
            return "exposed"
        from exposure_guard_server.catalogue import catalogue

        known = catalogue()
        makers = [f for f in doc.get("findings", []) if counts(f) and f.get("severity") == "critical"
                  and known.get(str(f.get("id")), {}).get("makes_exposed", True)]
        if not makers or any(str(f.get("id")) not in accepted for f in makers):
            return "exposed"
    for finding in doc.get("findings", []):
        if counts(finding) and str(finding.get("id")) not in accepted and finding.get("severity") != "info":
            return "at_risk"
    return "ok"


def failing_checks(doc: Dict[str, Any]) -> Dict[str, str]:
    """check id → severity of every failing finding that is not accepted."""
    out: Dict[str, str] = {}
    for finding in doc.get("findings", []):
        if counts(finding):
            out[str(finding.get("id"))] = str(finding.get("severity"))
    return out


def parse_time(text: str) -> Optional[float]:
    """RFC 3339 → epoch seconds (None when unparsable)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()


def format_time(epoch: Optional[float]) -> str:
    if epoch is None:
        return ""
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def derive_transitions(previous: str, previous_failing: Dict[str, str], verdict: str,
                       failing: Dict[str, str]) -> List[Tuple[str, Dict[str, Any]]]:
    """Transitions between two consecutive verdicts (``pending`` = no earlier report)."""
    newly = sorted(set(failing) - set(previous_failing))
    gone = sorted(set(previous_failing) - set(failing))
    detail = {"previous_verdict": previous, "verdict": verdict, "newly_failing": newly, "no_longer_failing": gone}
    if verdict == "exposed" and previous != "exposed":
        return [("became_exposed", detail)]
    if previous == "pending":
        return [("first_report", detail)]
    if verdict == "at_risk" and previous == "ok":
        return [("became_at_risk", detail)]
    if previous == "exposed" and verdict == "at_risk":
        return [("no_longer_exposed", detail)]
    if previous in ("exposed", "at_risk") and verdict == "ok":
        return [("fixed", detail)]
    return []


def diff_reports(previous: Optional[Dict[str, Any]], current: Dict[str, Any]) -> Dict[str, Any]:
    """What changed from one report to the next: findings, device identity, summary, applied changes."""
    before = {f.get("id"): f for f in (previous or {}).get("findings", [])}
    after = {f.get("id"): f for f in current.get("findings", [])}
    newly_failing, fixed, changed, added, removed = [], [], [], [], []
    for check_id, finding in after.items():
        old = before.get(check_id)
        if old is None:
            added.append({"id": check_id, "status": finding.get("status")})
            if finding.get("status") == "fail" and previous is not None:
                newly_failing.append(check_id)
            continue
        if old.get("status") != finding.get("status") or old.get("severity") != finding.get("severity"):
            entry = {"id": check_id, "from": old.get("status"), "to": finding.get("status"),
                     "severity_from": old.get("severity"), "severity_to": finding.get("severity")}
            changed.append(entry)
            if finding.get("status") == "fail" and old.get("status") != "fail":
                newly_failing.append(check_id)
            elif old.get("status") == "fail" and finding.get("status") != "fail":
                fixed.append(check_id)
    for check_id, old in before.items():
        if check_id not in after:
            removed.append({"id": check_id, "status": old.get("status")})
            if old.get("status") == "fail":
                fixed.append(check_id)
    device_changes = {}
    if previous is not None:
        for key in DEVICE_FIELDS:
            a, b = previous.get("device", {}).get(key), current.get("device", {}).get(key)
            if a != b:
                device_changes[key] = {"from": a, "to": b}
    return {
        "previous_report_id": (previous or {}).get("report_id"),
        "report_id": current.get("report_id"),
        "previous_verdict": verdict_of(previous) if previous is not None else None,
        "verdict": verdict_of(current),
        "newly_failing": sorted(newly_failing),
        "fixed": sorted(fixed),
        "changed": sorted(changed, key=lambda e: str(e["id"])),
        "added": sorted(added, key=lambda e: str(e["id"])),
        "removed": sorted(removed, key=lambda e: str(e["id"])),
        "device": device_changes,
        "changes_applied": list(current.get("changes", [])),
    }
