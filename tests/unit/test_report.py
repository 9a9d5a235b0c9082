"""Report verdict and summary.exposed (a failing reachability/router finding on a management port)."""

from __future__ import annotations

from exposure_guard.report import Finding, Report


def finding(status: str, severity: str, exposure: bool) -> Finding:
    return Finding(id="x", title="t", severity=severity, status=status, summary="s", exposure=exposure)


def test_exposed_only_for_critical_failing_exposure_findings():
    assert Report({}, [finding("fail", "critical", True)]).exposed
    # a router mapping of a non-management port fails as high: at risk, not exposed
    assert not Report({}, [finding("fail", "high", True)]).exposed
    assert not Report({}, [finding("pass", "critical", True)]).exposed
    assert not Report({}, [finding("fail", "critical", False)]).exposed


def test_verdicts():
    assert Report({}, [finding("fail", "critical", True)]).verdict() == "EXPOSED"
    assert Report({}, [finding("fail", "high", True)]).verdict() == "AT RISK"
    assert Report({}, [finding("fail", "info", False), finding("pass", "high", False)]).verdict() == "OK"
    doc = Report({}, [finding("fail", "critical", True)]).to_dict()
    assert doc["summary"]["exposed"] is True and doc["summary"]["fail"] == 1
