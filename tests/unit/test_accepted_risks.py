"""Accepted risks on the agent: ``[checks] ID = accept until YYYY-MM-DD: reason``. An accepted failing
finding keeps status "fail", gains ``accepted`` in the report, counts toward neither the verdict nor
--fail-on, shows in its own group, and counts again by itself after the day it ends."""

from __future__ import annotations

import datetime as dt
import json

import jsonschema
import pytest

from exposure_guard.checks.runner import apply_acceptances
from exposure_guard.errors import SettingsError
from exposure_guard.report import Finding, Report, load_schema
from exposure_guard.settings import load_settings
from tests.support.paths import QTS_TREES


def _settings(tmp_path, line):
    path = tmp_path / "exposure-guard.ini"
    path.write_text("[agent]\nmode = report\n\n[checks]\n" + line + "\n")
    return load_settings(path)


def test_an_acceptance_is_read_with_its_day_and_reason(tmp_path):
    settings = _settings(tmp_path, "service.ssh = accept until 2027-03-01: only over the VPN  # by Ann")
    acceptance = settings.acceptances["service.ssh"]
    assert acceptance.until == dt.date(2027, 3, 1) and acceptance.reason == "only over the VPN"
    assert acceptance.source.endswith("exposure-guard.ini:5")
    assert settings.policy("service.ssh") == "report"  # checked and reported, never fixed


@pytest.mark.parametrize("value,message", [
    ("accept", "needs the day it ends"),
    ("accept: because", "needs the day it ends"),
    ("accept until 2027-02-30: x", "not a date"),
    ("accept until tomorrow: x", "not a date"),
    ("accept until 2027-03-01", "needs a reason"),
    ("accept until 2027-03-01:   ", "needs a reason"),
    ("accept until 2027-03-01: " + "x" * 301, "one line of at most 300"),
    ("acept until 2027-03-01: typo", "is not valid"),
])
def test_a_bad_acceptance_is_a_settings_error_naming_the_line(tmp_path, value, message):
    with pytest.raises(SettingsError) as caught:
        _settings(tmp_path, "service.ssh = " + value)
    assert message in str(caught.value) and caught.value.line == 5
    assert "accept until YYYY-MM-DD" in str(caught.value)


def _findings():
    return [Finding("router.upnp-mappings", "t", "critical", "fail", "mapped", exposure=True),
            Finding("service.ssh", "t", "medium", "fail", "ssh on"),
            Finding("service.telnet", "t", "high", "pass", "off")]


def test_accepted_findings_leave_the_verdict_and_fail_on_until_the_day_ends(tmp_path):
    settings = _settings(tmp_path, "router.upnp-mappings = accept until 2027-03-01: the VPN box\n"
                                   "service.ssh = accept until 2027-03-01: admin only\n"
                                   "service.telnet = accept until 2027-03-01: passes anyway")
    findings = _findings()
    apply_acceptances(findings, settings.acceptances, today=dt.date(2027, 3, 1))  # the last day still counts
    report = Report(device={"hostname": "n"}, findings=findings)
    assert report.verdict() == "OK" and not report.exposed and report.failing("low") == []
    doc = report.to_dict()
    assert [f["status"] for f in doc["findings"]] == ["fail", "fail", "pass"]
    assert doc["findings"][0]["accepted"]["until"] == "2027-03-01" and "accepted" not in doc["findings"][2]
    assert doc["summary"]["fail"] == 2 and doc["summary"]["accepted"] == 2 and doc["summary"]["exposed"] is False
    later = _findings()
    apply_acceptances(later, settings.acceptances, today=dt.date(2027, 3, 2))  # comes back by itself
    again = Report(device={"hostname": "n"}, findings=later)
    assert again.verdict() == "EXPOSED" and len(again.failing("low")) == 2
    assert "accepted until 2027-03-01" in later[0].evidence["acceptance_ended"]
    assert "accepted" not in again.to_dict()["summary"]


def test_the_check_command_groups_accepted_findings_and_the_report_stays_valid(tmp_path, run_cli):
    root = str(QTS_TREES / "exposed")
    code, out, _ = run_cli("check", "--root", root, "--offline")
    assert code == 1 and "FAIL    high     myqnapcloud.upnp-forwarding" in out
    failing = [line.split()[2] for line in out.splitlines() if line.startswith("FAIL")]
    ini = tmp_path / "accept.ini"
    ini.write_text("[checks]\n" + "".join("%s = accept until 2099-12-31: lab box\n" % c for c in failing))
    code, out, _ = run_cli("check", "--root", root, "--offline", "--settings", str(ini))
    assert code == 0 and out.startswith("OK  "), out
    assert "Accepted risks" in out and "until 2099-12-31: lab box" in out
    code, raw, _ = run_cli("check", "--root", root, "--offline", "--settings", str(ini), "--json")
    doc = json.loads(raw)
    jsonschema.validate(doc, load_schema())
    assert doc["summary"]["accepted"] == len(failing) and all(f["accepted"]["reason"] == "lab box"
                                                              for f in doc["findings"] if f["status"] == "fail")
    ini.write_text("[checks]\n" + "".join("%s = accept until 2000-01-01: long ago\n" % c for c in failing))
    assert run_cli("check", "--root", root, "--offline", "--settings", str(ini))[0] == 1
