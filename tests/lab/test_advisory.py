"""The project's acceptance test: the January 2022 advisory, end to end (tests/lab/advisory.py).

The agent installed from the built .qpkg (busybox sh, simulated QTS) runs in ns nas; real miniupnpd + NAT
with one static forward in ns router; the real prober, fleet server and a webhook receiver in ns wan;
headless Chromium reads the dashboard. Each step of the story is asserted."""

from __future__ import annotations

import json
from typing import List

import pytest

from tests.lab.advisory import ARC, STATIC_FORWARD, Advisory, finding, missing, port_verdicts, verdict
from tests.support.netlab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.slow]

NAS = Lab.NAS


@pytest.fixture
def scenario(tmp_path):
    reason = missing()
    if reason:
        pytest.skip("advisory scenario: " + reason)
    Lab.reap_stale()
    lines: List[str] = []
    story = Advisory(out=lines.append, work=tmp_path / "work")
    story.lines = lines  # type: ignore[attr-defined]
    try:
        yield story
    finally:
        story.close()
        print("\n".join(lines))  # shown by pytest on failure (-rA / -s shows it always)


def test_advisory_end_to_end(scenario: Advisory) -> None:
    s = scenario
    s.setup()
    # The code that runs is the vendored copy inside the installed package.
    lib = str(s.qpkg_root / "lib") + "/"
    assert all(path.startswith(lib) for path in s.facts["agent_files"]), s.facts["agent_files"]
    expected_arc = sorted(("TCP", int(ext), NAS, int(internal), desc) for ext, internal, desc in ARC)
    assert s.facts["arc_mappings"] == expected_arc

    # 1. check: EXPOSED — ARC on, UPnP mappings of 8080/443, admin verified by callback, static forward not UPnP.
    report = s.step1()
    assert s.facts["check_rc"] == 1
    assert verdict(report) == "EXPOSED" and report["summary"]["exposed"] is True
    arc = finding(report, "myqnapcloud.upnp-forwarding")
    assert arc["status"] == "fail" and arc["evidence"]["value"] == "TRUE" and arc["fixable"]
    mappings = finding(report, "router.upnp-mappings")
    assert mappings["status"] == "fail" and mappings["severity"] == "critical"
    rows = {(r["external"], r["internal"]) for r in mappings["evidence"]["mappings_to_this_nas"]}
    assert rows == {("TCP 8080", NAS + ":8080"), ("TCP 8443", NAS + ":443")}
    assert all(r["management_port"] for r in mappings["evidence"]["mappings_to_this_nas"])
    admin = finding(report, "reachability.admin")
    assert admin["status"] == "fail" and admin["severity"] == "critical"
    ports = port_verdicts(report)
    assert ports["ipv4:8080"]["state"] == "verified" and "UPnP mapping" in ports["ipv4:8080"]["forwarded"]
    assert ports["ipv4:8443"]["state"] == "verified" and "UPnP mapping" in ports["ipv4:8443"]["forwarded"]
    assert ports["ipv4:443"]["state"] == "verified" and "NOT a UPnP mapping" in ports["ipv4:443"]["forwarded"]

    # 2. run --once in mode fix: ARC off, UPnP mappings deleted; still exposed through the static forward.
    report = s.step2()
    assert s.facts["fix_rc"] == 1
    changes = {(c["check_id"], c["target"].split(" mapping ")[-1], c["after"]) for c in report["changes"]}
    assert ("myqnapcloud.upnp-forwarding", "/etc/config/upnpc.conf [UPnP_Global] Enable", "FALSE") in changes
    deleted = {c["target"].split(" mapping ")[-1] for c in report["changes"] if c["after"] == "absent"}
    assert deleted == {"TCP 8080 → %s:8080" % NAS, "TCP 8443 → %s:443" % NAS}, report["changes"]
    assert b"Enable = FALSE" in s.facts["upnpc_conf_after_fix"]
    assert s.facts["mappings_after_fix"] == []
    assert not s.facts["wan_8080_after_fix"] and s.facts["wan_443_after_fix"]
    assert finding(report, "myqnapcloud.upnp-forwarding")["status"] == "pass"
    assert finding(report, "router.upnp-mappings")["status"] == "pass"
    assert verdict(report) == "EXPOSED"
    admin = finding(report, "reachability.admin")
    assert admin["status"] == "fail" and admin["severity"] == "critical"
    assert [k for k, v in port_verdicts(report).items() if v["state"] == "verified"] == ["ipv4:%d" % STATIC_FORWARD[0]]
    assert "NOT a UPnP mapping" in admin["summary"] and "remove it in the router's port-forwarding settings" in \
        admin["summary"]
    # the exact rule the owner has to delete on the router
    assert "(external TCP %d -> 10.77.0.10:443)" % STATIC_FORWARD[0] in admin["summary"]
    assert [f["id"] for f in report["findings"] if f["status"] == "fail" and f["severity"] != "info"] == \
        ["reachability.admin"]

    # 3. the owner removes the static forward: OK.
    report = s.step3()
    assert s.facts["recheck_rc"] == 0
    assert verdict(report) == "OK" and not report["summary"]["exposed"]
    # only an advice remains: the box has no QuFirewall (info: it does not make a box AT RISK)
    assert [(f["id"], f["severity"]) for f in report["findings"] if f["status"] not in ("pass", "skipped")] == [
        ("service.firewall", "info")]
    assert finding(report, "reachability.admin")["status"] == "pass"
    assert {v["state"] for v in port_verdicts(report).values()} <= {"closed", "filtered"}
    assert report["changes"] == []

    # 4. the server: history exposed -> ok, dashboard in Chromium, both webhook transitions, signed.
    s.step4()
    detail = s.facts["device_detail"]
    assert [h["verdict"] for h in detail["history"]] == ["ok", "exposed"]
    assert [h["report_id"] for h in detail["history"]] == [s.reports["recheck"]["report_id"],
                                                           s.reports["fix"]["report_id"]]
    assert [t["kind"] for t in detail["transitions"]][:2] == ["fixed", "became_exposed"]
    assert s.facts["fleet_summary"]["devices"] == 1 and s.facts["fleet_summary"]["counts"]["ok"] == 1
    hooks = s.facts["webhooks"]
    assert [kind for kind, _good, _body in hooks] == ["became_exposed", "fixed"]
    assert all(good for _kind, good, _body in hooks), "webhook HMAC signature did not verify"
    assert [(b["detail"]["previous_verdict"], b["detail"]["verdict"]) for _k, _g, b in hooks] == \
        [("pending", "exposed"), ("exposed", "ok")]
    assert {b["device"]["device_id"] for _k, _g, b in hooks} == {s.facts["device_id"]}
    seen = s.facts["dashboard"]
    assert seen["counts"] == {"exposed": "0", "at_risk": "0", "ok": "1", "total": "1"}
    assert "OFFICE-NAS" in seen["fleet"]
    assert "OFFICE-NAS" in seen["device_name"] and "OK" in seen["device_name"]
    page = seen["device_page"]
    assert "EXPOSED → OK" in page and "became exposed" in page and "fixed" in page
    png = s.facts["screenshot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000

    # 5. undo --all: upnpc.conf byte-identical, ARC's mappings back on the router.
    s.step5()
    assert s.facts["undo_rc"] == 0, s.facts["undo_output"]
    assert s.facts["upnpc_conf_after_undo"] == s.facts["upnpc_conf_before"]
    assert s.facts["mappings_after_undo"] == expected_arc
    assert s.facts["wan_8080_after_undo"]
    history = json.loads(s.agent("history", "history", "--json")[0].stdout)
    assert {r["state"] for r in history} == {"undone"} and len(history) == 3

    s.summary()  # per-step agent times and the whole wall time, printed (figures, not assertions)
