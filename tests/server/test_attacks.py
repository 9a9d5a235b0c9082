"""Issue 15 items 2, 3 and 15 on the server: forged report dates, parallel password guessing, /metrics behind
a proxy, the session cookie over HTTPS, the SQLite file's mode and the CSV formula guard."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from tests.support.server import Api, device_identity, make_report

from exposure_guard_server.errors import ApiError


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- item 2: a report dated far ahead ---------------------------------------------------------------------

def test_a_report_dated_2099_does_not_stay_latest(api: Api) -> None:
    import time

    dev = device_identity("dev-clock")
    key = api.enroll_key(dev)
    future = make_report(dev, generated_at="2099-01-01T00:00:00Z")  # all pass
    assert api.checkin(key, future).status_code == 201
    # A genuine report made after it arrived (report dates have whole seconds: one second on) is the latest.
    genuine = make_report(dev, failing=["service.telnet"], generated_at=_iso(time.time() + 1))
    response = api.checkin(key, genuine)
    assert response.status_code == 201 and response.json()["latest"] is True
    detail = api.client.get("/api/v1/devices/dev-clock", headers=api.auth).json()
    assert detail["verdict"] == "at_risk"
    assert [h["report_id"] for h in detail["history"]] == [genuine["report_id"], future["report_id"]]
    assert detail["clock_skew_s"] <= 1
    # While the 2099 report was the latest, the device showed how far ahead its clock was.
    other = device_identity("dev-clock-2")
    assert api.checkin(api.enroll_key(other), make_report(other, generated_at="2099-01-01T00:00:00Z")).status_code == 201
    ahead = api.client.get("/api/v1/devices/dev-clock-2", headers=api.auth).json()
    assert ahead["clock_skew_s"] > 60 * 365 * 86400 and ahead["clock_skew_allowed_s"] == 300


def test_the_device_page_shows_the_clock_skew(api: Api) -> None:
    import time

    dev = device_identity("dev-skew")
    key = api.enroll_key(dev)
    assert api.checkin(key, make_report(dev, generated_at=_iso(time.time() + 7200))).status_code == 201
    api.login()
    page = api.client.get("/devices/dev-skew").text
    assert re.search(r"clock is (about )?2 h(ours)? ahead|clock is 7[12]\d\d s ahead", page), page


def test_migration_reorders_reports_stored_with_a_future_date(engine: object) -> None:
    """A database that stored a 2099 report before the fix: after migrating, the next report is the latest."""
    from alembic import command
    from sqlalchemy import text

    from exposure_guard_server import db
    from exposure_guard_server.db.schema import alembic_config

    with engine.connect() as conn:  # type: ignore[attr-defined]
        command.downgrade(alembic_config(conn), "0002")
        conn.commit()
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("INSERT INTO devices (id, device_id, node_key_hash, enrolled_at, hostname, model, firmware, "
                          "build, lan_addresses, agent_version, interval_s, last_generated_at, last_report_pk, "
                          "verdict, risk, fail_count, failing, stale_base, stale, report_count) VALUES (1, 'd', 'h', "
                          "0, '', '', '', '', '[]', '', 3600, 4070908800, 1, 'ok', 1, 0, '[]', 0, false, 1)"))
        conn.execute(text("INSERT INTO reports (id, report_id, device_pk, generated_at, received_at, verdict, "
                          "fail_count, body_sha256, body) VALUES (1, 'r', 1, 4070908800, 1700000000, 'ok', 0, 's', :b)"),
                     {"b": b"x"})
    db.migrate(engine)  # type: ignore[arg-type]
    with engine.connect() as conn:  # type: ignore[attr-defined]
        assert conn.execute(text("SELECT last_generated_at FROM devices")).scalar() == 1700000000
        assert conn.execute(text("SELECT generated_at FROM reports")).scalar() == 1700000000


# -- item 3: parallel password guessing -------------------------------------------------------------------

def _guess_in_parallel(admins: list, attempts: int) -> list:
    from concurrent.futures import ThreadPoolExecutor

    from exposure_guard_server.errors import ApiError

    def guess(i: int) -> str:
        try:
            return "ok" if admins[i % len(admins)].login("admin", "wrong password %d" % i, "203.0.113.7") else "401"
        except ApiError as exc:
            return str(exc.status)

    with ThreadPoolExecutor(attempts) as pool:
        return list(pool.map(guess, range(attempts)))


def test_parallel_wrong_passwords_reach_429(api: Api) -> None:
    outcomes = _guess_in_parallel([api.admin], 40)
    assert outcomes.count("401") <= 10 and outcomes.count("429") >= 30, outcomes
    # The right password from that address waits for the window too; another address is not affected.
    try:
        api.admin.login("admin", "correct horse battery", "203.0.113.7")
        raise AssertionError("the throttled address got in")
    except ApiError as exc:
        assert exc.status == 429
    assert api.admin.login("admin", "correct horse battery", "198.51.100.1") is not None


def test_the_login_count_is_shared_by_server_processes(api: Api, db_url: str) -> None:
    """Two server processes (two engines, two Admin objects) on one database share one count."""
    from tests.support.server import Admin, make_engine

    other_engine = make_engine(db_url)
    try:
        outcomes = _guess_in_parallel([api.admin, Admin(other_engine)], 40)
    finally:
        other_engine.dispose()
    assert outcomes.count("401") <= 10 and outcomes.count("429") >= 30, outcomes


@pytest.mark.slow
def test_forty_parallel_logins_against_the_real_server(db_url: str, tmp_path: Any) -> None:
    """The real server, two worker processes: 40 wrong passwords sent at once from one address."""
    from concurrent.futures import ThreadPoolExecutor

    import requests
    from tests.support.serverproc import ServerProcess, cli, free_port

    cli("init", "--db", db_url)
    server = ServerProcess(db_url, free_port(), tmp_path / "server.log", workers=2)
    server.start()
    try:
        page = requests.get(server.url + "/login", timeout=10)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)

        def guess(i: int) -> int:
            return requests.post(server.url + "/login", cookies=page.cookies, allow_redirects=False, timeout=60,
                                 data={"username": "admin", "password": "guess %d" % i, "csrf": csrf}).status_code

        with ThreadPoolExecutor(40) as pool:
            statuses = list(pool.map(guess, range(40)))
    finally:
        server.stop()
    assert statuses.count(401) <= 10 and statuses.count(429) >= 30, statuses


# -- item 15: /metrics behind a proxy, the session cookie over HTTPS, the database file, CSV formulas --------

@pytest.fixture
def public_metrics_app(db_url: str, admin: Any) -> Any:
    from fastapi.testclient import TestClient

    from exposure_guard_server.app import create_app
    from exposure_guard_server.config import ServerConfig

    app = create_app(ServerConfig(db_url=db_url, background=False, public_metrics=True, proxy="127.0.0.1"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, admin.api_tokens.create("prometheus")[1]


def test_public_metrics_are_not_public_to_clients_behind_the_proxy(public_metrics_app: Any) -> None:
    client, token = public_metrics_app
    assert client.get("/metrics").status_code == 200  # a direct client (Prometheus next to the server)
    for header in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},
                   {"X-Real-IP": "203.0.113.9"}):
        assert client.get("/metrics", headers=header).status_code == 401, header
        assert client.get("/metrics", headers=dict(header, Authorization="Bearer " + token)).status_code == 200


@pytest.mark.slow
def test_public_metrics_behind_a_same_host_proxy_need_the_token(tmp_path: Any) -> None:
    """The real server with --public-metrics --proxy 127.0.0.1: what a reverse proxy on the host forwards."""
    import requests
    from tests.support.serverproc import ServerProcess, cli, free_port

    url = "sqlite:///%s" % (tmp_path / "eg.db")
    cli("init", "--db", url)
    server = ServerProcess(url, free_port(), tmp_path / "server.log", extra=["--public-metrics", "--proxy", "127.0.0.1"])
    server.start()
    try:
        assert requests.get(server.url + "/metrics", timeout=10).status_code == 200
        forwarded = requests.get(server.url + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
        assert forwarded.status_code == 401
    finally:
        server.stop()


def test_over_https_only_the_host_prefixed_session_cookie_counts(api: Api) -> None:
    from fastapi.testclient import TestClient

    with TestClient(api.client.app, base_url="https://127.0.0.1") as client:
        response = api.login(client=client)
        token = re.search(r"__Host-eg_session=([^;]+)", response.headers["set-cookie"]).group(1)
        assert client.get("/", follow_redirects=False).status_code == 200
        client.cookies.clear()
        client.cookies.set("eg_session", token)  # the same session under the plain name (set by another site
        assert client.get("/", follow_redirects=False).status_code == 303  # on the host, or over http)
        assert client.get("/api/v1/summary").status_code == 401


def test_the_sqlite_database_is_private(tmp_path: Any) -> None:
    import os
    import stat

    from tests.support.server import make_engine, migrate

    old = os.umask(0o022)
    try:
        engine = make_engine("sqlite:///%s" % (tmp_path / "new" / "data" / "eg.db"))
        migrate(engine)
        with engine.begin() as conn:  # a write: the WAL and shared-memory files exist now
            conn.exec_driver_sql("INSERT INTO counters (name, value) VALUES ('x', 1)")
        for name in ("eg.db", "eg.db-wal", "eg.db-shm"):
            mode = stat.S_IMODE(os.stat(tmp_path / "new" / "data" / name).st_mode)
            assert mode == 0o600, (name, oct(mode))
        engine.dispose()
    finally:
        os.umask(old)
    for folder in (tmp_path / "new", tmp_path / "new" / "data"):  # the folders it created
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder


@pytest.mark.parametrize("hostname,expected", [
    ("＝HYPERLINK(\"http://evil\")", "'＝HYPERLINK(\"http://evil\")"),
    ("＋1+1", "'＋1+1"), ("－1+1", "'－1+1"), ("＠SUM(1)", "'＠SUM(1)"),
    (" =1+1", "' =1+1"), ("\u00a0=1+1", "'\u00a0=1+1"), ("\u3000=1+1", "'\u3000=1+1"),
    ("\u202e=1+1", "'=1+1"), ("nas\u202egnp.exe", "nasgnp.exe"), ("\u2066＝1\u2069", "'＝1"),
    ("plain-nas", "plain-nas"),
])
def test_csv_formula_guard_covers_lookalikes_spaces_and_bidi_controls(api: Api, hostname: str, expected: str) -> None:
    import csv
    import io

    dev = device_identity("dev-csv", hostname=hostname)
    key = api.enroll_key(dev)
    assert api.checkin(key, make_report(dev)).status_code == 201
    rows = list(csv.DictReader(io.StringIO(api.client.get("/api/v1/devices.csv", headers=api.auth).text)))
    assert rows[0]["hostname"] == expected
