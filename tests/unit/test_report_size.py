"""A rogue router cannot make a report the server refuses forever (issue 15 item 7).

Every evidence list is capped (with a count of what was left out), a report stays well under the server's
1 MiB body limit whatever the router lists, a report the server still answers 413 for is delivered in a
reduced form (findings without evidence, marked ``reduced``), and ``spool/rejected/`` is bounded."""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Dict

import pytest

from exposure_guard import checkin, spool
from exposure_guard.checks import get_check
from exposure_guard.checks.runner import run_checks
from exposure_guard.context import CheckContext
from exposure_guard.qts.identity import DeviceIdentity
from exposure_guard.qts.root import QtsRoot
from exposure_guard.report import MAX_EVIDENCE_ITEMS, MAX_REPORT_BYTES, Finding, Report, cap_evidence
from exposure_guard.settings import load_settings
from tests.support.fakeigd import FakeIgd, Mapping
from tests.support.qts import write_tree
from tests.unit.test_checkin import IDENTITY, FakeServer, _enrolled, _settings

NAS = "10.77.0.10"
SERVER_MAX_BODY = 1024 * 1024  # exposure-guard-server --max-body default (src/exposure_guard_server/config.py)
ROGUE_TABLE = 4096  # the most mappings the agent reads (upnp/soap.py MAX_MAPPINGS)


def rogue_table(count: int = ROGUE_TABLE):
    """A hostile IGD's table: every entry forwards to this NAS, with long descriptions."""
    return [Mapping(1024 + i, NAS, 1024 + i, "TCP" if i % 2 else "UDP", "rogue mapping %04d %s" % (i, "x" * 40))
            for i in range(count)]


def nas_context(tmp_path: Path, igd_url: str) -> CheckContext:
    root = write_tree(tmp_path / "root", "[System]\nWeb Access Port = 8080\n[Stunnel]\nPort = 443\n", default=None)
    settings = load_settings(None, environ={}).with_overrides(
        {("router", "igd_url"): igd_url, ("agent", "lan_addresses"): NAS})
    return CheckContext(QtsRoot(root), settings, state_dir=tmp_path / "state")


def report_bytes(report: Report) -> int:
    return len(json.dumps(report.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


@pytest.fixture(scope="module")
def rogue_report(tmp_path_factory: pytest.TempPathFactory):
    """The router check against a fake IGD listing 4,096 mappings to this NAS, as a report and outcome."""
    tmp_path = tmp_path_factory.mktemp("rogue")
    with FakeIgd("igd2", rogue_table()) as igd:
        ctx = nas_context(tmp_path, igd.location)
        report, outcomes = run_checks(ctx, ["router.upnp-mappings"])
    return report, outcomes["router.upnp-mappings"], ctx


def test_a_4096_mapping_router_makes_a_report_well_under_the_server_limit(rogue_report):
    report, outcome, _ctx = rogue_report
    size = report_bytes(report)
    print("report with 4,096 rogue mappings: %d bytes" % size)
    assert outcome.status == "fail" and len(outcome.evidence["mappings_to_this_nas"]) == ROGUE_TABLE
    assert size <= MAX_REPORT_BYTES < SERVER_MAX_BODY // 2
    (finding,) = report.to_dict()["findings"]
    rows = finding["evidence"]["mappings_to_this_nas"]
    assert len(rows) == MAX_EVIDENCE_ITEMS
    assert finding["evidence"]["mappings_to_this_nas_omitted"] == ROGUE_TABLE - MAX_EVIDENCE_ITEMS
    assert rows == outcome.evidence["mappings_to_this_nas"][:MAX_EVIDENCE_ITEMS]  # the first ones, in order


def test_the_fix_still_sees_every_mapping(rogue_report):
    _report, outcome, ctx = rogue_report
    actions = get_check("router.upnp-mappings").plan_fix(ctx, outcome)
    assert len(outcome.fix_data) == ROGUE_TABLE
    assert len(actions) == 0  # fix_scope = management: none of these is a management port
    ctx.settings = ctx.settings.with_overrides({("router", "fix_scope"): "all"})
    assert len(get_check("router.upnp-mappings").plan_fix(ctx, outcome)) == ROGUE_TABLE


def test_cap_evidence_caps_every_list_at_any_depth_and_counts_the_rest():
    evidence = {"a": list(range(500)), "nested": {"b": [{"c": list(range(MAX_EVIDENCE_ITEMS + 3))}] * 70},
                "short": [1, 2], "text": "t" * 100000, "pairs": [[1] * 200]}
    capped = cap_evidence(evidence)
    assert capped["a"] == list(range(MAX_EVIDENCE_ITEMS)) and capped["a_omitted"] == 500 - MAX_EVIDENCE_ITEMS
    assert len(capped["nested"]["b"]) == MAX_EVIDENCE_ITEMS and capped["nested"]["b_omitted"] == 70 - MAX_EVIDENCE_ITEMS
    assert capped["nested"]["b"][0]["c_omitted"] == 3
    assert capped["short"] == [1, 2] and "short_omitted" not in capped
    assert len(capped["text"]) < 5000 and capped["text"].endswith("… (96000 characters omitted)")
    assert capped["pairs"][0][-1] == {"omitted": 200 - MAX_EVIDENCE_ITEMS}
    assert evidence["a"] == list(range(500))  # the outcome's own evidence is not changed


def test_many_large_findings_still_fit_the_report_budget():
    blob = {"k%03d" % i: "v" * 3000 for i in range(20)}  # 60 KB of evidence each: under the per-finding cap
    findings = [Finding("check.n%02d" % n, "t", "high", "fail", "s", dict(blob)) for n in range(20)]
    doc = Report({"device_id": "d", "hostname": "h", "model": "m", "firmware": "f", "build": "",
                  "lan_addresses": []}, findings).to_dict()
    size = len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    assert size <= MAX_REPORT_BYTES
    trimmed = [f for f in doc["findings"] if "evidence_omitted_bytes" in f["evidence"]]
    kept = [f for f in doc["findings"] if "evidence_omitted_bytes" not in f["evidence"]]
    assert trimmed and kept and all(f["summary"] == "s" for f in doc["findings"])
    assert "left out to keep the report under" in trimmed[0]["evidence"]["evidence_omitted"]


# -- delivery of a report the server still refuses as too large ------------------------------------------

def _spool_big(state: Path) -> Dict[str, Any]:
    doc = {"schema": "exposure-guard/report/v1", "report_id": str(uuid.uuid4()),
           "generated_at": "2024-05-01T10:00:00Z", "duration_ms": 1,
           "agent": {"version": "1", "python": "3", "mode": "report"}, "device": IDENTITY.to_dict(),
           "findings": [{"id": "router.upnp-mappings", "title": "t", "severity": "critical", "status": "fail",
                         "summary": "s", "evidence": {"rows": ["r" * 500] * 4000}, "fixable": True, "fixed": False,
                         "references": []}],
           "changes": [], "summary": {"fail": 1, "pass": 0, "unknown": 0, "error": 0, "skipped": 0, "exposed": True}}
    checkin.spool_report(state, doc, 10)
    return doc


def test_a_report_refused_as_too_large_is_delivered_reduced(tmp_path: Path, server: FakeServer) -> None:
    state = tmp_path / "state"
    _enrolled(state, server)
    original = _spool_big(state)
    server.script.append((413, {"detail": "decompressed body is larger than 1048576 bytes"}))
    result = checkin.deliver_spool(_settings(server.url), state, deadline=30)
    assert result.delivered == 1 and result.rejected == 0 and result.reduced == 1, result.summary()
    assert checkin.spooled_files(state) == []
    assert not (state / "spool" / "rejected").exists()
    first, second = [r["json"] for r in server.requests]
    assert first == original and "reduced" not in first
    assert second["report_id"] == original["report_id"] and second["summary"] == original["summary"]
    assert second["reduced"]["reason"].startswith("the server refused the full report as too large")
    assert second["reduced"]["original_bytes"] > 1000000
    (finding,) = second["findings"]
    assert finding["evidence"] == {} and finding["status"] == "fail" and finding["summary"] == "s"


def test_a_reduced_report_refused_again_is_rejected_once(tmp_path: Path, server: FakeServer) -> None:
    state = tmp_path / "state"
    _enrolled(state, server)
    _spool_big(state)
    server.script.extend([(413, {"detail": "too large"}), (413, {"detail": "too large"})])
    result = checkin.deliver_spool(_settings(server.url), state, deadline=30)
    assert result.rejected == 1 and result.delivered == 0 and len(server.requests) == 2
    assert len(list((state / "spool" / "rejected").glob("*.json"))) == 1


def test_rejected_folder_is_bounded_oldest_dropped_and_logged(tmp_path: Path, caplog) -> None:
    state = tmp_path / "state"
    folder = spool.spool_dir(state)
    folder.mkdir(parents=True)
    caplog.set_level(logging.WARNING, "exposure_guard.checkin")
    total = spool.REJECTED_MAX_FILES + 7
    for i in range(total):
        path = folder / ("20240501T1000%02d.000000Z-000000-%s.json" % (i, uuid.uuid4()))
        path.write_bytes(b"{}")
        spool.reject(state, path, "refused %d" % i)
    kept = sorted(p.name for p in (folder / "rejected").glob("*.json"))
    assert len(kept) == spool.REJECTED_MAX_FILES
    assert kept[0].startswith("20240501T100007") and kept[-1].startswith("20240501T1000%02d" % (total - 1))
    assert len(list((folder / "rejected").glob("*.reason"))) == spool.REJECTED_MAX_FILES
    assert any("spool/rejected/" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)


def test_rejected_folder_is_bounded_in_bytes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    folder = spool.spool_dir(state)
    folder.mkdir(parents=True)
    big = b"x" * (spool.REJECTED_MAX_BYTES // 3)
    for i in range(6):
        path = folder / ("20240501T1000%02d.000000Z-000000-%s.json" % (i, uuid.uuid4()))
        path.write_bytes(big)
        spool.reject(state, path, "too large")
    used = sum(p.stat().st_size for p in (folder / "rejected").iterdir())
    assert used <= spool.REJECTED_MAX_BYTES
    names = sorted(p.name for p in (folder / "rejected").glob("*.json"))
    assert names and names[-1].startswith("20240501T100005")


@pytest.fixture
def server():
    fake = FakeServer()
    try:
        yield fake
    finally:
        fake.close()


# -- end to end: the real server accepts what the agent sends -----------------------------------------------

@pytest.mark.slow
def test_real_server_accepts_the_rogue_router_report_full_and_reduced(tmp_path: Path, rogue_report) -> None:
    pytest.importorskip("fastapi", reason="the real server needs the [server] extra")
    pytest.importorskip("uvicorn", reason="the real server needs the [server] extra")
    import requests

    from tests.support.serverproc import ServerProcess, cli, free_port

    report, _outcome, _ctx = rogue_report
    db = "sqlite:///%s" % (tmp_path / "eg.db")
    cli("init", "--db", db)
    secret = cli("enroll-secret", "create", "--db", db).stdout.strip().splitlines()[-1]
    token = cli("api-token", "create", "--db", db).stdout.strip().splitlines()[-1]
    # A server with the default limit takes the capped report as it is; one with a small limit gets it reduced.
    for label, extra in (("default", []), ("small", ["--max-body", "8000"])):
        server = ServerProcess(db, free_port(), tmp_path / ("server-%s.log" % label), extra=extra)
        server.start()
        try:
            state = tmp_path / ("state-" + label)
            identity = DeviceIdentity(**dict(IDENTITY.to_dict(), device_id="qnap-rogue-" + label))
            checkin.enroll(server.url, secret, identity, state)
            doc = report.to_dict()
            doc["device"] = identity.to_dict()
            doc["report_id"] = str(uuid.uuid4())
            checkin.spool_report(state, doc, 10)
            settings = load_settings(None, environ={"EXPOSURE_GUARD_SERVER_URL": server.url})
            result = checkin.deliver_spool(settings, state, deadline=60)
            assert result.delivered == 1 and result.rejected == 0, result.summary()
            assert result.reduced == (1 if label == "small" else 0), result.summary()
            stored = requests.get(server.url + "/api/v1/reports/" + doc["report_id"],
                                  headers={"Authorization": "Bearer " + token}, timeout=10)
            assert stored.status_code == 200, stored.text
            assert ("reduced" in stored.json()["report"]) == (label == "small")
            assert not os.path.exists(str(state / "spool" / "rejected"))
        finally:
            server.stop()


def test_a_fix_of_4096_mappings_still_makes_a_valid_report_within_budget():
    import jsonschema

    from exposure_guard.report import MAX_REPORT_CHANGES, load_schema

    changes = [{"change_id": "chg-%012d" % i, "check_id": "router.upnp-mappings",
                "target": "IGD http://10.77.0.1:5000/ctl/IPConn mapping TCP %d → %s:%d" % (1024 + i, NAS, 1024 + i),
                "before": "TCP %d → %s:%d 'rogue mapping' lease 0 s" % (1024 + i, NAS, 1024 + i), "after": "absent",
                "at": "2024-05-01T10:00:00Z"} for i in range(ROGUE_TABLE)]
    report = Report({"device_id": "d", "hostname": "h", "model": "m", "firmware": "f", "build": "",
                     "lan_addresses": []}, [Finding("router.upnp-mappings", "t", "critical", "pass", "s", {})],
                    changes=changes, mode="fix")
    doc = report.to_dict()
    jsonschema.Draft202012Validator(load_schema()).validate(doc)
    assert doc["changes"] == changes[:MAX_REPORT_CHANGES]
    assert doc["changes_omitted"] == ROGUE_TABLE - MAX_REPORT_CHANGES
    assert report_bytes(report) <= MAX_REPORT_BYTES


def test_device_made_text_never_exceeds_the_schema_limits():
    import jsonschema

    from exposure_guard.report import load_schema

    url = "http://10.77.0.1:5000/" + "c" * 2000  # a control URL of 2,000 characters is accepted from a router
    change = {"change_id": "chg-1", "check_id": "router.upnp-mappings", "target": "IGD %s mapping TCP 1" % url,
              "before": "x", "after": "absent", "at": "2024-05-01T10:00:00Z"}
    finding = Finding("router.upnp-mappings", "t", "high", "unknown", "cannot read: " + "; ".join([url] * 5), {})
    doc = Report({"device_id": "d", "hostname": "h", "model": "m", "firmware": "f", "build": "",
                  "lan_addresses": []}, [finding], changes=[change]).to_dict()
    jsonschema.Draft202012Validator(load_schema()).validate(doc)
    assert doc["changes"][0]["target"].startswith("IGD http://10.77.0.1:5000/ccc")
    assert doc["findings"][0]["summary"].endswith("characters omitted)")
