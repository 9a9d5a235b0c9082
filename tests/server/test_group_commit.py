"""Group commit of check-ins (services/ingest.py): the check-ins waiting for a process's writer thread are
stored in one transaction, and each caller still gets its own exact answer, only after the commit.

Runs on SQLite and on PostgreSQL (the ``api`` fixture)."""

from __future__ import annotations

import gzip
import json
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import requests
from sqlalchemy import text
from tests.support.server import Api, device_identity, make_report
from tests.support.serverproc import ServerProcess, cli, free_port

from exposure_guard_server.db import make_engine
from exposure_guard_server.errors import ApiError
from exposure_guard_server.services import ingest as ingest_module
from exposure_guard_server.services.admin import Admin

MAX_BODY = 1 << 20


def _body(doc: Dict[str, Any]) -> bytes:
    return gzip.compress(json.dumps(doc).encode("utf-8"))


def _stamp(i: int) -> str:
    return "2024-01-01T%02d:%02d:%02dZ" % (i // 3600, i // 60 % 60, i % 60)


def _outcome(call: Any) -> Tuple[int, Dict[str, Any]]:
    """(status, answer) of an ingest call: 201 stored, 200 duplicate, else the ApiError's status."""
    try:
        result = call()
    except ApiError as exc:
        return exc.status, {"detail": exc.detail}
    return (200 if result["duplicate"] else 201), result


def _rows(api: Api, sql: str, **params: Any) -> List[Any]:
    with api.server.engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def test_concurrent_checkins_from_many_devices_each_get_their_exact_answer(api: Api) -> None:
    """Eight devices check in at once from 24 threads: new reports, the same report again, reports that
    fail validation and one for another device's id; then, at once again, report_ids reused with other
    content. Every call gets the answer it would get alone, and the database holds exactly the stored
    reports."""
    devices = [device_identity("dev-gc-%d" % d, hostname="NAS-%d" % d) for d in range(8)]
    keys = [api.enroll_key(dev) for dev in devices]
    calls: List[Tuple[str, str, bytes]] = []  # (expectation, key, body)
    conflicts: List[Tuple[str, str, bytes]] = []
    stored: Dict[str, int] = {}  # report_id -> device index
    for d, dev in enumerate(devices):
        for i in range(12):
            doc = make_report(dev, failing=["service.telnet"] if (i + d) % 4 == 0 else [], generated_at=_stamp(i),
                              report_id=str(uuid.uuid4()))
            stored[doc["report_id"]] = d
            calls.append(("new", keys[d], _body(doc)))
            if i % 3 == 0:
                calls.append(("again", keys[d], _body(doc)))  # the same delivery again (a retry)
            if i == 5:
                other = dict(doc, duration_ms=doc["duration_ms"] + 1)  # same report_id, other content
                conflicts.append(("conflict", keys[d], _body(other)))
        invalid = make_report(dev, generated_at=_stamp(99))
        invalid["findings"] = "not a list"
        calls.append(("invalid", keys[d], _body(invalid)))
        calls.append(("foreign", keys[d], _body(make_report(devices[(d + 1) % 8], generated_at=_stamp(98)))))
    ingest = api.server.ingest
    batches_before, batched_before = ingest.batches, ingest.batched
    barrier = threading.Barrier(24)

    def send(call: Tuple[str, str, bytes]) -> Tuple[str, Tuple[int, Dict[str, Any]]]:
        expectation, key, body = call
        return expectation, _outcome(lambda: ingest.checkin(key, body, "gzip", "3600", MAX_BODY))

    def sender(chunk: List[Tuple[str, str, bytes]]) -> List[Tuple[str, Tuple[int, Dict[str, Any]]]]:
        barrier.wait(timeout=60)
        return [send(call) for call in chunk]

    results = []
    for phase in (calls, conflicts):
        barrier = threading.Barrier(min(24, len(phase)))
        with ThreadPoolExecutor(24) as pool:
            chunks = [phase[n::24] for n in range(min(24, len(phase)))]
            results += [r for chunk in pool.map(sender, chunks) for r in chunk]
    assert len(results) == len(calls) + len(conflicts)
    # "new" and "again" race each other: exactly one of the deliveries of a report stores it.
    first: Dict[str, Dict[str, Any]] = {}
    for expectation, (status, answer) in results:
        if expectation in ("new", "again"):
            assert status in (200, 201), answer
            if status == 201:
                assert answer["report_id"] not in first
                first[answer["report_id"]] = answer
            else:
                assert answer["duplicate"] is True and answer["transitions"] == []
        elif expectation == "conflict":
            assert status == 409 and "different content" in answer["detail"], answer
        elif expectation == "invalid":
            assert status == 422, answer
        else:
            assert status == 403, answer
    assert set(first) == set(stored)
    rows = _rows(api, "SELECT r.report_id, d.device_id FROM reports r JOIN devices d ON d.id = r.device_pk")
    assert len(rows) == len(stored)
    assert {row.report_id: row.device_id for row in rows} == {rid: "dev-gc-%d" % d for rid, d in stored.items()}
    for d in range(8):
        count, latest = _rows(api, "SELECT d.report_count, r.report_id FROM devices d JOIN reports r "
                                   "ON r.id = d.last_report_pk WHERE d.device_id = :id", id="dev-gc-%d" % d)[0]
        assert count == 12
        assert stored[latest] == d
    assert ingest.batches > batches_before
    assert ingest.batched - batched_before == len(calls) + len(conflicts) - 16  # all but the 16 refused early


def _deliveries(api: Api, docs: List[Tuple[str, Dict[str, Any]]]) -> List[ingest_module.Delivery]:
    ingest = api.server.ingest
    items = []
    for key, doc in docs:
        item = ingest.prepare(key, _body(doc), "gzip", "3600", MAX_BODY)
        item.event = threading.Event()
        items.append(item)
    return items


def test_one_batch_holds_many_checkins_and_answers_each(api: Api) -> None:
    """One write transaction for several devices' reports, a duplicate in the same batch and a report whose
    device is gone since it was authenticated (refused alone, nothing of it written)."""
    devices = [device_identity("dev-b-%d" % d, hostname="B%d" % d) for d in range(4)]
    keys = [api.enroll_key(dev) for dev in devices]
    docs = [(keys[d], make_report(devices[d], failing=["service.telnet"] if d == 1 else [],
                                  generated_at=_stamp(d), report_id=str(uuid.uuid4()))) for d in range(4)]
    gone_dev = device_identity("dev-b-gone")
    gone_key = api.enroll_key(gone_dev)
    docs.append((gone_key, make_report(gone_dev, generated_at=_stamp(7))))
    docs.append(docs[0])  # the same report twice in one batch
    items = _deliveries(api, docs)
    api.server.lifecycle.delete("dev-b-gone", None)  # deleted after its check-in was authenticated
    ingest = api.server.ingest
    batches = ingest.batches
    ingest._write(items)
    assert ingest.batches == batches + 1
    outcomes = [item.outcome for item in items]
    assert [o["duplicate"] for o in outcomes[:4]] == [False] * 4
    assert [o["transitions"] for o in outcomes[:4]] == [["first_report"]] * 4
    assert [o["verdict"] for o in outcomes[:4]] == ["ok", "at_risk", "ok", "ok"]
    assert isinstance(outcomes[4], ApiError) and outcomes[4].status == 401
    assert outcomes[5]["duplicate"] is True and outcomes[5]["report_id"] == outcomes[0]["report_id"]
    assert all(item.event is not None and item.event.is_set() for item in items)
    assert api.count("reports") == 4
    assert len(_rows(api, "SELECT id FROM transitions WHERE kind = 'first_report'")) == 4
    failing = _rows(api, "SELECT f.check_id FROM device_failing f JOIN devices d ON d.id = f.device_pk "
                         "WHERE d.device_id = 'dev-b-1'")
    assert [row.check_id for row in failing] == ["service.telnet"]


def test_a_checkin_that_raises_inside_the_batch_fails_alone(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error while writing one check-in rolls the batch back; the others are written again
    one by one and stored, with their transitions and queued webhooks; the failing one stores nothing."""
    Admin(api.server.engine, webhook_allow="127.0.0.1/32").webhooks.create("h", "http://127.0.0.1:9/hook", ["*"])
    devices = [device_identity("dev-r-%d" % d, hostname="R%d" % d) for d in range(5)]
    keys = [api.enroll_key(dev) for dev in devices]
    for d in range(5):  # a first report each, so the next ones can change verdict
        assert api.checkin(keys[d], make_report(devices[d], generated_at=_stamp(0))).status_code == 201
    real = ingest_module.add_transition

    def flaky(conn: Any, device_pk: int, kind: str, *args: Any, **kwargs: Any) -> int:
        if kind == "became_exposed":
            raise RuntimeError("webhook queue exploded")
        return real(conn, device_pk, kind, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "add_transition", flaky)
    docs = [(keys[d], make_report(devices[d], failing=["router.upnp-mappings"] if d == 2 else ["service.telnet"],
                                  exposed=d == 2, generated_at=_stamp(1))) for d in range(5)]
    items = _deliveries(api, docs)
    deliveries_before = api.count("webhook_deliveries")
    api.server.ingest._write(items)
    for d, item in enumerate(items):
        if d == 2:
            assert isinstance(item.outcome, RuntimeError)
        else:
            assert item.outcome["stored"] and item.outcome["transitions"] == ["became_at_risk"], item.outcome
    assert api.count("reports") == 5 + 4
    stored_ids = {row.report_id for row in _rows(api, "SELECT report_id FROM reports")}
    assert docs[2][1]["report_id"] not in stored_ids
    assert all(doc["report_id"] in stored_ids for d, (_k, doc) in enumerate(docs) if d != 2)
    assert api.count("webhook_deliveries") == deliveries_before + 4  # one per stored transition
    assert _rows(api, "SELECT verdict, report_count FROM devices WHERE device_id = 'dev-r-2'")[0] == ("ok", 1)
    # Through HTTP the failing one is a 500 and the next delivery of it (the error gone) is stored.
    monkeypatch.setattr(ingest_module, "add_transition", real)
    assert api.checkin(keys[2], docs[2][1]).status_code == 201
    assert _rows(api, "SELECT verdict FROM devices WHERE device_id = 'dev-r-2'")[0][0] == "exposed"


def test_a_known_key_that_stopped_working_is_refused_in_the_write(api: Api) -> None:
    """The process knows a key once it worked; a box re-enrolled since (new key) or deleted is refused."""
    dev = device_identity("dev-k")
    old = api.enroll_key(dev)
    assert api.checkin(old, make_report(dev, generated_at=_stamp(1))).status_code == 201
    renewed = api.client.post("/api/v1/enroll", json={"enroll_secret": api.secret, "device": dev,
                                                      "previous_node_key": old})
    assert renewed.status_code == 201 and renewed.json()["re_enrolled"] is True
    new = renewed.json()["node_key"]
    refused = api.checkin(old, make_report(dev, generated_at=_stamp(2)))
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"] == "Bearer"
    assert api.checkin(new, make_report(dev, generated_at=_stamp(3))).status_code == 201
    api.server.lifecycle.delete("dev-k", None)
    assert api.checkin(new, make_report(dev, generated_at=_stamp(4))).status_code == 401
    assert api.count("reports") == 0


def test_checkins_after_close_are_refused_and_queued_ones_are_stored(api: Api) -> None:
    dev = device_identity("dev-close")
    key = api.enroll_key(dev)
    ingest = api.server.ingest
    assert api.checkin(key, make_report(dev, generated_at=_stamp(1))).status_code == 201
    ingest.close()
    with pytest.raises(ApiError) as refused:
        ingest.checkin(key, _body(make_report(dev, generated_at=_stamp(2))), "gzip", None, MAX_BODY)
    assert refused.value.status == 503
    assert api.count("reports") == 1


# -- a crash: nothing acknowledged is lost --------------------------------------------------------------

def _agent(url: str, key: str, device: Dict[str, Any], stop: threading.Event, acknowledged: List[str]) -> None:
    session = requests.Session()
    i = 0
    while not stop.is_set():
        i += 1
        doc = make_report(device, failing=["service.telnet"] if i % 5 == 0 else [], generated_at=_stamp(i))
        try:
            response = session.post(url + "/api/v1/checkin", data=_body(doc), timeout=10, headers={
                "Authorization": "Bearer " + key, "Content-Encoding": "gzip", "Content-Type": "application/json"})
        except requests.RequestException:
            time.sleep(0.01)
            continue
        if response.status_code in (200, 201):
            acknowledged.append(doc["report_id"])


def test_a_killed_server_lost_no_acknowledged_checkin(db_url: str, tmp_path: Path) -> None:
    """16 agents check in as fast as they can against 2 worker processes; the server is SIGKILLed in the
    middle. Every report it answered 200/201 is in the database, and every box's count is its reports."""
    from exposure_guard import checkin
    from exposure_guard.qts.identity import DeviceIdentity

    cli("init", "--db", db_url)
    secret = cli("enroll-secret", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    server = ServerProcess(db_url, free_port(), tmp_path / "server.log", workers=2)
    server.start()
    stop = threading.Event()
    acknowledged: List[List[str]] = []
    threads = []
    try:
        for n in range(16):
            dev = device_identity("dev-crash-%02d" % n, hostname="C%02d" % n)
            checkin.enroll(server.url, secret, DeviceIdentity(**dev), tmp_path / ("agent-%d" % n))
            key = checkin.read_node_key(tmp_path / ("agent-%d" % n))
            acknowledged.append([])
            threads.append(threading.Thread(target=_agent, args=(server.url, key, dev, stop, acknowledged[-1])))
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while sum(len(a) for a in acknowledged) < 300:  # well into the run
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.02)
        server.stop(signal.SIGKILL)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        server.stop()
    acked = {rid for per_agent in acknowledged for rid in per_agent}
    assert len(acked) >= 300
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = set(conn.execute(text("SELECT report_id FROM reports")).scalars())
            counts = conn.execute(text("SELECT d.report_count, (SELECT count(*) FROM reports r WHERE r.device_pk = "
                                       "d.id) FROM devices d")).all()
    finally:
        engine.dispose()
    assert acked <= stored, "acknowledged but not stored: %s" % sorted(acked - stored)[:5]
    assert all(count == rows for count, rows in counts), counts

