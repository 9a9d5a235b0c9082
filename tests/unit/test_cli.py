"""The CLI contract (README "Using the agent on a NAS"): commands, JSON report v1 against its schema, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest

from exposure_guard.report import load_schema
from tests.support.paths import QTS_TREES, SRC


def validate(document):
    jsonschema.Draft202012Validator(load_schema()).validate(document)


@pytest.mark.parametrize("tree", ["exposed", "hardened", "factory-default", "nasty"])
def test_json_report_matches_schema(run_cli, tree):
    code, out, _ = run_cli("check", "--root", str(QTS_TREES / tree), "--offline", "--json")
    document = json.loads(out)  # exactly one document
    validate(document)
    assert document["schema"] == "exposure-guard/report/v1"
    assert document["summary"]["fail"] == sum(f["status"] == "fail" for f in document["findings"])
    assert document["agent"]["mode"] == "report"
    assert code == (0 if tree == "hardened" else 1)


def test_report_document_fields(run_cli):
    _, out, _ = run_cli("check", "--root", str(QTS_TREES / "exposed"), "--offline", "--json")
    doc = json.loads(out)
    assert doc["device"]["hostname"] == "NAS-OFFICE" and doc["device"]["model"] == "TS-453D"
    assert doc["device"]["firmware"] == "5.0.0.1850" and doc["device"]["build"] == "20211130"
    assert doc["device"]["lan_addresses"] == ["192.168.1.20"]
    assert doc["device"]["device_id"].startswith("qnap-")
    upnp = next(f for f in doc["findings"] if f["id"] == "myqnapcloud.upnp-forwarding")
    assert upnp["fixable"] is True and upnp["fixed"] is False and upnp["references"]


def test_schema_rejects_bad_documents(run_cli):
    _, out, _ = run_cli("check", "--root", str(QTS_TREES / "exposed"), "--offline", "--json")
    doc = json.loads(out)
    doc["findings"][0]["status"] = "bad"
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_fail_on_threshold(run_cli):
    root = str(QTS_TREES / "factory-default")
    only = ("--only", "admin.default-ports,upnp.nas-discovery")  # medium and low failures
    assert run_cli("check", "--root", root, "--offline", *only)[0] == 1
    assert run_cli("check", "--root", root, "--offline", *only, "--fail-on", "medium")[0] == 1
    assert run_cli("check", "--root", root, "--offline", *only, "--fail-on", "high")[0] == 0


def test_human_output_has_verdict_and_no_colour_when_not_a_tty(run_cli):
    code, out, _ = run_cli("check", "--root", str(QTS_TREES / "exposed"), "--offline")
    assert out.startswith("AT RISK  NAS-OFFICE")
    assert "\033[" not in out
    assert "FAIL    high     myqnapcloud.upnp-forwarding" in out


def test_terminal_escapes_from_device_strings_are_neutralised(run_cli, qts_tree):
    root = qts_tree("hardened")
    conf = root / "etc/config/uLinux.conf"
    conf.write_bytes(conf.read_bytes().replace(b"NAS-HARDENED", b"EVIL\x1b[2J\x1b]0;pwned\x07"))
    _, out, _ = run_cli("check", "--root", str(root), "--offline")
    assert "\x1b" not in out and "\x07" not in out


def test_usage_errors_exit_2(run_cli, tmp_path):
    assert run_cli("check", "--root", str(tmp_path / "nope"))[0] == 2
    code, _, err = run_cli("check", "--root", str(QTS_TREES / "exposed"), "--only", "no.such")
    assert code == 2 and "unknown check id" in err
    bad = tmp_path / "bad.ini"
    bad.write_text("[agent]\nmode = maybe\n")
    code, _, err = run_cli("check", "--root", str(QTS_TREES / "exposed"), "--settings", str(bad))
    assert code == 2 and "%s:2:" % bad in err and "allowed" in err
    assert run_cli("explain", "nope")[0] == 2
    assert run_cli("frobnicate")[0] == 2
    assert run_cli()[0] == 2


def test_internal_error_exits_3_without_traceback(run_cli, monkeypatch):
    import exposure_guard.core as core

    def boom(*a, **k):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(core, "check_once", boom)
    code, _, err = run_cli("check", "--root", str(QTS_TREES / "exposed"), "--offline")
    assert code == 3 and "internal error: unexpected" in err and "Traceback" not in err


def test_checks_and_explain(run_cli):
    code, out, _ = run_cli("checks", "--json")
    catalogue = json.loads(out)
    ids = [c["id"] for c in catalogue]
    assert code == 0 and len(ids) == len(set(ids)) >= 16
    assert {c["id"] for c in catalogue if c["fixable"]} >= {"myqnapcloud.upnp-forwarding", "service.telnet"}
    assert ids.index("router.upnp-mappings") < ids.index("reachability.admin")  # router feeds reachability
    code, out, _ = run_cli("explain", "service.telnet")
    assert code == 0 and "TELNET Enable (TRUE/FALSE, default FALSE)" in out and "How to fix it by hand" in out
    code, out, _ = run_cli("explain", "account.default-admin")  # a check whose input is not published
    assert code == 0 and "How to confirm" in out


def test_demo_runs_without_network_or_root(run_cli):
    code, out, _ = run_cli("demo")
    assert code == 0
    assert "AT RISK  NAS-OFFICE" in out
    assert "[myqnapcloud.upnp-forwarding] /etc/config/upnpc.conf [UPnP_Global] Enable: TRUE → FALSE" in out


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "exposure_guard", "checks"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(SRC)), timeout=60)
    assert proc.returncode == 0 and "service.telnet" in proc.stdout
