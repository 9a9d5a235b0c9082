"""Check-in: decode, validate and store one report (no HTTP here; ``asgi.py`` serves the route).

Check-in is idempotent on ``report_id``: the same report delivered twice is stored once (the second time
answers ``{"duplicate": true}``); a different report body under a known ``report_id``, or a report whose
``device.device_id`` is not the node key's device, is refused and nothing is stored."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import threading
import time
import zlib
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Tuple

from sqlalchemy import Connection, Engine, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from exposure_guard_server.db import models as m
from exposure_guard_server.db.hot_sql import HotSql
from exposure_guard_server.db.lock import WriteLock
from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import check_strings, has_surrogate_escape, printable
from exposure_guard_server.naturalsort import hostname_key
from exposure_guard_server.reportlogic import RISK, derive_transitions, failing_checks, parse_time, verdict_of
from exposure_guard_server.security import token_hash
from exposure_guard_server.services.counters import Counters
from exposure_guard_server.services.transitions import add_transition
from exposure_guard_server.services.validation import validate_report

MIN_INTERVAL, MAX_INTERVAL = 60, 7 * 86400
INLINE_BODY = 32 * 1024  # check-in bodies up to this size are decoded and validated in the event loop
KNOWN_KEYS = 200_000  # node keys a process remembers (then it starts again)
MAX_BATCH = 256  # check-ins in one write transaction
WRITER_IDLE = 5.0  # seconds the writer thread waits for work before it ends
ENROLLMENT_HEADER = "X-ExposureGuard-Enrollment"  # "pending-approval" on a 401 for a key that waits


def _reject_constant(name: str) -> Any:
    raise ValueError("%s is not valid JSON" % name)


def decode_body(raw: bytes, content_encoding: str, max_body: int) -> Tuple[Dict[str, Any], bytes]:
    """Gunzip (bounded: a gzip bomb is refused, not inflated) and parse one JSON object.

    Returns the document and its JSON bytes as received."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(raw, max_body + 1)
        except zlib.error as exc:
            raise ApiError(400, "body is not valid gzip: %s" % exc) from None
        if len(data) > max_body or inflater.unconsumed_tail:
            raise ApiError(413, "decompressed body is larger than %d bytes" % max_body)
        if not inflater.eof:
            raise ApiError(400, "body is truncated gzip")
    elif encoding in ("", "identity"):
        data = raw
    else:
        raise ApiError(415, "unsupported Content-Encoding %r (use gzip or none)" % encoding[:40])
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "body is not valid UTF-8 JSON: %s" % str(exc)[:200]) from None
    if not isinstance(doc, dict):
        raise ApiError(400, "body must be a JSON object")
    if has_surrogate_escape(data):
        check_strings(doc)
    return doc, data


@dataclass
class PreparedReport:
    doc: Dict[str, Any]
    report_id: str
    device_id: str
    generated_at: float
    verdict: str
    failing: Dict[str, str]
    body: bytes  # zlib-compressed canonical JSON
    sha256: str


def prepare_report(doc: Dict[str, Any], data: Optional[bytes] = None, stored: Optional[bytes] = None) -> PreparedReport:
    """Validate and derive what the server stores (CPU only, no DB).

    ``data`` is the JSON as received (its SHA-256 tells a replay from a different report under the same id);
    ``stored`` is what to keep: the received gzip bytes when the agent sent gzip, else zlib of ``data``."""
    validate_report(doc)
    generated = parse_time(doc["generated_at"])
    if generated is None:
        raise ApiError(422, "report does not match exposure-guard/report/v1: generated_at is not RFC 3339")
    if data is None:
        data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return PreparedReport(
        doc=doc, report_id=doc["report_id"].lower(), device_id=doc["device"]["device_id"], generated_at=generated,
        verdict=verdict_of(doc), failing=failing_checks(doc), body=stored or zlib.compress(data, 1),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def load_body(blob: bytes) -> Dict[str, Any]:
    """A stored report (zlib or gzip: wbits 47 reads both)."""
    return json.loads(zlib.decompress(blob, 47).decode("utf-8"))


def parse_interval(header: Optional[str], default: int) -> int:
    if not header:
        return default
    try:
        value = int(header.strip())
    except ValueError:
        return default
    return min(MAX_INTERVAL, max(MIN_INTERVAL, value))


class Delivery:
    """One check-in that passed every check that needs no database, waiting for the writer."""

    __slots__ = ("key_hash", "device_pk", "report", "interval_header", "now", "loop", "future", "event", "outcome")

    def __init__(self, key_hash: str, device_pk: int, report: PreparedReport, interval_header: Optional[str],
                 now: Optional[float]) -> None:
        self.key_hash, self.device_pk, self.report = key_hash, device_pk, report
        self.interval_header, self.now = interval_header, now
        self.loop: Optional[asyncio.AbstractEventLoop] = None  # an asyncio caller's loop and future, or
        self.future: Optional[asyncio.Future] = None
        self.event: Optional[threading.Event] = None  # a blocking caller's event
        self.outcome: Any = None  # the answer (a dict) or the exception to raise


class Ingest:
    """The check-in path of one server process (one per uvicorn worker).

    A check-in is authenticated (node keys already seen by this process are known without a query; the
    key is checked again in the write), decoded and validated by its caller, then handed to this process's
    writer thread, which stores the check-ins waiting for it together: one write transaction (one write
    lock, one commit) for all of them. Each caller gets its own exact answer once that transaction is
    committed; a check-in refused in the write (its key stopped working, a conflicting duplicate) leaves
    the others alone, and if anything else fails the transaction is rolled back and each check-in is
    written alone, so one bad check-in fails only itself."""

    def __init__(self, engine: Engine, lock: WriteLock, counters: Counters, *, max_clock_skew: float = 300.0) -> None:
        self.engine = engine
        self.max_clock_skew = max_clock_skew
        self.lock = lock
        self.writer = lock.writer
        self.counters = counters
        self.sql = HotSql(engine.dialect)
        dbapi_errors = getattr(engine.dialect.dbapi, "IntegrityError", IntegrityError)
        self._integrity_errors = (IntegrityError, dbapi_errors)
        self._known: Dict[str, Tuple[int, str]] = {}  # node key hash -> (device pk, device id)
        self._queue: Deque[Delivery] = collections.deque()
        self._wake = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self.batches = 0  # write transactions of the writer thread, and the check-ins they held
        self.batched = 0

    # -- the caller's side ---------------------------------------------------------------------------------
    def checkin(self, node_key: Optional[str], raw: bytes, content_encoding: str, interval_header: Optional[str],
                max_body: int, now: Optional[float] = None) -> Dict[str, Any]:
        """Store one check-in; blocks until it is committed. The answer, or ApiError."""
        item = self._prepare_counted(node_key, raw, content_encoding, interval_header, max_body, now)
        item.event = threading.Event()
        self._submit(item)
        item.event.wait()
        if isinstance(item.outcome, BaseException):
            raise item.outcome
        return item.outcome  # type: ignore[no-any-return]

    async def checkin_async(self, node_key: Optional[str], raw: bytes, content_encoding: str,
                            interval_header: Optional[str], max_body: int, pool: Executor) -> Dict[str, Any]:
        """``checkin`` for the event loop: a small body with a key this process knows is decoded and
        validated right here; otherwise (a query to make, a large body to inflate) in ``pool``."""
        loop = asyncio.get_running_loop()
        if node_key and len(raw) <= INLINE_BODY and token_hash(node_key) in self._known:
            item = self._prepare_counted(node_key, raw, content_encoding, interval_header, max_body, None)
        else:
            item = await loop.run_in_executor(pool, self._prepare_counted, node_key, raw, content_encoding,
                                              interval_header, max_body, None)
        item.loop, item.future = loop, loop.create_future()
        self._submit(item)
        return await item.future  # type: ignore[no-any-return]

    def _prepare_counted(self, node_key: Optional[str], raw: bytes, content_encoding: str,
                         interval_header: Optional[str], max_body: int, now: Optional[float]) -> Delivery:
        try:
            return self.prepare(node_key, raw, content_encoding, interval_header, max_body, now)
        except ApiError as exc:
            self._count_refusal(exc)
            raise

    def prepare(self, node_key: Optional[str], raw: bytes, content_encoding: str, interval_header: Optional[str],
                max_body: int, now: Optional[float] = None) -> Delivery:
        """Everything before the write: who is calling (answered before the body is even parsed), the body
        decoded and validated, and the report's device is the caller's."""
        key_hash, device_pk, device_id = self.authenticate(node_key)
        doc, data = decode_body(raw, content_encoding, max_body)
        gzipped = content_encoding.strip().lower() in ("gzip", "x-gzip")
        report = prepare_report(doc, data, raw if gzipped else None)
        if report.device_id != device_id:
            raise ApiError(403, "report is for device %r but the node key belongs to another device" %
                           report.device_id[:128])
        return Delivery(key_hash, device_pk, report, interval_header, now)

    def authenticate(self, node_key: Optional[str]) -> Tuple[str, int, str]:
        """(key hash, device pk, device id) of a node key, or 401. A key this process saw work is known
        without a query; the write checks it again (a re-enrolled or deleted box's old key stops there)."""
        if not node_key:
            raise ApiError(401, "missing node key (Authorization: Bearer <node key>)", {"WWW-Authenticate": "Bearer"})
        key_hash = token_hash(node_key)
        known = self._known.get(key_hash)
        if known is None:
            with self.engine.connect() as conn:
                cursor = conn.connection.cursor()
                try:
                    row = self.sql.run(cursor, "whoami", h=key_hash).fetchone()
                    if row is None:
                        raise _unknown_key(self.sql, cursor, key_hash)
                finally:
                    cursor.close()
            known = (int(row[0]), str(row[1]))
            if len(self._known) >= KNOWN_KEYS:
                self._known.clear()
            self._known[key_hash] = known
        return key_hash, known[0], known[1]

    def _count_refusal(self, exc: ApiError) -> None:
        if not exc.counted:
            self.counters.count("checkins_rejected_%d" % exc.status)
            exc.counted = True

    # -- the writer thread ---------------------------------------------------------------------------------
    def _submit(self, item: Delivery) -> None:
        with self._wake:
            if self._closed:
                exc = ApiError(503, "the server is shutting down; retry")
                self._count_refusal(exc)
                raise exc
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_loop, name="eg-ingest-writer", daemon=True)
                self._thread.start()
            else:
                self._wake.notify()

    def close(self) -> None:
        """Store what is queued, then stop the writer thread (check-ins after this are answered 503)."""
        with self._wake:
            self._closed = True
            thread = self._thread
            self._wake.notify()
        if thread is not None:
            thread.join(timeout=60)

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    if self._closed or not self._wake.wait(WRITER_IDLE) and not self._queue:
                        self._thread = None  # idle: the next check-in starts a new writer
                        return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            try:
                self._write(batch)
            except BaseException as exc:  # pragma: no cover - a bug: answer everyone rather than hang them
                self._deliver(batch, [exc] * len(batch))

    def _write(self, batch: List[Delivery]) -> None:
        try:
            outcomes = self._write_together(batch)
        except Exception:
            # Something failed that is not a refusal of one check-in: the transaction is rolled back and each
            # check-in is written alone, so one that fails again fails only itself.
            outcomes = [self._write_alone(item) for item in batch]
        self.batches += 1
        self.batched += len(batch)
        self._deliver(batch, outcomes)

    def _write_together(self, batch: List[Delivery]) -> List[Any]:
        # Devices in one order: two processes' transactions on PostgreSQL lock their rows without deadlock.
        ordered = sorted(batch, key=lambda item: item.device_pk)
        outcomes: Dict[int, Any] = {}
        with self.writer.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                with self.lock.begin(conn):
                    for item in ordered:
                        outcomes[id(item)] = self._store(conn, cursor, item)
            finally:
                cursor.close()
        return [outcomes[id(item)] for item in batch]

    def _write_alone(self, item: Delivery) -> Any:
        try:
            with self.writer.connect() as conn:
                cursor = conn.connection.cursor()
                try:
                    with self.lock.begin(conn):
                        return self._store(conn, cursor, item)
                finally:
                    cursor.close()
        except self._integrity_errors:
            # Lost a race with a concurrent delivery of the same report_id: answered as its duplicate.
            with self.engine.connect() as conn:
                seen = _existing_report(conn, item.report.report_id)
            if seen is None:
                return ApiError(503, "could not store the report; retry")
            return _duplicate_or_refusal(seen, item.device_pk, item.report)
        except Exception as exc:
            return exc

    def _deliver(self, batch: List[Delivery], outcomes: List[Any]) -> None:
        """Count and hand each caller its answer (after the commit)."""
        by_loop: Dict[asyncio.AbstractEventLoop, List[Tuple[asyncio.Future, Any]]] = {}
        for item, outcome in zip(batch, outcomes):
            if isinstance(outcome, ApiError):
                self._count_refusal(outcome)
            elif isinstance(outcome, dict):
                self.counters.count("checkins_duplicate" if outcome["duplicate"] else "checkins_stored")
            item.outcome = outcome
            if item.loop is not None and item.future is not None:
                by_loop.setdefault(item.loop, []).append((item.future, outcome))
            elif item.event is not None:
                item.event.set()
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, answers)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass

    def _store(self, conn: Connection, cursor: Any, item: Delivery) -> Any:
        """Write one check-in in the open transaction: the answer, or the ApiError refusing it (returned,
        not raised: nothing was written for it). Anything raised fails the whole transaction."""
        sql, report = self.sql, item.report
        now = time.time() if item.now is None else item.now
        device_pk = item.device_pk
        dev = sql.run(cursor, "device_for_update", pk=device_pk, h=item.key_hash).fetchone()
        if dev is None:  # the key stopped working (re-enrolled, deleted) since this process last saw it
            self._known.pop(item.key_hash, None)
            return _unknown_key(sql, cursor, item.key_hash)
        (_id, interval_s, last_generated_at, verdict, failing, stale, report_count, retired_at, hostname, model,
         firmware, build, lan_addresses, agent_version, accepting) = dev
        # A report cannot have been made after it arrived: one dated further ahead than the allowed skew (a
        # wrong clock, a forged date) is ordered by its arrival, else it would stay "latest" forever.
        ordered_at = report.generated_at if report.generated_at <= now + self.max_clock_skew else now
        row = sql.run(cursor, "insert_report", report_id=report.report_id, device_pk=device_pk,
                      generated_at=ordered_at, received_at=now, verdict=report.verdict,
                      fail_count=len(report.failing), body_sha256=report.sha256, body=report.body).fetchone()
        if row is None:  # this report_id is stored already
            seen = sql.run(cursor, "seen", rid=report.report_id).fetchone()
            if seen is None:
                return ApiError(503, "could not store the report; retry")
            return _duplicate_or_refusal(_Seen(*seen), device_pk, report)
        report_pk = row[0]
        interval = parse_interval(item.interval_header, interval_s)
        # Only what changes is written (db/hot_sql.py): most check-ins change the times and the count alone.
        values: Dict[str, Any] = {"last_seen_at": now, "stale_base": now + 2 * interval,
                                  "report_count": report_count + 1}
        if stale:
            values["stale"] = False
        if interval != interval_s:
            values["interval_s"] = interval
        events: List[Tuple[str, Dict[str, Any]]] = []
        if retired_at is not None:  # a box thought gone is reporting: back in every list, and said so
            values["retired_at"] = None
        if stale or retired_at is not None:
            events.append(("back", {"last_report_id": report.report_id, "was_retired": retired_at is not None}))
        latest = last_generated_at is None or ordered_at >= last_generated_at
        if latest:
            previous_failing = {entry[0]: entry[1] for entry in json.loads(failing)}
            if accepting:  # checks accepted on the server leave the box's verdict and failing list
                accepted = frozenset(r[0] for r in sql.run(cursor, "accepted", pk=device_pk, pk2=device_pk).fetchall())
                if accepted:
                    report.failing = {k: v for k, v in report.failing.items() if k not in accepted}
                    report.verdict = verdict_of(report.doc, accepted)
            values["last_generated_at"] = ordered_at
            values["last_report_pk"] = report_pk
            if report.verdict != verdict:
                values["verdict"], values["risk"] = report.verdict, RISK[report.verdict]
            failing_text = json.dumps(sorted(report.failing.items()))
            if failing_text != failing:
                values["fail_count"], values["failing"] = len(report.failing), failing_text
            device = report.doc["device"]
            if device["hostname"] != hostname:
                values["hostname"], values["hostname_key"] = device["hostname"], hostname_key(device["hostname"])
            for name, new, old in (("model", device["model"], model), ("firmware", device["firmware"], firmware),
                                   ("build", device["build"], build),
                                   ("lan_addresses", json.dumps(device["lan_addresses"]), lan_addresses),
                                   ("agent_version", printable(report.doc["agent"]["version"], 64), agent_version)):
                if new != old:
                    values[name] = new
            sql.update(cursor, device_pk, values)
            events.extend(derive_transitions(verdict, previous_failing, report.verdict, report.failing))
            if previous_failing != report.failing:
                sync_failing(conn, device_pk, previous_failing, report.failing)
        else:
            sql.update(cursor, device_pk, values)
        for kind, detail in events:
            detail = dict(detail, report_id=report.report_id)
            add_transition(conn, device_pk, kind, now, report_pk, detail)
        return {"stored": True, "duplicate": False, "report_id": report.report_id, "verdict": report.verdict,
                "latest": latest, "transitions": [kind for kind, _ in events]}


def _settle(answers: List[Tuple[asyncio.Future, Any]]) -> None:
    """In the event loop: resolve the futures of the check-ins one write transaction committed."""
    for future, outcome in answers:
        if future.done():  # the request went away (cancelled) meanwhile
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _unknown_key(sql: HotSql, cursor: Any, key_hash: str) -> ApiError:
    """401 for a key no device has; it says so when the key waits for an operator's approval."""
    row = sql.run(cursor, "pending_key", h=key_hash).fetchone()
    if row is not None:
        waiting_for = str(row[0])
        return ApiError(401, "this node key waits for an operator to approve the re-enrollment of %s (Admin page, "
                             "or `exposure-guard-server re-enroll approve`); keep the reports queued and retry later"
                        % waiting_for[:128], {"WWW-Authenticate": "Bearer", ENROLLMENT_HEADER: "pending-approval"})
    return ApiError(401, "unknown node key: enroll this device again", {"WWW-Authenticate": "Bearer"})


class _Seen:
    def __init__(self, device_pk: int, body_sha256: str, verdict: str) -> None:
        self.device_pk, self.body_sha256, self.verdict = device_pk, body_sha256, verdict


def _existing_report(conn: Connection, report_id: str) -> Any:
    return conn.execute(select(m.reports.c.device_pk, m.reports.c.body_sha256, m.reports.c.verdict).where(
        m.reports.c.report_id == report_id)).first()


def _duplicate_or_refusal(seen: Any, device_pk: int, report: PreparedReport) -> Any:
    """The answer to a report_id stored already: a duplicate of that report, or a 409 ApiError (returned)."""
    if seen.device_pk != device_pk:
        return ApiError(409, "report_id %s already belongs to another device" % report.report_id)
    if seen.body_sha256 != report.sha256:
        return ApiError(409, "report_id %s was already stored with different content" % report.report_id)
    return {"stored": True, "duplicate": True, "report_id": report.report_id, "verdict": seen.verdict,
            "latest": False, "transitions": []}



def sync_failing(conn: Connection, device_pk: int, before: Dict[str, str], after: Dict[str, str]) -> None:
    t = m.device_failing
    gone = [check for check in before if check not in after]
    if gone:
        conn.execute(delete(t).where(and_(t.c.device_pk == device_pk, t.c.check_id.in_(gone))))
    for check, severity in after.items():
        if check not in before:
            conn.execute(insert(t).values(device_pk=device_pk, check_id=check, severity=severity))
        elif before[check] != severity:
            conn.execute(update(t).where(t.c.device_pk == device_pk, t.c.check_id == check).values(severity=severity))
