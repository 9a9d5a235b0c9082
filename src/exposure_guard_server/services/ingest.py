"""Check-in: decode, validate and store one report (no HTTP here; ``asgi.py`` serves the route).

Check-in is idempotent on ``report_id``: the same report delivered twice is stored once (the second time
answers ``{"duplicate": true}``); a different report body under a known ``report_id``, or a report whose
``device.device_id`` is not the node key's device, is refused and nothing is stored."""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

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


class Ingest:
    """The check-in path of one server process (one per uvicorn worker)."""

    def __init__(self, engine: Engine, lock: WriteLock, counters: Counters, *, max_clock_skew: float = 300.0) -> None:
        self.engine = engine
        self.max_clock_skew = max_clock_skew
        self.lock = lock
        self.writer = lock.writer
        self.counters = counters
        self.sql = HotSql(engine.dialect)
        dbapi_errors = getattr(engine.dialect.dbapi, "IntegrityError", IntegrityError)
        self._integrity_errors = (IntegrityError, dbapi_errors)

    def checkin(self, node_key: Optional[str], raw: bytes, content_encoding: str, interval_header: Optional[str],
                max_body: int, now: Optional[float] = None) -> Dict[str, Any]:
        try:
            result = self._checkin(node_key, raw, content_encoding, interval_header, max_body, now)
        except ApiError as exc:
            self.counters.count("checkins_rejected_%d" % exc.status)
            exc.counted = True
            raise
        self.counters.count("checkins_duplicate" if result["duplicate"] else "checkins_stored")
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
                    raise _unknown_key(sql, cursor, node_key)
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
                    with self.lock.begin(conn):
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
        _id, interval_s, last_generated_at, verdict, failing, stale, report_count, retired_at = dev
        # A report cannot have been made after it arrived: one dated further ahead than the allowed skew (a
        # wrong clock, a forged date) is ordered by its arrival, else it would stay "latest" forever.
        ordered_at = report.generated_at if report.generated_at <= now + self.max_clock_skew else now
        report_pk = sql.run(cursor, "insert_report", report_id=report.report_id, device_pk=device_pk,
                            generated_at=ordered_at, received_at=now, verdict=report.verdict,
                            fail_count=len(report.failing), body_sha256=report.sha256,
                            body=report.body).fetchone()[0]
        interval = parse_interval(interval_header, interval_s)
        seen = {"pk": device_pk, "last_seen_at": now, "stale_base": now + 2 * interval, "stale": False,
                "interval_s": interval, "report_count": report_count + 1}
        events: List[Tuple[str, Dict[str, Any]]] = []
        if retired_at is not None:  # a box thought gone is reporting: back in every list, and said so
            sql.run(cursor, "unretire", pk=device_pk)
        if stale or retired_at is not None:
            events.append(("back", {"last_report_id": report.report_id, "was_retired": retired_at is not None}))
        latest = last_generated_at is None or ordered_at >= last_generated_at
        if latest:
            previous_failing = {item[0]: item[1] for item in json.loads(failing)}
            accepted = frozenset(r[0] for r in sql.run(cursor, "accepted", pk=device_pk, pk2=device_pk).fetchall())
            if accepted:  # checks accepted on the server leave the box's verdict and failing list
                report.failing = {k: v for k, v in report.failing.items() if k not in accepted}
                report.verdict = verdict_of(report.doc, accepted)
            device = report.doc["device"]
            sql.run(cursor, "update_latest", last_generated_at=ordered_at, last_report_pk=report_pk,
                    verdict=report.verdict, risk=RISK[report.verdict], fail_count=len(report.failing),
                    failing=json.dumps(sorted(report.failing.items())), hostname=device["hostname"],
                    hostname_key=hostname_key(device["hostname"]),
                    model=device["model"], firmware=device["firmware"], build=device["build"],
                    lan_addresses=json.dumps(device["lan_addresses"]),
                    agent_version=printable(report.doc["agent"]["version"], 64), **seen)
            events.extend(derive_transitions(verdict, previous_failing, report.verdict, report.failing))
            if previous_failing != report.failing:
                sync_failing(conn, device_pk, previous_failing, report.failing)
        else:
            sql.run(cursor, "update_seen", **seen)
        for kind, detail in events:
            detail = dict(detail, report_id=report.report_id)
            add_transition(conn, device_pk, kind, now, report_pk, detail)
        return {"stored": True, "duplicate": False, "report_id": report.report_id, "verdict": report.verdict,
                "latest": latest, "transitions": [kind for kind, _ in events]}


def _unknown_key(sql: HotSql, cursor: Any, node_key: str) -> ApiError:
    """401 for a key no device has; it says so when the key waits for an operator's approval."""
    row = sql.run(cursor, "pending_key", h=token_hash(node_key)).fetchone()
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


def _duplicate(seen: Any, device_pk: int, report: PreparedReport) -> Dict[str, Any]:
    if seen.device_pk != device_pk:
        raise ApiError(409, "report_id %s already belongs to another device" % report.report_id)
    if seen.body_sha256 != report.sha256:
        raise ApiError(409, "report_id %s was already stored with different content" % report.report_id)
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
