"""Several server instances on one database, as operators run them behind a proxy: the real
`exposure-guard-server serve` processes on loopback ports, one PostgreSQL (EXPOSURE_GUARD_TEST_PG_URL).

- `init` and `serve --migrate` started at once on an empty database take turns: one schema, one admin login,
  one first enrollment secret.
- Three instances take a load of agents spread across them while one instance is killed (SIGKILL) and
  started again: every report stored exactly once, the transitions exactly those the report sequence
  implies, every webhook and email delivered (a send cut by the kill may be repeated once, with the same
  delivery id / Message-ID, which receivers de-duplicate on), sessions and the login throttle shared."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests
from sqlalchemy import func, select
from tests.support.server import device_identity, make_report
from tests.support.serverproc import ADMIN_PASSWORD, ServerProcess, cli, free_port, pg_database
from tests.support.webhook_receiver import Receiver

from exposure_guard_server.db import head_revision, make_engine
from exposure_guard_server.db import models as m
from exposure_guard_server.db.schema import current_revision
from exposure_guard_server.services.admin import Admin
from exposure_guard_server.services.server_settings import ServerSettings

DEVICES = 45
REPORTS = 8  # per device, sent one after another as an agent does


def _pg(name: str) -> str:
    url = pg_database("%s_%d" % (name, os.getpid()))
    if url is None:
        pytest.skip("needs PostgreSQL: set EXPOSURE_GUARD_TEST_PG_URL (.ci/run starts one)")
    return url


def _exposed(device_index: int, report_index: int) -> bool:
    """Whether this report says EXPOSED: each box flips between OK and EXPOSED a few times."""
    return (device_index + report_index) % 4 == 1


def _started_together(commands: List[List[str]]) -> List[subprocess.CompletedProcess]:
    env = dict(os.environ, EXPOSURE_GUARD_ADMIN_PASSWORD=ADMIN_PASSWORD)
    procs = [subprocess.Popen([sys.executable, "-m", "exposure_guard_server", *c], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for c in commands]
    results = []
    for proc, command in zip(procs, commands):
        out, err = proc.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
def test_inits_started_at_once_take_turns(engine_name: str, tmp_path: Path) -> None:
    db_url = _pg("eg_init_race") if engine_name == "postgresql" else "sqlite:///%s" % (tmp_path / "eg.db")
    results = _started_together([["init", "--db", db_url]] * 4)
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr
    assert sum("admin login created" in r.stdout for r in results) == 1
    assert sum("first enrollment secret (shown once)" in r.stdout for r in results) == 1
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        admin = Admin(engine)
        assert [u["username"] for u in admin.users()] == ["admin"]
        assert len(admin.enroll_secrets.list()) == 1
    finally:
        engine.dispose()


def test_serve_migrate_started_at_once_on_an_empty_database(tmp_path: Path) -> None:
    db_url = _pg("eg_serve_race")
    servers = [ServerProcess(db_url, free_port(), tmp_path / ("s%d.log" % i), extra=["--migrate"]) for i in range(2)]
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_ready(timeout=120)
    finally:
        for server in servers:
            server.stop()
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    # Without --migrate an empty database is refused, as before.
    refused = cli("serve", "--db", _pg("eg_serve_refused"), "--listen", "127.0.0.1:%d" % free_port(), check=False)
    assert refused.returncode != 0 and "exposure-guard-server init" in refused.stderr


class Inbox:
    def __init__(self) -> None:
        self.messages: List[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def receivers() -> Iterator[Tuple[Receiver, Inbox, int]]:
    controller_module = pytest.importorskip("aiosmtpd.controller")
    receiver, inbox = Receiver(), Inbox()
    smtp_port = free_port()
    controller = controller_module.Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        yield receiver, inbox, smtp_port
    finally:
        controller.stop()
        receiver.close()


class Agents:
    """Agents spread across the instances: each sends its reports in order; a report whose answer is lost
    (refused connection, reset, 5xx) is sent again, the same report id, to the next instance."""

    def __init__(self, urls: List[str], secret: str) -> None:
        self.urls, self.secret = urls, secret
        self.keys: Dict[int, str] = {}
        self.retries = 0
        self.lock = threading.Lock()
        self.start = time.time() - 100 * REPORTS

    def _post(self, first: int, path: str, **kwargs: Any) -> requests.Response:
        deadline = time.monotonic() + 120
        attempt = 0
        while True:
            url = self.urls[(first + attempt) % len(self.urls)]
            try:
                response = requests.post(url + path, timeout=30, **kwargs)
                if response.status_code < 500:
                    return response
            except requests.RequestException:
                pass
            with self.lock:
                self.retries += 1
            attempt += 1
            assert time.monotonic() < deadline, "no instance answered %s" % path
            time.sleep(0.05)

    def enroll(self, d: int) -> None:
        ident = device_identity("qnap-inst-%03d" % d, "inst-nas-%03d" % d)
        answer = self._post(d, "/api/v1/enroll", json={"enroll_secret": self.secret, "device": ident})
        assert answer.status_code in (200, 201), answer.text
        self.keys[d] = answer.json()["node_key"]

    def run(self, d: int) -> None:
        ident = device_identity("qnap-inst-%03d" % d, "inst-nas-%03d" % d)
        for i in range(REPORTS):
            exposed = _exposed(d, i)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.start + 100 * i))
            doc = make_report(ident, ["router.upnp-mappings"] if exposed else [], exposed=exposed,
                              generated_at=stamp, report_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "inst/%d/%d" % (d, i))))
            answer = self._post(d + i, "/api/v1/checkin", data=json.dumps(doc).encode(),
                                headers={"Authorization": "Bearer " + self.keys[d],
                                         "Content-Type": "application/json"})
            assert answer.status_code in (200, 201), answer.text


def _expected_kinds(d: int) -> List[str]:
    kinds = []
    for i in range(1, REPORTS):
        before, now = _exposed(d, i - 1), _exposed(d, i)
        if now and not before:
            kinds.append("became_exposed")
        elif before and not now:
            kinds.append("fixed")
    return kinds


def test_three_instances_with_one_killed_handle_everything_exactly_once(
        receivers: Tuple[Receiver, Inbox, int], tmp_path: Path) -> None:
    receiver, inbox, smtp_port = receivers
    db_url = _pg("eg_instances")
    secret = cli("init", "--db", db_url).stdout.split("first enrollment secret (shown once): ")[1].split()[0]
    engine = make_engine(db_url)
    admin = Admin(engine, webhook_allow="127.0.0.0/8")
    admin.webhooks.create("ops", receiver.url)
    settings = ServerSettings(engine)
    for name, value in {"smtp_host": "127.0.0.1", "smtp_port": str(smtp_port), "smtp_security": "none",
                        "smtp_from": "eg@example.com"}.items():
        settings.set(name, value)
    admin.set_alerts("admin", "ops@example.com", "became_exposed", False)

    extra = ["--webhook-allow-internal", "127.0.0.0/8", "--webhook-timeout", "3"]
    servers = [ServerProcess(db_url, free_port(), tmp_path / ("instance%d.log" % i), extra=extra) for i in range(3)]
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_ready()
        agents = Agents([s.url for s in servers], secret)
        with ThreadPoolExecutor(max_workers=15) as pool:
            list(pool.map(agents.enroll, range(DEVICES)))
            running = [pool.submit(agents.run, d) for d in range(DEVICES)]
            # Kill one instance once a third of the reports are in, start it again while the load goes on.
            deadline = time.monotonic() + 120
            while _count(engine, m.reports) < DEVICES * REPORTS // 3:
                assert time.monotonic() < deadline, "the load did not get going"
                time.sleep(0.05)
            servers[1].stop(signal.SIGKILL)
            servers[1].start()
            for future in running:
                future.result(timeout=300)

        # Every report exactly once.
        assert _count(engine, m.reports) == DEVICES * REPORTS
        with engine.connect() as conn:
            assert conn.execute(select(func.count(func.distinct(m.reports.c.report_id)))).scalar() == DEVICES * REPORTS
            devices = {row.id: int(row.device_id.rsplit("-", 1)[1]) for row in
                       conn.execute(select(m.devices.c.id, m.devices.c.device_id))}
            transitions = conn.execute(select(m.transitions.c.id, m.transitions.c.device_pk, m.transitions.c.kind,
                                              m.transitions.c.report_pk).order_by(m.transitions.c.id)).all()
        assert len(devices) == DEVICES
        # Exactly the transitions each box's reports imply, each once, in order.
        for pk, d in devices.items():
            kinds = [t.kind for t in transitions if t.device_pk == pk]
            first = "became_exposed" if _exposed(d, 0) else "first_report"  # an exposed first report alerts
            assert kinds[:2] == ["enrolled", first], (d, kinds)
            assert kinds[2:] == _expected_kinds(d), (d, kinds)
        verdict_changes = [t for t in transitions if t.kind in ("became_exposed", "fixed")]
        assert len({(t.device_pk, t.report_pk) for t in verdict_changes}) == len(verdict_changes)

        # Every webhook delivered, by whichever instance; a send cut by the kill may arrive a second time.
        wanted = {t.id for t in verdict_changes}
        exposures = sum(t.kind == "became_exposed" for t in verdict_changes)
        deadline = time.monotonic() + 240  # a delivery leased by the killed instance waits out its lease
        while True:
            got = {transition for _delivery, transition in _arrivals(receiver)}
            if got >= wanted and len(inbox.messages) >= exposures and _all_sent(engine):
                break
            assert time.monotonic() < deadline, "deliveries missing: %d of %d webhooks, %d of %d emails; logs:\n%s" % (
                len(got & wanted), len(wanted), len(inbox.messages), exposures, servers[0].log_tail())
            time.sleep(0.2)
        arrivals = _arrivals(receiver)
        assert {t for _d, t in arrivals} == wanted
        assert len({d for d, _t in arrivals}) == len(wanted)  # one delivery id per transition
        repeated = len(arrivals) - len(wanted)
        message_ids = [msg["Message-ID"] for msg in inbox.messages]
        assert len(set(message_ids)) == exposures
        repeated += len(message_ids) - exposures
        assert repeated <= 1, "sent twice: %d (only a send cut by the one kill may be repeated)" % repeated
        print("instances: %d reports, %d transitions, %d webhook and %d email deliveries, %d agent retries, "
              "%d repeated sends" % (DEVICES * REPORTS, len(transitions), len(wanted), exposures, agents.retries,
                                     repeated))

        _sessions_and_throttle_are_shared([s.url for s in servers])
    finally:
        for server in servers:
            server.stop()
        engine.dispose()


def _arrivals(receiver: Receiver) -> List[Tuple[str, int]]:
    """(delivery id, transition id) of every request the receiver got."""
    out = []
    for item in list(receiver.received):
        headers = {k.lower(): v for k, v in item["headers"].items()}
        out.append((headers["x-exposureguard-delivery"], json.loads(item["body"])["transition_id"]))
    return out


def _count(engine: Any, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar())


def _all_sent(engine: Any) -> bool:
    with engine.connect() as conn:
        pending = conn.execute(select(func.count()).select_from(m.webhook_deliveries)
                               .where(m.webhook_deliveries.c.status != "delivered")).scalar()
        pending += conn.execute(select(func.count()).select_from(m.email_deliveries)
                                .where(m.email_deliveries.c.status != "delivered")).scalar()
    return pending == 0


def _login(session: requests.Session, url: str, password: str) -> requests.Response:
    page = session.get(url + "/login", timeout=30)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    return session.post(url + "/login", data={"username": "admin", "password": password, "csrf": csrf, "next": "/"},
                        allow_redirects=False, timeout=30)


def _sessions_and_throttle_are_shared(urls: List[str]) -> None:
    # A session made on one instance works on the others (the proxy may send each request anywhere).
    session = requests.Session()
    assert _login(session, urls[0], ADMIN_PASSWORD).status_code == 303
    for url in urls[1:]:
        page = session.get(url + "/", allow_redirects=False, timeout=30)
        assert page.status_code == 200 and "Log out" in page.text, page.status_code
    # Wrong passwords spread over the instances count together: the 11th is refused, wherever it lands.
    statuses = [_login(requests.Session(), urls[i % len(urls)], "wrong password %d" % i).status_code
                for i in range(13)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429] * 3, statuses
