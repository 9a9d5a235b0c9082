"""The report document, schema ``exposure-guard/report/v1`` (``data/report-v1.schema.json``); the server
imports this too."""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

from exposure_guard import __version__
from exposure_guard.contracts import REPORT_SCHEMA_FILE as SCHEMA_FILE
from exposure_guard.contracts import REPORT_SCHEMA_ID as SCHEMA_ID
from exposure_guard.contracts import SEVERITIES, SEVERITY_RANK, STATUSES, new_uuid4, utc_now

__all__ = ["MAX_EVIDENCE_BYTES", "MAX_EVIDENCE_ITEMS", "MAX_EVIDENCE_TEXT", "MAX_REPORT_BYTES", "MAX_REPORT_CHANGES",
           "SCHEMA_FILE",
           "SCHEMA_ID", "SEVERITIES", "SEVERITY_RANK", "STATUSES", "Finding", "Report", "cap_evidence", "load_schema",
           "reduced_report", "utc_now"]

# A report must stay far below the server's body limit (1 MiB by default) whatever a device says: a rogue
# router listing 4,096 mappings must not make a report the server refuses forever.
MAX_EVIDENCE_ITEMS = 50  # entries kept per evidence list; ``<key>_omitted`` counts the rest
MAX_EVIDENCE_TEXT = 4000  # characters kept per evidence string
MAX_EVIDENCE_BYTES = 64 * 1024  # one finding's evidence, as JSON, after the caps above
MAX_REPORT_BYTES = 256 * 1024  # the whole report: the largest evidence is left out first until it fits
MAX_SUMMARY = 2000  # a finding's summary, as report-v1.schema.json allows (device text can make it longer)
_CHANGE_LIMITS = {"change_id": 64, "check_id": 80, "target": 500}  # the schema's maxLength of a change
MAX_REPORT_CHANGES = 200  # changes listed (a fix of a rogue table makes thousands); ``changes_omitted`` counts the rest


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def cap_evidence(value: Any, max_items: int = MAX_EVIDENCE_ITEMS, max_text: int = MAX_EVIDENCE_TEXT) -> Any:
    """A copy of ``value`` with every list cut to its first ``max_items`` entries and every string to
    ``max_text`` characters, at any depth. A list under a dict key gets a sibling ``<key>_omitted`` with the
    number left out; a list inside a list ends with ``{"omitted": n}``."""
    if isinstance(value, dict):
        out: Dict[str, Any] = {}
        for key, item in value.items():
            out[key] = cap_evidence(item, max_items, max_text)
            if isinstance(item, (list, tuple)) and len(item) > max_items:
                out["%s_omitted" % key] = len(item) - max_items
        return out
    if isinstance(value, (list, tuple)):
        kept = []
        for item in value[:max_items]:
            capped = cap_evidence(item, max_items, max_text)
            if isinstance(item, (list, tuple)) and len(item) > max_items:
                capped.append({"omitted": len(item) - max_items})
            kept.append(capped)
        return kept
    if isinstance(value, str) and len(value) > max_text:
        return value[:max_text] + "… (%d characters omitted)" % (len(value) - max_text)
    return value


def _fit_text(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters (the schema's maxLength), saying how much was cut."""
    if len(text) <= limit:
        return text
    keep = limit - len("… (%d characters omitted)" % len(text))  # the count printed is never larger
    return text[:keep] + "… (%d characters omitted)" % (len(text) - keep)


def _capped_change(change: Dict[str, Any]) -> Dict[str, Any]:
    out = cap_evidence(change)
    for key, limit in _CHANGE_LIMITS.items():
        if isinstance(out.get(key), str):
            out[key] = _fit_text(out[key], limit)
    return out


def _capped_evidence(evidence: Dict[str, Any]) -> Dict[str, Any]:
    capped = cap_evidence(evidence)
    size = _json_size(capped)
    if size > MAX_EVIDENCE_BYTES:
        return _evidence_left_out(size, "more than the %d bytes kept per finding" % MAX_EVIDENCE_BYTES)
    return capped


def _evidence_left_out(size: int, why: str) -> Dict[str, Any]:
    return {"evidence_omitted_bytes": size, "evidence_omitted": "%d bytes of evidence left out: %s" % (size, why)}


class Finding:
    """One check's result as the report carries it."""

    def __init__(self, id: str, title: str, severity: str, status: str, summary: str,
                 evidence: Optional[Dict[str, Any]] = None, fixable: bool = False, fixed: bool = False,
                 references: Optional[List[str]] = None, family: str = "local", exposure: bool = False) -> None:
        self.id = id
        self.title = title
        self.severity = severity
        self.status = status
        self.summary = summary
        self.evidence: Dict[str, Any] = evidence if evidence is not None else {}
        self.fixable = fixable
        self.fixed = fixed
        self.references: List[str] = references if references is not None else []
        self.family = family
        self.exposure = exposure  # a failing finding of this kind makes the NAS "exposed"
        # {"reason", "until", "by"} while the owner accepts this failing finding ([checks] ID = accept …):
        # it keeps status "fail" but counts toward neither the verdict nor --fail-on.
        self.accepted: Optional[Dict[str, str]] = None

    @property
    def counts(self) -> bool:
        """Whether it counts toward the verdict and --fail-on: failing and not accepted."""
        return self.status == "fail" and self.accepted is None

    def __repr__(self) -> str:
        return "Finding(%r, %r, %r)" % (self.id, self.status, self.severity)

    def to_dict(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "status": self.status,
            "summary": _fit_text(self.summary, MAX_SUMMARY),
            "evidence": _capped_evidence(self.evidence),
            "fixable": self.fixable,
            "fixed": self.fixed,
            "references": list(self.references),
        }
        if self.accepted is not None:
            doc["accepted"] = dict(self.accepted)
        return doc


class Report:
    """A report document (schema report/v1) being built: device, findings, the changes a fix made."""

    def __init__(self, device: Dict[str, Any], findings: List[Finding], changes: Optional[List[Dict[str, Any]]] = None,
                 mode: str = "report", duration_ms: int = 0, report_id: Optional[str] = None,
                 generated_at: Optional[str] = None) -> None:
        self.device = device
        self.findings = findings
        self.changes: List[Dict[str, Any]] = changes if changes is not None else []
        self.mode = mode
        self.duration_ms = duration_ms
        self.report_id = report_id or new_uuid4()
        self.generated_at = generated_at or utc_now()

    def __repr__(self) -> str:
        return "Report(%s, %d findings)" % (self.report_id, len(self.findings))

    def counts(self) -> Dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for finding in self.findings:
            counts[finding.status] = counts.get(finding.status, 0) + 1
        return counts

    @property
    def exposed(self) -> bool:
        """The NAS is exposed when a reachability or router finding fails on a management port. Those checks
        fail as critical exactly then (admin/SSH verified from outside, a UPnP mapping of a management port)."""
        return any(f.counts and f.exposure and f.severity == "critical" for f in self.findings)

    def verdict(self) -> str:
        """EXPOSED (the internet reaches it), AT RISK (risky settings), or OK."""
        if self.exposed:
            return "EXPOSED"
        if any(f.counts and f.severity != "info" for f in self.findings):
            return "AT RISK"
        return "OK"

    def failing(self, at_least: str = "low") -> List[Finding]:
        floor = SEVERITY_RANK[at_least]
        return [f for f in self.findings if f.counts and SEVERITY_RANK[f.severity] >= floor]

    def to_dict(self) -> Dict[str, Any]:
        summary: Dict[str, Any] = self.counts()
        summary["exposed"] = self.exposed
        accepted = sum(1 for f in self.findings if f.status == "fail" and f.accepted is not None)
        if accepted:
            summary["accepted"] = accepted  # failing findings the owner accepts (also counted in "fail")
        extra: Dict[str, Any] = {}
        if len(self.changes) > MAX_REPORT_CHANGES:
            extra["changes_omitted"] = len(self.changes) - MAX_REPORT_CHANGES  # `history` on the NAS lists all
        return _fit_budget({
            "schema": SCHEMA_ID,
            "report_id": self.report_id,
            "generated_at": self.generated_at,
            "duration_ms": self.duration_ms,
            "agent": {"version": __version__, "python": "%d.%d.%d" % sys.version_info[:3], "mode": self.mode},
            "device": self.device,
            "findings": [f.to_dict() for f in self.findings],
            "changes": [_capped_change(c) for c in self.changes[:MAX_REPORT_CHANGES]],
            **extra,
            "summary": summary,
        })

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, ensure_ascii=False)


def _fit_budget(doc: Dict[str, Any], budget: int = MAX_REPORT_BYTES) -> Dict[str, Any]:
    """Leave out the largest findings' evidence until the whole report is at most ``budget`` bytes."""
    size = _json_size(doc)
    if size <= budget:
        return doc
    sized = sorted(((_json_size(f["evidence"]), i) for i, f in enumerate(doc["findings"])), reverse=True)
    for evidence_size, index in sized:
        if size <= budget:
            break
        marker = _evidence_left_out(evidence_size, "left out to keep the report under %d bytes" % budget)
        doc["findings"][index]["evidence"] = marker
        size -= evidence_size - _json_size(marker)
    return doc


def reduced_report(doc: Dict[str, Any], reason: str) -> Dict[str, Any]:
    """The report without any evidence, marked ``reduced`` (with why and the full size): what is delivered
    when the server refuses the full report as too large. Verdict, findings and changes stay."""
    out = dict(doc)
    out["findings"] = [dict(f, evidence={}) for f in doc.get("findings") or [] if isinstance(f, dict)]
    out["reduced"] = {"reason": reason, "original_bytes": _json_size(doc)}
    return out


def load_schema() -> Dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text("utf-8"))
