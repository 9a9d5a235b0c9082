"""Agent side of the check-in (exposure_guard.checkin) against a scripted HTTP server on 127.0.0.1.

Runs on Python 3.8 with only the agent's dependencies (no FastAPI here: the real server is exercised
in tests/server)."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import ssl
import stat
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from exposure_guard import checkin, spool
from exposure_guard.qts.identity import DeviceIdentity
from exposure_guard.settings import load_settings
from tests.support.net import HttpServer, free_port, make_cert
from tests.support.paths import QTS_TREES

IDENTITY = DeviceIdentity(device_id="qnap-abc123", hostname="NAS1", model="TS-453D", firmware="5.1.4.2596",
                          build="20231128", lan_addresses=["192.168.1.20"])


class FakeServer:
    """Answers each request with the next scripted (status, body); records what it received."""

    def __init__(self, tls_context: Optional[ssl.SSLContext] = None) -> None:
        self.script: List[Tuple[int, Dict[str, Any]]] = []
        self.default: Tuple[int, Dict[str, Any]] = (201, {"stored": True, "duplicate": False})
        self.requests: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "json": json.loads(body.decode("utf-8"))})
                    status, answer = fake.script.pop(0) if fake.script else fake.default
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = HttpServer(Handler, tls=tls_context)
        self.url = self.http.url

    def close(self) -> None:
        self.http.close()

    def checkin_ids(self) -> List[str]:
        return [r["json"]["report_id"] for r in self.requests if r["path"] == "/api/v1/checkin"]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    try:
        yield fake
    finally:
        fake.close()


def _settings(url: str, **extra: str) -> Any:
    env = {"EXPOSURE_GUARD_SERVER_URL": url}
    for key, value in extra.items():
        env["EXPOSURE_GUARD_" + key.upper()] = value
    return load_settings(None, environ=env)


def _report(generated_at: str, report_id: str = "") -> Dict[str, Any]:
    return {"schema": "exposure-guard/report/v1", "report_id": report_id or str(uuid.uuid4()),
            "generated_at": generated_at, "duration_ms": 1, "agent": {"version": "1", "python": "3", "mode": "report"},
            "device": IDENTITY.to_dict(), "findings": [], "changes": [],
            "summary": {"fail": 0, "pass": 0, "unknown": 0, "error": 0, "skipped": 0, "exposed": False}}


def _enrolled(state: Path, server: FakeServer) -> None:
    server.script.append((201, {"node_key": "egn_" + "k" * 40, "device_id": IDENTITY.device_id}))
    checkin.enroll(server.url, "ege_secret", IDENTITY, state)
    server.requests.clear()


class Sleeps:
    def __init__(self) -> None:
        self.delays: List[float] = []

    def __call__(self, delay: float) -> None:
        self.delays.append(delay)


# -- enrollment ----------------------------------------------------------------------------------------

def test_enroll_stores_node_key_0600(tmp_path: Path, server: FakeServer) -> None:
    server.script.append((201, {"node_key": "egn_" + "a" * 43, "device_id": IDENTITY.device_id,
                                "re_enrolled": False}))
    message = checkin.enroll(server.url + "/", "ege_secret", IDENTITY, tmp_path)
    assert "enrolled NAS1 (qnap-abc123)" in message and "\n" not in message
    key_file = tmp_path / "node_key"
    assert key_file.read_text().strip() == "egn_" + "a" * 43
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    sent = server.requests[0]
    assert sent["path"] == "/api/v1/enroll"
    assert sent["json"]["enroll_secret"] == "ege_secret" and sent["json"]["device"] == IDENTITY.to_dict()
    assert checkin.read_enrollment(tmp_path)["server_url"] == server.url
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_enroll_bad_secret(tmp_path: Path, server: FakeServer) -> None:
    server.script.append((401, {"detail": "invalid or revoked enrollment secret"}))
    with pytest.raises(checkin.EnrollmentError, match="refused the enrollment secret.*invalid or revoked"):
        checkin.enroll(server.url, "ege_wrong", IDENTITY, tmp_path)
    assert not (tmp_path / "node_key").exists()
    with pytest.raises(checkin.EnrollmentError, match="empty"):
        checkin.enroll(server.url, "  ", IDENTITY, tmp_path)


def test_enroll_unreachable_and_bad_url(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(checkin.ServerUnreachableError, match="cannot reach the server http://127.0.0.1:%d" % port):
        checkin.enroll("http://127.0.0.1:%d" % port, "ege_s", IDENTITY, tmp_path, timeout=5)
    with pytest.raises(checkin.CheckinError, match="not an http"):
        checkin.enroll("ftp://example", "ege_s", IDENTITY, tmp_path)


def test_enroll_rejects_non_exposureguard_answers(tmp_path: Path, server: FakeServer) -> None:
    server.script.append((200, {"hello": "world"}))
    with pytest.raises(checkin.EnrollmentError, match="without a node key"):
        checkin.enroll(server.url, "ege_s", IDENTITY, tmp_path)
    server.script.append((200, {"node_key": "../../etc/passwd\n"}))
    with pytest.raises(checkin.EnrollmentError, match="malformed node key"):
        checkin.enroll(server.url, "ege_s", IDENTITY, tmp_path)
    assert not (tmp_path / "node_key").exists()


@pytest.fixture
def tls_files(tmp_path: Path) -> Tuple[str, str]:
    if not shutil.which("openssl"):
        pytest.skip("openssl command not installed")
    return make_cert(tmp_path, "server", "/CN=127.0.0.1", san="IP:127.0.0.1")


def test_an_https_url_to_a_plain_http_server_says_so_and_is_a_usage_error(tmp_path: Path) -> None:
    fake = FakeServer()  # plain HTTP, as `exposure-guard-server serve` without --tls-cert
    try:
        wrong = fake.url.replace("http://", "https://")
        with pytest.raises(checkin.TLSVerificationError) as caught:
            checkin.enroll(wrong, "ege_s", IDENTITY, tmp_path / "state")
        assert "answers plain HTTP, not TLS: use %s" % fake.url in str(caught.value)
        assert caught.value.exit_code == 2 and "ca_file" not in str(caught.value)
        assert fake.requests == []  # nothing was sent in the clear
    finally:
        fake.close()


def test_tls_verified_by_default_and_custom_ca(tmp_path: Path, tls_files: Tuple[str, str]) -> None:
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake = FakeServer(tls_context=context)
    try:
        state = tmp_path / "state"
        with pytest.raises(checkin.TLSVerificationError, match="ca_file"):
            checkin.enroll(fake.url, "ege_s", IDENTITY, state)
        fake.script.append((201, {"node_key": "egn_" + "t" * 40}))
        assert "enrolled" in checkin.enroll(fake.url, "ege_s", IDENTITY, state, ca_file=cert)
        # Delivery: verification on by default → fatal TLS error, report kept; with the CA it goes through.
        checkin.spool_report(state, _report("2024-01-01T00:00:00Z"), 10)
        result = checkin.deliver_spool(_settings(fake.url), state, deadline=10)
        assert result.fatal and "TLS verification" in result.error and result.remaining == 1
        result = checkin.deliver_spool(_settings(fake.url, server_ca_file=cert), state, deadline=10)
        assert result.delivered == 1 and result.remaining == 0 and result.ok
        with pytest.raises(checkin.CheckinError, match="does not exist"):
            checkin.enroll(fake.url, "ege_s", IDENTITY, state, ca_file=str(tmp_path / "missing.pem"))
    finally:
        fake.close()


# -- spool ---------------------------------------------------------------------------------------------

def test_spool_orders_by_generation_time_and_is_idempotent(tmp_path: Path) -> None:
    late = _report("2024-01-02T00:00:00Z")
    early = _report("2024-01-01T23:00:00-02:00")  # 2024-01-02T01:00Z: after `late`
    earliest = _report("2023-12-31T23:59:59.5Z")
    for doc in (late, early, earliest):
        path = checkin.spool_report(tmp_path, doc, 100)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    names = [p.name for p in checkin.spooled_files(tmp_path)]
    assert [n.split("-", 2)[2][:-5] for n in names] == [earliest["report_id"], late["report_id"], early["report_id"]]
    assert checkin.spool_report(tmp_path, late, 100).name == names[1]
    assert len(checkin.spooled_files(tmp_path)) == 3
    same_time = [_report("2024-01-03T00:00:00Z") for _ in range(3)]
    for doc in same_time:
        checkin.spool_report(tmp_path, doc, 100)
    tail = [p.name.split("-", 2)[2][:-5] for p in checkin.spooled_files(tmp_path)][-3:]
    assert tail == [d["report_id"] for d in same_time]  # same instant: spool order
    assert json.loads(checkin.spooled_files(tmp_path)[0].read_text()) == earliest


def test_spool_is_bounded_with_a_counted_warning(tmp_path: Path, caplog: Any) -> None:
    docs = [_report("2024-01-01T00:00:%02dZ" % i) for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="exposure_guard.checkin"):
        for doc in docs:
            checkin.spool_report(tmp_path, doc, 3)
    kept = [p.name.split("-", 2)[2][:-5] for p in checkin.spooled_files(tmp_path)]
    assert kept == [d["report_id"] for d in docs[2:]]
    assert checkin.dropped_count(tmp_path) == 2
    warnings = [r.getMessage() for r in caplog.records if "spool full" in r.getMessage()]
    assert len(warnings) == 2 and "2 dropped in total" in warnings[-1]


def test_spool_refuses_reports_without_id(tmp_path: Path) -> None:
    doc = _report("2024-01-01T00:00:00Z")
    doc["report_id"] = "../../evil"
    with pytest.raises(checkin.CheckinError):
        checkin.spool_report(tmp_path, doc, 10)


# -- delivery ------------------------------------------------------------------------------------------

def test_delivers_in_order_and_deletes_only_after_2xx(tmp_path: Path, server: FakeServer) -> None:
    _enrolled(tmp_path, server)
    docs = [_report("2024-01-01T00:00:%02dZ" % i) for i in (3, 1, 2)]
    for doc in docs:
        checkin.spool_report(tmp_path, doc, 100)
    server.script += [(201, {"duplicate": False}), (200, {"duplicate": True}), (201, {})]
    result = checkin.deliver_spool(_settings(server.url, agent_interval="15m"), tmp_path, deadline=10)
    assert result.ok and result.delivered == 2 and result.duplicates == 1 and result.remaining == 0
    assert server.checkin_ids() == [docs[1]["report_id"], docs[2]["report_id"], docs[0]["report_id"]]
    headers = server.requests[0]["headers"]
    assert headers["Authorization"] == "Bearer egn_" + "k" * 40
    assert headers["Content-Encoding"] == "gzip" and headers["X-ExposureGuard-Interval"] == "900"
    assert checkin.spooled_files(tmp_path) == []


def test_5xx_and_outages_are_retried_with_backoff(tmp_path: Path, server: FakeServer) -> None:
    _enrolled(tmp_path, server)
    docs = [_report("2024-01-01T00:00:0%dZ" % i) for i in range(2)]
    for doc in docs:
        checkin.spool_report(tmp_path, doc, 100)
    server.script += [(500, {"detail": "db down"}), (503, {}), (429, {}), (201, {}), (201, {})]
    sleeps = Sleeps()
    result = checkin.deliver_spool(_settings(server.url), tmp_path, deadline=120, sleep=sleeps)
    assert result.ok and result.delivered == 2 and result.attempts == 5
    assert server.checkin_ids() == [docs[0]["report_id"]] * 4 + [docs[1]["report_id"]]
    assert len(sleeps.delays) == 3
    assert 0.5 <= sleeps.delays[0] <= 1 and 1 <= sleeps.delays[1] <= 2 and 2 <= sleeps.delays[2] <= 4


def test_deadline_keeps_undelivered_reports(tmp_path: Path, server: FakeServer) -> None:
    _enrolled(tmp_path, server)
    checkin.spool_report(tmp_path, _report("2024-01-01T00:00:00Z"), 100)
    checkin.spool_report(tmp_path, _report("2024-01-01T00:00:01Z"), 100)
    server.default = (502, {"detail": "bad gateway"})
    result = checkin.deliver_spool(_settings(server.url), tmp_path, deadline=3, sleep=lambda s: None)
    assert not result.ok and result.remaining == 2 and result.delivered == 0
    assert "HTTP 502" in result.error and not result.fatal
    # Ordered delivery: never skipped ahead to the second report.
    assert set(server.checkin_ids()) == {checkin.spooled_files(tmp_path)[0].name.split("-", 2)[2][:-5]}


def test_401_asks_to_re_enroll_and_keeps_reports(tmp_path: Path, server: FakeServer) -> None:
    _enrolled(tmp_path, server)
    checkin.spool_report(tmp_path, _report("2024-01-01T00:00:00Z"), 100)
    server.script.append((401, {"detail": "unknown node key: enroll this device again"}))
    result = checkin.deliver_spool(_settings(server.url), tmp_path, deadline=10)
    assert result.fatal and "re-enroll" in result.error and "exposure-guard enroll --server" in result.error
    assert result.remaining == 1 and result.attempts == 1


def test_413_and_422_set_that_report_aside_and_continue(tmp_path: Path, server: FakeServer) -> None:
    _enrolled(tmp_path, server)
    docs = [_report("2024-01-01T00:00:0%dZ" % i) for i in range(3)]
    for doc in docs:
        checkin.spool_report(tmp_path, doc, 100)
    # 413 twice: the full report, then its reduced form (test_report_size.py covers a reduced form accepted)
    server.script += [(413, {"detail": "body is larger than 1048576 bytes"}), (413, {"detail": "still too large"}),
                      (422, {"detail": "bad"}), (201, {})]
    result = checkin.deliver_spool(_settings(server.url), tmp_path, deadline=10)
    assert result.delivered == 1 and result.rejected == 2 and result.remaining == 0
    assert any("too large (HTTP 413" in m for m in result.messages)
    rejected = sorted(p.name for p in (tmp_path / "spool" / "rejected").iterdir())
    assert len([n for n in rejected if n.endswith(".json")]) == 2
    assert any(n.endswith(".reason") for n in rejected)


def test_not_enrolled_and_no_server(tmp_path: Path, server: FakeServer) -> None:
    checkin.spool_report(tmp_path, _report("2024-01-01T00:00:00Z"), 100)
    result = checkin.deliver_spool(_settings(server.url), tmp_path, deadline=5)
    assert result.fatal and "not enrolled" in result.error and result.remaining == 1
    result = checkin.deliver_spool(_settings(""), tmp_path, deadline=5)
    assert result.fatal and "no check-in server" in result.error
    assert server.requests == []


def test_corrupt_spool_file_is_set_aside(tmp_path: Path, server: FakeServer) -> None:
    _enrolled(tmp_path, server)
    path = checkin.spool_report(tmp_path, _report("2024-01-01T00:00:00Z"), 100)
    path.write_bytes(b"{torn")
    good = _report("2024-01-01T00:00:01Z")
    checkin.spool_report(tmp_path, good, 100)
    result = checkin.deliver_spool(_settings(server.url), tmp_path, deadline=10)
    assert result.rejected == 1 and result.delivered == 1
    assert server.checkin_ids() == [good["report_id"]]


def test_second_deliverer_backs_off(tmp_path: Path, server: FakeServer) -> None:
    _enrolled(tmp_path, server)
    checkin.spool_report(tmp_path, _report("2024-01-01T00:00:00Z"), 100)
    with spool.spool_lock(tmp_path) as got:
        assert got
        result = checkin.deliver_spool(_settings(server.url), tmp_path, deadline=5)
    assert "another delivery" in result.error and result.remaining == 1 and server.requests == []


def test_backoff_delay_grows_and_is_capped(rng) -> None:
    for attempt in range(12):
        delay = checkin.backoff_delay(attempt, rng=rng)
        ceiling = min(checkin.MAX_BACKOFF, 2 ** attempt)
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay, rng.replay)
    assert os.name == "posix"


def test_daemon_checks_in_after_enroll_without_server_in_settings(tmp_path: Path, server: FakeServer) -> None:
    """`enroll --server URL` then `run`: the daemon delivers each cycle's report to the enrolled server."""
    from exposure_guard.daemon import Daemon
    from exposure_guard.qts.root import QtsRoot

    state = tmp_path / "state"
    _enrolled(state, server)
    daemon = Daemon(QtsRoot(QTS_TREES / "hardened"), load_settings(None, environ={}), state, offline=True)
    assert daemon.run_once_locked() == 0
    sent = [r for r in server.requests if r["path"] == "/api/v1/checkin"]
    assert len(sent) == 1
    last = json.loads((state / "last-report.json").read_text())
    assert sent[0]["json"]["report_id"] == last["report_id"]
    assert not list((state / "spool").glob("*.json"))  # delivered, so removed from the spool
