"""The real CLI and the real server process (uvicorn, 2 workers) with the real agent check-in code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from tests.support.paths import SRC
from tests.support.server import device_identity, make_report
from tests.support.serverproc import ServerProcess, cli, free_port

from exposure_guard import checkin
from exposure_guard.qts.identity import DeviceIdentity
from exposure_guard.settings import load_settings


def test_init_is_idempotent_and_prints_how_to_start(tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "data" / "eg.db")
    first = cli("init", "--db", url)
    assert "admin login created" in first.stdout and "first enrollment secret" in first.stdout
    assert "exposure-guard-server serve" in first.stdout
    second = cli("init", "--db", url)
    assert "already exists" in second.stdout and "1 active enrollment secret" in second.stdout


def test_following_inits_own_words_enrolls_and_checks_in(tmp_path: Path) -> None:
    """init's enroll line names the scheme `serve` speaks; the agent follows it and run --once says the
    check-in went through."""
    url = "sqlite:///%s" % (tmp_path / "eg.db")
    out = cli("init", "--db", url).stdout
    line = re.search(r"on each NAS: exposure-guard enroll --server (\S+) --secret (\S+)", out)
    assert line and line.group(1) == "http://THIS-SERVER:8443", out
    assert "https://THIS-SERVER:8443 once the server runs with --tls-cert" in out
    server = ServerProcess(url, free_port(), tmp_path / "server.log")
    server.start()
    try:
        root, state = Path(__file__).resolve().parents[1] / "fixtures/qts/hardened", tmp_path / "state"
        server_url = line.group(1).replace("THIS-SERVER:8443", "127.0.0.1:%d" % server.port)
        enrolled = agent_cli("enroll", "--server", server_url, "--secret", line.group(2), "--root", str(root),
                             "--state-dir", str(state))
        assert enrolled.returncode == 0, enrolled.stderr
        once = agent_cli("run", "--once", "--offline", "--root", str(root), "--state-dir", str(state))
        assert once.returncode == 0, once.stderr
        assert once.stdout.strip() == ("OK; check-in: 1 delivered, 0 already on the server, 0 rejected, "
                                       "0 waiting in the spool"), once.stdout
        https = agent_cli("enroll", "--server", server_url.replace("http://", "https://"), "--secret",
                          line.group(2), "--root", str(root), "--state-dir", str(tmp_path / "other"))
        assert https.returncode == 2 and "answers plain HTTP, not TLS: use %s" % server_url in https.stderr
    finally:
        server.stop()


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exposure_guard", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(SRC)))


def test_generated_admin_password_is_printed_once(tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "eg.db")
    out = cli("init", "--db", url, env={"EXPOSURE_GUARD_ADMIN_PASSWORD": ""}).stdout
    assert re.search(r"password \S{12,} \(shown once", out)


def test_enroll_secret_commands(tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "eg.db")
    cli("init", "--db", url)
    created = cli("enroll-secret", "create", "--db", url, "--name", "branch <1>")
    secret = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ege_[A-Za-z0-9_-]{30,}", secret)
    listing = cli("enroll-secret", "list", "--db", url).stdout
    assert "branch <1>" in listing and secret not in listing and "active" in listing
    assert cli("enroll-secret", "revoke", "--db", url, "branch <1>").returncode == 0
    assert "revoked" in cli("enroll-secret", "list", "--db", url).stdout
    missing = cli("enroll-secret", "revoke", "--db", url, "nope", check=False)
    assert missing.returncode == 2 and "no active enrollment secret" in missing.stderr


def test_commands_refuse_an_uninitialised_database(tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "new.db")
    for args in (["serve", "--listen", "127.0.0.1:1"], ["enroll-secret", "list"]):
        result = cli(*args, "--db", url, check=False)
        assert result.returncode == 2 and "exposure-guard-server init" in result.stderr
    bad = cli("serve", "--db", url, "--listen", "nonsense", check=False)
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr


@pytest.mark.slow
def test_agent_enrolls_and_checks_in_to_a_real_server(db_url: str, tmp_path: Path) -> None:
    cli("init", "--db", db_url)
    secret = cli("enroll-secret", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    token = cli("api-token", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    server = ServerProcess(db_url, free_port(), tmp_path / "server.log", workers=2)
    server.start()
    try:
        state = tmp_path / "state"
        ident = DeviceIdentity(**device_identity("qnap-e2e", hostname="e2e-nas"))
        message = checkin.enroll(server.url, secret, ident, state)
        assert "enrolled e2e-nas" in message
        docs = [make_report(ident.to_dict(), failing=["service.telnet"] if i % 2 else [],
                            generated_at="2024-01-01T00:00:%02dZ" % i) for i in range(6)]
        for doc in docs:
            checkin.spool_report(state, doc, 100)
        settings = load_settings(None, environ={"EXPOSURE_GUARD_SERVER_URL": server.url})
        result = checkin.deliver_spool(settings, state, deadline=30)
        assert result.ok and result.delivered == 6, result.summary()
        auth = {"Authorization": "Bearer " + token}
        device = requests.get(server.url + "/api/v1/devices/qnap-e2e", headers=auth, timeout=10).json()
        assert device["reports"] == 6 and device["verdict"] == "at_risk" and device["hostname"] == "e2e-nas"
        assert {h["report_id"] for h in device["history"]} == {d["report_id"] for d in docs}
        kinds = [t["kind"] for t in device["transitions"]]
        assert kinds.count("became_at_risk") == 3 and kinds.count("fixed") == 2
        # Wrong secret and revoked key give the agent clear errors.
        with pytest.raises(checkin.EnrollmentError, match="refused the enrollment secret"):
            checkin.enroll(server.url, "ege_wrong", ident, tmp_path / "other")
        (state / "node_key").write_text("egn_revoked_or_foreign_key_000000\n")
        checkin.spool_report(state, make_report(ident.to_dict()), 100)
        result = checkin.deliver_spool(settings, state, deadline=10)
        assert result.fatal and "re-enroll" in result.error and result.remaining == 1
        metrics = requests.get(server.url + "/metrics", headers=auth, timeout=10).text
        assert "exposure_guard_reports_stored_total 6" in metrics
    finally:
        server.stop()
