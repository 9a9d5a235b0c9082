"""Issue 15 item 1: the fleet-wide enrollment secret must not let anyone take over an enrolled device.

Re-enrolling a known device id needs proof (the device's current node key) or an operator's approval; until
then the device's key keeps working, a transition (and its webhook) says what happened, and the answer to
the enrollment does not tell whether the id was known — on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from typing import Any, Dict, Optional

import pytest
import requests
from sqlalchemy import insert, select
from tests.support.server import Api, device_identity, make_report
from tests.support.serverproc import ServerProcess, cli, free_port

from exposure_guard import checkin
from exposure_guard.qts.identity import DeviceIdentity
from exposure_guard.settings import load_settings
from exposure_guard_server.db import models as m


def _enroll(api: Api, device: Dict[str, Any], previous_key: Optional[str] = None) -> Any:
    body: Dict[str, Any] = {"enroll_secret": api.secret, "device": device}
    if previous_key is not None:
        body["previous_node_key"] = previous_key
    return api.client.post("/api/v1/enroll", json=body)


def _device(api: Api, device_id: str) -> Dict[str, Any]:
    response = api.client.get("/api/v1/devices/" + device_id, headers=api.auth)
    assert response.status_code == 200, response.text
    return response.json()


def _add_webhook(api: Api) -> int:
    """A webhook row straight in the table: what matters here is that a transition queues a delivery."""
    with api.server.engine.begin() as conn:
        return conn.execute(insert(m.webhooks).values(
            name="soc", url="https://hooks.example/eg", secret="s" * 32, events="*", enabled=True,
            created_at=time.time()).returning(m.webhooks.c.id)).scalar_one()


def _queued_events(api: Api) -> list:
    with api.server.engine.connect() as conn:
        return list(conn.execute(select(m.webhook_deliveries.c.event).order_by(m.webhook_deliveries.c.id)).scalars())


def test_reenroll_without_proof_does_not_revoke_the_devices_key(api: Api) -> None:
    _add_webhook(api)
    victim = device_identity("qnap-victim", hostname="real-nas")
    real_key = api.enroll_key(victim)
    assert api.checkin(real_key, make_report(victim, failing=["service.telnet"])).status_code == 201

    # The attacker knows the secret and computes the device id; the answer looks like any enrollment.
    forged = _enroll(api, device_identity("qnap-victim", hostname="attacker"))
    assert forged.status_code == 201, forged.text
    attacker_key = forged.json()["node_key"]

    # The real NAS keeps reporting; the attacker's key is not accepted (its all-pass report changes nothing).
    assert api.checkin(real_key, make_report(victim, failing=["service.telnet"])).status_code == 201
    refused = api.checkin(attacker_key, make_report(device_identity("qnap-victim", hostname="attacker")))
    assert refused.status_code == 401 and "approv" in refused.json()["detail"]
    detail = _device(api, "qnap-victim")
    assert detail["verdict"] == "at_risk" and detail["hostname"] == "real-nas" and detail["reports"] == 2
    kinds = [t["kind"] for t in detail["transitions"]]
    assert "fixed" not in kinds and kinds[0] == "re_enroll_pending"
    assert "re_enroll_pending" in _queued_events(api)  # the webhook hears of it


def test_enroll_answer_does_not_tell_whether_the_id_exists(api: Api) -> None:
    api.enroll_key(device_identity("qnap-known"))
    known = _enroll(api, device_identity("qnap-known"))
    unknown = _enroll(api, device_identity("qnap-never-seen"))
    wrong_proof = _enroll(api, device_identity("qnap-known"), previous_key="egn_" + "x" * 43)
    assert known.status_code == unknown.status_code == wrong_proof.status_code == 201
    shapes = [sorted(r.json()) for r in (known, unknown, wrong_proof)]
    assert shapes[0] == shapes[1] == shapes[2]
    for response in (known, unknown, wrong_proof):
        body = response.json()
        assert re.fullmatch(r"egn_[A-Za-z0-9_-]{40,}", body["node_key"])
        assert body["re_enrolled"] is False
    assert known.json()["device_id"] == "qnap-known" and unknown.json()["device_id"] == "qnap-never-seen"


def test_reenroll_with_the_current_node_key_rotates_it(api: Api) -> None:
    _add_webhook(api)
    dev = device_identity("qnap-rotate", hostname="old-name")
    old_key = api.enroll_key(dev)
    again = _enroll(api, device_identity("qnap-rotate", hostname="new-name"), previous_key=old_key)
    assert again.status_code == 201 and again.json()["re_enrolled"] is True
    new_key = again.json()["node_key"]
    doc = make_report(device_identity("qnap-rotate", hostname="new-name"))
    assert api.checkin(old_key, doc).status_code == 401
    assert api.checkin(new_key, doc).status_code == 201
    detail = _device(api, "qnap-rotate")
    assert detail["hostname"] == "new-name"
    rotated = [t for t in detail["transitions"] if t["kind"] == "re_enrolled"]
    assert len(rotated) == 1 and rotated[0]["detail"]["proof"] == "node_key"
    assert "re_enrolled" in _queued_events(api)


def test_operator_approves_a_pending_reenrollment_in_the_dashboard(api: Api) -> None:
    dev = device_identity("qnap-lost-key", hostname="lost-key-nas")
    old_key = api.enroll_key(dev)
    pending_key = _enroll(api, dev).json()["node_key"]
    api.login()
    page = api.client.get("/admin")
    assert "qnap-lost-key" in page.text and "lost-key-nas" in page.text
    request_id = int(re.search(r'action="/admin/re-enroll/(\d+)/approve"', page.text).group(1))
    # The form needs its CSRF token like every other.
    assert api.client.post("/admin/re-enroll/%d/approve" % request_id, data={"csrf": "forged"}).status_code == 403
    assert api.checkin(pending_key, make_report(dev)).status_code == 401
    approved = api.client.post("/admin/re-enroll/%d/approve" % request_id, data={"csrf": api.csrf()},
                               follow_redirects=False)
    assert approved.status_code == 303
    assert api.checkin(old_key, make_report(dev)).status_code == 401
    assert api.checkin(pending_key, make_report(dev)).status_code == 201
    rotated = [t for t in _device(api, "qnap-lost-key")["transitions"] if t["kind"] == "re_enrolled"]
    assert len(rotated) == 1 and rotated[0]["detail"]["proof"] == "approved" and rotated[0]["detail"]["by"] == "admin"
    assert "qnap-lost-key" not in api.client.get("/admin").text.split("Re-enrollments")[1].split("</section>")[0]


def test_operator_rejects_a_pending_reenrollment(api: Api) -> None:
    dev = device_identity("qnap-reject")
    real_key = api.enroll_key(dev)
    forged_key = _enroll(api, dev).json()["node_key"]
    pending = api.server.enrollment.pending()
    assert [p["device_id"] for p in pending] == ["qnap-reject"]
    api.login()
    rejected = api.client.post("/admin/re-enroll/%d/reject" % pending[0]["id"], data={"csrf": api.csrf()},
                               follow_redirects=False)
    assert rejected.status_code == 303
    assert api.server.enrollment.pending() == []
    assert api.checkin(forged_key, make_report(dev)).status_code == 401
    assert api.checkin(real_key, make_report(dev)).status_code == 201
    # Approving what is gone is a clear 404, not a 500.
    gone = api.client.post("/admin/re-enroll/%d/approve" % pending[0]["id"], data={"csrf": api.csrf()})
    assert gone.status_code == 404


def test_pending_requests_per_device_are_bounded(api: Api) -> None:
    dev = device_identity("qnap-spam")
    api.enroll_key(dev)
    for _ in range(12):
        assert _enroll(api, dev).status_code == 201
    assert len([p for p in api.server.enrollment.pending() if p["device_id"] == "qnap-spam"]) <= 5


def _request_ids(db_url: str, device_id: str) -> list:
    listing = cli("re-enroll", "list", "--db", db_url).stdout
    return [line.split()[0] for line in listing.splitlines()[1:] if device_id in line]


@pytest.mark.slow
def test_the_agent_proves_itself_and_a_takeover_waits_for_the_operator(db_url: str, tmp_path: Any) -> None:
    """End to end: the agent's own enroll and delivery code against the real server and CLI."""
    cli("init", "--db", db_url)
    secret = cli("enroll-secret", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    token = cli("api-token", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    server = ServerProcess(db_url, free_port(), tmp_path / "server.log")
    server.start()
    try:
        settings = load_settings(None, environ={"EXPOSURE_GUARD_SERVER_URL": server.url})
        real = DeviceIdentity(**device_identity("qnap-e2e-takeover", hostname="real-nas"))
        nas = tmp_path / "nas"
        checkin.enroll(server.url, secret, real, nas)
        first_key = checkin.read_node_key(nas)
        # The NAS enrolls again: it sends its key as proof, so the key is replaced at once.
        assert "enrolled again" in checkin.enroll(server.url, secret, real, nas)
        assert checkin.read_node_key(nas) != first_key

        # Someone else with the secret enrolls the same device id.
        evil = DeviceIdentity(**device_identity("qnap-e2e-takeover", hostname="evil"))
        attacker = tmp_path / "attacker"
        checkin.enroll(server.url, secret, evil, attacker)
        checkin.spool_report(nas, make_report(real.to_dict(), failing=["service.telnet"]), 100)
        assert checkin.deliver_spool(settings, nas, deadline=30).delivered == 1
        checkin.spool_report(attacker, make_report(evil.to_dict()), 100)
        refused = checkin.deliver_spool(settings, attacker, deadline=10)
        assert refused.fatal and "approval" in refused.error and refused.remaining == 1
        assert "enroll --server" not in refused.error  # enrolling again would file yet another request
        auth = {"Authorization": "Bearer " + token}
        device = requests.get(server.url + "/api/v1/devices/qnap-e2e-takeover", headers=auth, timeout=10).json()
        assert device["verdict"] == "at_risk" and device["hostname"] == "real-nas"
        assert {"re_enroll_pending", "re_enrolled"} <= {t["kind"] for t in device["transitions"]}
        (request_id,) = _request_ids(db_url, "qnap-e2e-takeover")
        cli("re-enroll", "reject", "--db", db_url, request_id)
        assert checkin.deliver_spool(settings, attacker, deadline=10).fatal

        # The NAS loses its state folder: its enrollment waits until the operator approves it.
        wiped = tmp_path / "wiped"
        checkin.enroll(server.url, secret, real, wiped)
        checkin.spool_report(wiped, make_report(real.to_dict()), 100)
        assert checkin.deliver_spool(settings, wiped, deadline=10).fatal
        (request_id,) = _request_ids(db_url, "qnap-e2e-takeover")
        assert "approved" in cli("re-enroll", "approve", "--db", db_url, request_id).stdout
        assert checkin.deliver_spool(settings, wiped, deadline=30).delivered == 1
        checkin.spool_report(nas, make_report(real.to_dict()), 100)
        assert checkin.deliver_spool(settings, nas, deadline=10).fatal  # the key it had is replaced
        bad = cli("re-enroll", "approve", "--db", db_url, "99999999999999999999", check=False)
        assert bad.returncode == 2 and "ID must be" in bad.stderr
    finally:
        server.stop()


def test_pending_reenrollments_through_the_api(api: Api) -> None:
    dev = device_identity("qnap-api")
    api.enroll_key(dev)
    pending_key = _enroll(api, dev).json()["node_key"]
    listed = api.client.get("/api/v1/re-enroll", headers=api.auth).json()["pending"]
    assert [p["device_id"] for p in listed] == ["qnap-api"] and listed[0]["client"] == "testclient"
    assert api.client.get("/api/v1/re-enroll").status_code == 401
    for bad in ("99999999999999999999", "¹", "x"):
        assert api.client.post("/api/v1/re-enroll/%s/approve" % bad, headers=api.auth).status_code == 400
    assert api.client.post("/api/v1/re-enroll/%d/steal" % listed[0]["id"], headers=api.auth).status_code == 404
    approved = api.client.post("/api/v1/re-enroll/%d/approve" % listed[0]["id"], headers=api.auth)
    assert approved.status_code == 200 and approved.json()["device_id"] == "qnap-api"
    assert api.checkin(pending_key, make_report(dev)).status_code == 201
    assert api.client.get("/api/v1/re-enroll", headers=api.auth).json()["pending"] == []


def test_concurrent_first_enrollments_of_one_id(api: Api) -> None:
    """Two enrollments of a new id at once: one enrolls it, the other waits for approval; neither is a 500."""
    from concurrent.futures import ThreadPoolExecutor

    from exposure_guard_server.errors import ApiError

    def enroll(i: int) -> str:
        try:
            api.server.enrollment.enroll({"enroll_secret": api.secret, "device": device_identity("qnap-race")},
                                         client="10.0.0.%d" % i)
            return "ok"
        except ApiError as exc:
            return str(exc.status)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(enroll, range(8)))
    assert all(o in ("ok", "503") for o in outcomes) and outcomes.count("ok") >= 7, outcomes
    assert api.count("devices") == 1
    assert len(api.server.enrollment.pending()) == min(5, outcomes.count("ok") - 1)


def test_the_agent_sends_its_key_only_to_the_server_it_enrolled_with(tmp_path: Any) -> None:
    """Two recording servers on loopback: the key from server A is proof for A and never reaches B."""
    import json as _json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            bodies.append((self.server.server_address[1],
                           _json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            answer = _json.dumps({"node_key": "egn_" + "k" * 40 + str(len(bodies)), "device_id": "qnap-two",
                                  "re_enrolled": False}).encode()
            self.send_response(201)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url_a, url_b = ["http://127.0.0.1:%d" % srv.server_address[1] for srv in servers]
        ident = DeviceIdentity(**device_identity("qnap-two"))
        state = tmp_path / "state"
        checkin.enroll(url_a, "ege_a", ident, state)
        key_a = checkin.read_node_key(state)
        checkin.enroll(url_a, "ege_a", ident, state)  # again with A: the key is the proof
        checkin.enroll(url_b, "ege_b", ident, state)  # another server: no key of A's
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()
    sent = [body.get("previous_node_key") for _port, body in bodies]
    assert sent == [None, key_a, None]


def test_waiting_reenrollments_are_shown_on_the_fleet_page_and_in_metrics(api: Api) -> None:
    dev = device_identity("qnap-notice")
    api.enroll_key(dev)
    api.login()
    assert "wait for approval" not in api.client.get("/").text
    _enroll(api, dev)
    page = api.client.get("/").text
    assert 'href="/admin#re-enrollments"' in page and "1 re-enrollment" in page
    assert api.client.get("/api/v1/summary", headers=api.auth).json()["reenrollments_pending"] == 1
    assert "exposure_guard_reenrollments_pending 1" in api.client.get("/metrics", headers=api.auth).text


def test_a_proven_reenrollment_drops_requests_filed_without_proof(api: Api) -> None:
    """Once the device proves itself, a waiting request (someone else's, or a stale one) cannot be approved
    by mistake any more."""
    dev = device_identity("qnap-proven")
    key = api.enroll_key(dev)
    forged_key = _enroll(api, dev).json()["node_key"]
    proven = _enroll(api, dev, previous_key=key)
    assert proven.json()["re_enrolled"] is True
    assert api.server.enrollment.pending() == []
    assert api.checkin(forged_key, make_report(dev)).status_code == 401
    rotated = [t for t in _device(api, "qnap-proven")["transitions"] if t["kind"] == "re_enrolled"]
    assert rotated[0]["detail"]["dropped_requests"] == 1
