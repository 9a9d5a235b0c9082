"""The report document, schema ``exposure-guard/report/v1`` (design.md); the server imports this too."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from exposure_guard import __version__
from exposure_guard.contracts import REPORT_SCHEMA_FILE as SCHEMA_FILE
from exposure_guard.contracts import REPORT_SCHEMA_ID as SCHEMA_ID
from exposure_guard.contracts import SEVERITIES, SEVERITY_RANK, STATUSES, new_uuid4, utc_now

__all__ = ["SCHEMA_FILE", "SCHEMA_ID", "SEVERITIES", "SEVERITY_RANK", "STATUSES", "Finding", "Report", "load_schema",
           "utc_now"]


@dataclass
class Finding:
    id: str
    title: str
    severity: str
    status: str
    summary: str
    evidence: Dict[str, Any] = field(default_factory=dict)
    fixable: bool = False
    fixed: bool = False
    references: List[str] = field(default_factory=list)
    family: str = "local"
    exposure: bool = False  # a failing finding of this kind makes the NAS "exposed"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "status": self.status,
            "summary": self.summary,
            "evidence": self.evidence,
            "fixable": self.fixable,
            "fixed": self.fixed,
            "references": list(self.references),
        }


@dataclass
class Report:
    device: Dict[str, Any]
    findings: List[Finding]
    changes: List[Dict[str, Any]] = field(default_factory=list)
    mode: str = "report"
    duration_ms: int = 0
    report_id: str = field(default_factory=new_uuid4)
    generated_at: str = field(default_factory=utc_now)

    def counts(self) -> Dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for finding in self.findings:
            counts[finding.status] = counts.get(finding.status, 0) + 1
        return counts

    @property
    def exposed(self) -> bool:
        """design.md: a failing reachability or router finding on a management port. Those checks fail as
        critical exactly then (admin/SSH verified from outside, a UPnP mapping of a management port)."""
        return any(f.status == "fail" and f.exposure and f.severity == "critical" for f in self.findings)

    def verdict(self) -> str:
        """EXPOSED (the internet reaches it), AT RISK (risky settings), or OK."""
        if self.exposed:
            return "EXPOSED"
        if any(f.status == "fail" and f.severity != "info" for f in self.findings):
            return "AT RISK"
        return "OK"

    def failing(self, at_least: str = "low") -> List[Finding]:
        floor = SEVERITY_RANK[at_least]
        return [f for f in self.findings if f.status == "fail" and SEVERITY_RANK[f.severity] >= floor]

    def to_dict(self) -> Dict[str, Any]:
        summary: Dict[str, Any] = self.counts()
        summary["exposed"] = self.exposed
        return {
            "schema": SCHEMA_ID,
            "report_id": self.report_id,
            "generated_at": self.generated_at,
            "duration_ms": self.duration_ms,
            "agent": {"version": __version__, "python": "%d.%d.%d" % sys.version_info[:3], "mode": self.mode},
            "device": self.device,
            "findings": [f.to_dict() for f in self.findings],
            "changes": list(self.changes),
            "summary": summary,
        }

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, ensure_ascii=False)


def load_schema() -> Dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text("utf-8"))
