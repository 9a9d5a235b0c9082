"""Enrollment and check-in: the write path. Framework-free so it can be tested and benchmarked directly.

Check-in is idempotent on ``report_id``: the same report delivered twice is stored once (the second time
answers ``{"duplicate": true}``); a different report body under a known ``report_id``, or a report whose
``device.device_id`` is not the node key's device, is refused and nothing is stored."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import jsonschema
from sqlalchemy import Connection, Engine, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from exposure_guard.report import load_schema
from exposure_guard_server import models as m
from exposure_guard_server.db import WRITE, is_sqlite
from exposure_guard_server.errors import ApiError
from exposure_guard_server.reportlogic import RISK, derive_transitions, failing_checks, parse_time, verdict_of
from exposure_guard_server.schemacheck import Unsupported, compile_schema
from exposure_guard_server.security import NODE_KEY_PREFIX, new_secret, token_hash

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

MIN_INTERVAL, MAX_INTERVAL = 60, 7 * 86400

_SCHEMA = load_schema()
_REPORT_VALIDATOR = jsonschema.Draft202012Validator(_SCHEMA)
_DEVICE_VALIDATOR = jsonschema.Draft202012Validator(_SCHEMA["properties"]["device"])
try:
    _FAST_REPORT_CHECK: Optional[Callable[[Any], bool]] = compile_schema(_SCHEMA)
except Unsupported:  # a future schema keyword: jsonschema alone
    _FAST_REPORT_CHECK = None


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
    return doc, data


def _first_error(validator: jsonschema.protocols.Validator, doc: Any) -> Optional[str]:
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "(document)"
    return "%s: %s" % (where, error.message[:300])


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


def validate_report(doc: Dict[str, Any]) -> None:
    """Raise 422 unless ``doc`` matches report-v1.schema.json (fast check first, jsonschema for the words)."""
    if _FAST_REPORT_CHECK is not None and _FAST_REPORT_CHECK(doc):
        return
    problem = _first_error(_REPORT_VALIDATOR, doc)
    if problem:
        raise ApiError(422, "report does not match exposure-guard/report/v1: " + problem)


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


class Ingest:
    """The write path for one server process (one per uvicorn worker)."""

    def __init__(self, engine: Engine, *, default_interval: int = 3600, stale_grace: float = 600) -> None:
        self.engine = engine
        self.writer = engine.execution_options(**WRITE)
        self.default_interval = default_interval
        self.stale_grace = stale_grace
        # SQLite has one writer at a time. Queueing here (threads on a lock, processes on an flock of a file
        # next to the database) wakes the next writer at once; SQLite's busy handler polls with sleeps.
        self._write_lock: Optional[threading.Lock] = None
        self._lock_file = ""
        if is_sqlite(str(engine.url)):
            self._write_lock = threading.Lock()
            database = engine.url.database or ""
            if database and database != ":memory:":
                self._lock_file = database + ".write-lock"
        self.stats: Dict[str, int] = {}
        self._stats_lock = threading.Lock()
        self.sql = HotSql(engine.dialect)
        dbapi_errors = getattr(engine.dialect.dbapi, "IntegrityError", IntegrityError)
        self._integrity_errors = (IntegrityError, dbapi_errors)

    def count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] = self.stats.get(name, 0) + n

    def take_stats(self) -> Dict[str, int]:
        with self._stats_lock:
            out, self.stats = self.stats, {}
        return out

    def _write(self) -> Any:
        return _Locked(self._write_lock, self.writer, self._lock_file)

    # -- enrollment ------------------------------------------------------------------------------------
    def enroll(self, body: Any, now: Optional[float] = None) -> Dict[str, Any]:
        now = time.time() if now is None else now
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object with enroll_secret and device")
        secret = body.get("enroll_secret")
        device = body.get("device")
        if not isinstance(secret, str) or not secret:
            raise ApiError(401, "missing enroll_secret")
        if not isinstance(device, dict):
            raise ApiError(422, "missing device identity object")
        problem = _first_error(_DEVICE_VALIDATOR, device)
        if problem:
            raise ApiError(422, "device identity is not valid: " + problem)
        agent = body.get("agent") if isinstance(body.get("agent"), dict) else {}
        agent_version = str(agent.get("version", ""))[:64]
        node_key = new_secret(NODE_KEY_PREFIX)
        key_hash = token_hash(node_key)
        secret_ok = (m.enroll_secrets.c.secret_hash == token_hash(secret), m.enroll_secrets.c.revoked_at.is_(None))
        with self.engine.connect() as conn:  # refuse bad secrets without touching the write lock
            if conn.execute(select(m.enroll_secrets.c.id).where(*secret_ok)).first() is None:
                raise ApiError(401, "invalid or revoked enrollment secret")
        with self._write() as conn:
            row = conn.execute(select(m.enroll_secrets.c.id).where(*secret_ok)).first()
            if row is None:
                raise ApiError(401, "invalid or revoked enrollment secret")
            secret_id = row.id
            existing = conn.execute(select(m.devices.c.id, m.devices.c.stale_base).where(
                m.devices.c.device_id == device["device_id"]).with_for_update()).first()
            identity = {
                "hostname": device["hostname"], "model": device["model"], "firmware": device["firmware"],
                "build": device["build"], "lan_addresses": json.dumps(device["lan_addresses"]),
            }
            if existing is not None:
                # Same device id: same device row and history, a fresh node key (the old one stops working).
                conn.execute(update(m.devices).where(m.devices.c.id == existing.id).values(
                    node_key_hash=key_hash, enroll_secret_id=secret_id, agent_version=agent_version, **identity))
                device_pk, again = existing.id, True
            else:
                device_pk = conn.execute(insert(m.devices).values(
                    device_id=device["device_id"], node_key_hash=key_hash, enroll_secret_id=secret_id,
                    enrolled_at=now, agent_version=agent_version, interval_s=self.default_interval,
                    verdict="pending", risk=0, fail_count=0, failing="[]",
                    stale_base=now + 2 * self.default_interval, stale=False, report_count=0, **identity,
                )).inserted_primary_key[0]
                again = False
                add_transition(conn, device_pk, "enrolled", now, None, {"hostname": device["hostname"]})
            conn.execute(update(m.enroll_secrets).where(m.enroll_secrets.c.id == secret_id).values(
                enrolled_count=m.enroll_secrets.c.enrolled_count + 1))
        self.count("enrollments")
        return {"node_key": node_key, "device_id": device["device_id"], "re_enrolled": again}

    # -- check-in --------------------------------------------------------------------------------------
    def checkin(self, node_key: Optional[str], raw: bytes, content_encoding: str, interval_header: Optional[str],
                max_body: int, now: Optional[float] = None) -> Dict[str, Any]:
        try:
            result = self._checkin(node_key, raw, content_encoding, interval_header, max_body, now)
        except ApiError as exc:
            self.count("checkins_rejected_%d" % exc.status)
            exc.counted = True  # type: ignore[attr-defined]
            raise
        self.count("checkins_duplicate" if result["duplicate"] else "checkins_stored")
        return result

    def _checkin(self, node_key: Optional[str], raw: bytes, content_encoding: str, interval_header: Optional[str],
                 max_body: int, now: Optional[float]) -> Dict[str, Any]:
        if not node_key:
            raise ApiError(401, "missing node key (Authorization: Bearer <node key>)", {"WWW-Authenticate": "Bearer"})
        sql = self.sql
        # One pool checkout for the whole check-in; the hot statements go straight to the driver's cursor.
        with self.writer.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                # Who is calling? Answered before the body is even parsed.
                row = sql.run(cursor, "whoami", h=token_hash(node_key)).fetchone()
                if row is None:
                    raise ApiError(401, "unknown node key: enroll this device again", {"WWW-Authenticate": "Bearer"})
                device_pk, device_id = row[0], row[1]
                doc, data = decode_body(raw, content_encoding, max_body)
                report_id = doc.get("report_id")
                seen = sql.run(cursor, "seen", rid=report_id.lower()[:64] if isinstance(report_id, str) else ""
                               ).fetchone()
                gzipped = content_encoding.strip().lower() in ("gzip", "x-gzip")
                report = prepare_report(doc, data, raw if gzipped else None)
                if report.device_id != device_id:
                    raise ApiError(403, "report is for device %r but the node key belongs to another device" %
                                   report.device_id[:128])
                if seen is not None:
                    return _duplicate(_Seen(*seen), device_pk, report)
                try:
                    with _Locked(self._write_lock, self.writer, self._lock_file, conn=conn):
                        return self._store(conn, cursor, device_pk, report, interval_header,
                                           time.time() if now is None else now)
                except self._integrity_errors:
                    pass  # lost a race with a concurrent delivery of the same report_id: answered below
            finally:
                cursor.close()
        with self.engine.connect() as conn:
            seen = _existing_report(conn, report.report_id)
        if seen is None:
            raise ApiError(503, "could not store the report; retry")
        return _duplicate(seen, device_pk, report)

    def _store(self, conn: Connection, cursor: Any, device_pk: int, report: PreparedReport,
               interval_header: Optional[str], now: float) -> Dict[str, Any]:
        sql = self.sql
        dev = sql.run(cursor, "device_for_update", pk=device_pk).fetchone()
        if dev is None:
            raise ApiError(401, "unknown node key: enroll this device again")
        _id, interval_s, last_generated_at, verdict, failing, stale, report_count = dev
        report_pk = sql.run(cursor, "insert_report", report_id=report.report_id, device_pk=device_pk,
                            generated_at=report.generated_at, received_at=now, verdict=report.verdict,
                            fail_count=len(report.failing), body_sha256=report.sha256,
                            body=report.body).fetchone()[0]
        interval = parse_interval(interval_header, interval_s)
        seen = {"pk": device_pk, "last_seen_at": now, "stale_base": now + 2 * interval, "stale": False,
                "interval_s": interval, "report_count": report_count + 1}
        events: List[Tuple[str, Dict[str, Any]]] = []
        if stale:
            events.append(("back", {"last_report_id": report.report_id}))
        latest = last_generated_at is None or report.generated_at >= last_generated_at
        if latest:
            previous_failing = {item[0]: item[1] for item in json.loads(failing)}
            device = report.doc["device"]
            sql.run(cursor, "update_latest", last_generated_at=report.generated_at, last_report_pk=report_pk,
                    verdict=report.verdict, risk=RISK[report.verdict], fail_count=len(report.failing),
                    failing=json.dumps(sorted(report.failing.items())), hostname=device["hostname"],
                    model=device["model"], firmware=device["firmware"], build=device["build"],
                    lan_addresses=json.dumps(device["lan_addresses"]),
                    agent_version=str(report.doc["agent"]["version"])[:64], **seen)
            events.extend(derive_transitions(verdict, previous_failing, report.verdict, report.failing))
            if previous_failing != report.failing:
                _sync_failing(conn, device_pk, previous_failing, report.failing)
        else:
            sql.run(cursor, "update_seen", **seen)
        for kind, detail in events:
            detail = dict(detail, report_id=report.report_id)
            add_transition(conn, device_pk, kind, now, report_pk, detail)
        return {"stored": True, "duplicate": False, "report_id": report.report_id, "verdict": report.verdict,
                "latest": latest, "transitions": [kind for kind, _ in events]}

    # -- stale sweep -----------------------------------------------------------------------------------
    def sweep_stale(self, now: Optional[float] = None) -> int:
        """Mark devices not seen for 2 × interval + grace as stale, once, with a went_stale transition."""
        now = time.time() if now is None else now
        cutoff = now - self.stale_grace
        d = m.devices.c
        with self._write() as conn:
            rows = conn.execute(update(m.devices).where(d.stale.is_(False), d.stale_base < cutoff).values(
                stale=True).returning(d.id, d.last_seen_at, d.interval_s)).fetchall()
            for row in rows:
                add_transition(conn, row.id, "went_stale", now, None, {
                    "last_seen_at": row.last_seen_at, "interval_s": row.interval_s,
                    "grace_s": self.stale_grace})
        return len(rows)


class HotSql:
    """The check-in path's statements, compiled once for the dialect and run on the driver's cursor:
    SQLAlchemy's per-execution bookkeeping costs several times what SQLite takes to run them."""

    def __init__(self, dialect: Any) -> None:
        d, r = m.devices.c, m.reports.c
        seen_cols = ("last_seen_at", "stale_base", "stale", "interval_s", "report_count")
        latest_cols = seen_cols + ("last_generated_at", "last_report_pk", "verdict", "risk", "fail_count", "failing",
                                   "hostname", "model", "firmware", "build", "lan_addresses", "agent_version")
        statements = {
            "whoami": select(d.id, d.device_id).where(d.node_key_hash == bindparam("h")),
            "seen": select(r.device_pk, r.body_sha256, r.verdict).where(r.report_id == bindparam("rid")),
            "device_for_update": select(d.id, d.interval_s, d.last_generated_at, d.verdict, d.failing, d.stale,
                                        d.report_count).where(d.id == bindparam("pk")).with_for_update(),
            "insert_report": insert(m.reports).values(
                {c: bindparam(c) for c in ("report_id", "device_pk", "generated_at", "received_at", "verdict",
                                           "fail_count", "body_sha256", "body")}).returning(r.id),
            "update_seen": update(m.devices).where(d.id == bindparam("pk"))
            .values({c: bindparam(c) for c in seen_cols}),
            "update_latest": update(m.devices).where(d.id == bindparam("pk"))
            .values({c: bindparam(c) for c in latest_cols}),
        }
        self.compiled: Dict[str, Tuple[str, Optional[List[str]]]] = {}
        for name, statement in statements.items():
            compiled = statement.compile(dialect=dialect)
            order = list(compiled.positiontup or []) if compiled.positional else None
            self.compiled[name] = (compiled.string, order)

    def run(self, cursor: Any, name: str, **params: Any) -> Any:
        """Execute on a DBAPI cursor (inside the SQLAlchemy connection's transaction); returns the cursor."""
        text, order = self.compiled[name]
        cursor.execute(text, tuple(params[key] for key in order) if order is not None else params)
        return cursor


class _Locked:
    """``with`` a write transaction, holding the in-process and cross-process write locks first (SQLite)."""

    _fds: Dict[str, int] = {}

    def __init__(self, lock: Optional[threading.Lock], engine: Engine, lock_file: str = "",
                 conn: Optional[Connection] = None) -> None:
        self.lock, self.engine, self.lock_file, self.conn = lock, engine, lock_file, conn
        self._ctx: Any = None
        self._fd = -1

    def _flock(self) -> None:
        if not self.lock_file or fcntl is None:
            return
        fd = self._fds.get(self.lock_file)
        if fd is None:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            self._fds[self.lock_file] = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd

    def _release(self) -> None:
        if self._fd >= 0 and fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._fd = -1
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Connection:
        if self.lock is not None:
            self.lock.acquire()
        try:
            self._flock()
            if self.conn is not None:  # a transaction on the caller's connection (it has the write option)
                self._ctx = self.conn.begin()
                self._ctx.__enter__()
                return self.conn
            self._ctx = self.engine.begin()
            return self._ctx.__enter__()
        except BaseException:
            self._release()
            raise

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._ctx.__exit__(*exc)
        finally:
            self._release()


class _Seen:
    def __init__(self, device_pk: int, body_sha256: str, verdict: str) -> None:
        self.device_pk, self.body_sha256, self.verdict = device_pk, body_sha256, verdict


def _existing_report(conn: Connection, report_id: str) -> Any:
    return conn.execute(select(m.reports.c.device_pk, m.reports.c.body_sha256, m.reports.c.verdict).where(
        m.reports.c.report_id == report_id)).first()


def _duplicate(seen: Any, device_pk: int, report: PreparedReport) -> Dict[str, Any]:
    if seen.device_pk != device_pk:
        raise ApiError(409, "report_id %s already belongs to another device" % report.report_id)
    if seen.body_sha256 != report.sha256:
        raise ApiError(409, "report_id %s was already stored with different content" % report.report_id)
    return {"stored": True, "duplicate": True, "report_id": report.report_id, "verdict": seen.verdict,
            "latest": False, "transitions": []}


def _sync_failing(conn: Connection, device_pk: int, before: Dict[str, str], after: Dict[str, str]) -> None:
    t = m.device_failing
    gone = [check for check in before if check not in after]
    if gone:
        conn.execute(delete(t).where(and_(t.c.device_pk == device_pk, t.c.check_id.in_(gone))))
    for check, severity in after.items():
        if check not in before:
            conn.execute(insert(t).values(device_pk=device_pk, check_id=check, severity=severity))
        elif before[check] != severity:
            conn.execute(update(t).where(t.c.device_pk == device_pk, t.c.check_id == check).values(severity=severity))


def add_transition(conn: Connection, device_pk: int, kind: str, now: float, report_pk: Optional[int],
                   detail: Dict[str, Any]) -> int:
    """Record a transition and queue it for every enabled webhook that wants this kind (same transaction)."""
    text = json.dumps(detail, sort_keys=True)
    transition_id = conn.execute(insert(m.transitions).values(
        device_pk=device_pk, kind=kind, at=now, report_pk=report_pk, detail=text)).inserted_primary_key[0]
    hooks = conn.execute(select(m.webhooks.c.id, m.webhooks.c.events).where(m.webhooks.c.enabled.is_(True))).all()
    wanted = [hook.id for hook in hooks if hook.events == "*" or kind in hook.events.split(",")]
    if wanted:
        from exposure_guard_server.webhooks import build_payload

        payload = build_payload(conn, transition_id)
        conn.execute(insert(m.webhook_deliveries), [
            {"webhook_id": hook_id, "transition_id": transition_id, "event": kind, "payload": payload,
             "status": "pending", "attempts": 0, "next_attempt_at": now, "last_error": "", "created_at": now}
            for hook_id in wanted])
    return transition_id



def flush_counters(engine: Engine, deltas: Dict[str, int]) -> None:
    """Add this process's counter deltas to the shared ``counters`` table."""
    if not deltas:
        return
    c = m.counters.c
    writer = engine.execution_options(**WRITE)
    for attempt in range(3):
        try:
            with writer.begin() as conn:
                for name in sorted(deltas):
                    changed = conn.execute(update(m.counters).where(c.name == name).values(
                        value=c.value + deltas[name])).rowcount
                    if not changed:
                        conn.execute(insert(m.counters).values(name=name, value=deltas[name]))
            return
        except IntegrityError:
            if attempt == 2:
                raise


def read_counters(engine: Engine) -> Dict[str, int]:
    with engine.connect() as conn:
        return {row.name: int(row.value) for row in conn.execute(select(m.counters.c.name, m.counters.c.value))}
