"""The read side: fleet summary, device list (filters, sort, pagination), device detail, history, diffs
and CSV."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Sequence

from sqlalchemy import Engine, and_, case, false, func, select, true

from exposure_guard.contracts import SEVERITY_RANK
from exposure_guard_server.catalogue import explained
from exposure_guard_server.db import models as m
from exposure_guard_server.errors import ApiError
from exposure_guard_server.naturalsort import hostname_key
from exposure_guard_server.reportlogic import STATES, VERDICTS, diff_reports, format_time, parse_time
from exposure_guard_server.services.ingest import load_body
from exposure_guard_server.services.search import Search
from exposure_guard_server.services.search import unindexed as search_unindexed

SORTS = {
    "risk": ("risk", "desc"),
    "hostname": ("hostname_key", "asc"),  # natural order: NAS2 before NAS10
    "last_seen": ("last_seen_at", "desc"),
    "firmware": ("firmware", "asc"),
    "failing": ("fail_count", "desc"),
    "model": ("model", "asc"),
}
MAX_PER_PAGE = 500
MAX_PAGE = 1_000_000  # keeps every OFFSET a small number however the page is asked for
PER_PAGE_CHOICES = (25, 50, 100, 200, 500)
NO_GROUP = "(none)"  # the group filter's value for boxes in no group (group names cannot start with "(")


@dataclass
class DeviceFilter:
    state: str = ""  # exposed | at_risk | ok | stale | pending | "" (all)
    exposed: Optional[bool] = None
    check: str = ""  # failing check id
    stale: Optional[bool] = None
    firmware: str = ""
    q: str = ""  # hostname, device id, model or a LAN address contains
    group: str = ""  # group name, NO_GROUP for boxes in none, "" for all
    secret: Optional[int] = None  # enrolled with this enrollment secret (id)
    allowed: Optional[FrozenSet[int]] = None  # the caller's groups (roles.py); None: every box
    tag: str = ""
    retired: bool = False  # False: the boxes in service; True: the retired ones only
    sort: str = "risk"
    order: str = ""  # asc | desc | "" (the sort's natural order)
    page: int = 1
    per_page: int = 50

    def validate(self) -> DeviceFilter:
        if self.state and self.state not in STATES:
            raise ApiError(400, "state must be one of: " + ", ".join(STATES))
        if self.sort not in SORTS:
            raise ApiError(400, "sort must be one of: " + ", ".join(SORTS))
        if self.order not in ("", "asc", "desc"):
            raise ApiError(400, "order must be asc or desc")
        if not 1 <= self.page <= MAX_PAGE or not 1 <= self.per_page <= MAX_PER_PAGE:
            raise ApiError(400, "page must be 1 to %d and per_page 1 to %d" % (MAX_PAGE, MAX_PER_PAGE))
        if len(self.check) > 80 or len(self.firmware) > 64 or len(self.q) > 255 or len(self.group) > 100 \
                or len(self.tag) > 32:
            raise ApiError(400, "filter value too long")
        return self

    def query_args(self, **changes: Any) -> Dict[str, str]:
        """The non-default filters as URL query arguments (for links that keep the filter)."""
        values = {"group": self.group, "state": self.state, "check": self.check, "firmware": self.firmware,
                  "q": self.q, "secret": "" if self.secret is None else str(self.secret), "tag": self.tag,
                  "retired": "true" if self.retired else "",
                  "sort": self.sort if self.sort != "risk" else "", "order": self.order,
                  "exposed": "" if self.exposed is None else ("true" if self.exposed else "false"),
                  "stale": "" if self.stale is None else ("true" if self.stale else "false"),
                  "page": str(self.page) if self.page != 1 else "",
                  "per_page": str(self.per_page) if self.per_page != 50 else ""}
        values.update({k: ("" if v is None else str(v)) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v}


def _named_devices() -> Any:
    """Devices joined to the names of their group and enrollment secret (either may be none)."""
    d = m.devices.c
    return m.devices.outerjoin(m.groups, d.group_id == m.groups.c.id).outerjoin(
        m.enroll_secrets, d.enroll_secret_id == m.enroll_secrets.c.id)


def _tags_of(device_pk: Any) -> Any:
    """A device's tags joined with commas (a correlated subquery: one round trip for a page of devices)."""
    t = m.device_tags.c
    return select(func.aggregate_strings(t.tag, ",")).where(t.device_pk == device_pk).scalar_subquery().label("tags")


NUMERIC_SORTS = frozenset({"risk", "last_seen_at", "fail_count", "id"})


def _sort_key(col: Any, name: str, direction: str, unindexed: bool) -> Any:
    key = search_unindexed(col, name in NUMERIC_SORTS) if unindexed else col
    return key.desc() if direction == "desc" else key.asc()


def state_of(verdict: str, silent: bool) -> str:
    """The one state a device is counted under: an exposed box stays exposed when it goes silent (its last
    word was that the internet reaches it); any other silent box is stale."""
    return "stale" if silent and verdict != "exposed" else verdict


def worst_first(failing: List[Any]) -> List[str]:
    """Failing check ids, the most severe first (ties by id): the list shows the first few, so the check
    that makes a box exposed must not hide behind alphabetically earlier ones."""
    items = [item for item in failing if isinstance(item, list) and len(item) == 2]
    return [str(check_id) for check_id, severity in sorted(items, key=lambda it: (-SEVERITY_RANK.get(it[1], -1),
                                                                                   str(it[0])))]


class Reader:
    def __init__(self, engine: Engine, *, stale_grace: float = 600, max_clock_skew: float = 300) -> None:
        self.engine = engine
        self.search = Search(engine)
        self.stale_grace = stale_grace
        self.max_clock_skew = max_clock_skew

    def cutoff(self, now: Optional[float] = None) -> float:
        return (time.time() if now is None else now) - self.stale_grace

    # -- summary ---------------------------------------------------------------------------------------
    def summary(self, now: Optional[float] = None, top: int = 20, scope: Optional[DeviceFilter] = None) -> Dict[str, Any]:
        """Counts by state, the most failing checks and pending re-enrollments, of the devices in ``scope``'s
        group and enrollment secret (the whole fleet without one). An exposed box counts as exposed also
        when it has stopped reporting (``exposed_silent`` of them): its last word was that it is exposed."""
        d = m.devices.c
        cutoff = self.cutoff(now)
        conds = self._scope(scope) if scope is not None else []
        with self.engine.connect() as conn:
            by_verdict = {v: int(n) for v, n in conn.execute(
                select(d.verdict, func.count()).where(and_(True, *conds)).group_by(d.verdict))}
            # One range scan of the covering (stale_base, verdict) index; a GROUP BY would make SQLite walk
            # the verdict index over every device instead.
            row = conn.execute(select(*[func.coalesce(func.sum(case((d.verdict == v, 1), else_=0)), 0)
                                        for v in VERDICTS]).where(d.stale_base < cutoff, *conds)).one()
            stale_by_verdict = {v: int(n) for v, n in zip(VERDICTS, row)}
            f = m.device_failing.c
            failing = select(f.check_id, func.count().label("n"))
            if conds:
                failing = failing.where(f.device_pk.in_(select(d.id).where(*conds)))
            ranked = conn.execute(failing.group_by(f.check_id).order_by(func.count().desc(), f.check_id)
                                  .limit(top)).all()
            reports_total = conn.execute(select(func.max(m.reports.c.id))).scalar() or 0
            waiting = select(func.count()).select_from(m.enroll_requests)
            if conds:
                waiting = waiting.where(m.enroll_requests.c.device_pk.in_(select(d.id).where(*conds)))
            waiting_n = conn.execute(waiting).scalar_one()
            retired_scope = DeviceFilter(**{**(scope.__dict__ if scope is not None else {}), "retired": True})
            retired_n = conn.execute(select(func.count()).select_from(m.devices).where(
                *self._scope(retired_scope))).scalar_one()
        counts = {state: 0 for state in STATES}
        for verdict in VERDICTS:
            counts[verdict] = by_verdict.get(verdict, 0) - stale_by_verdict.get(verdict, 0)
        counts["exposed"] = by_verdict.get("exposed", 0)
        counts["stale"] = sum(n for v, n in stale_by_verdict.items() if v != "exposed")
        return {
            "devices": sum(by_verdict.values()),
            "counts": counts,
            "exposed_silent": stale_by_verdict.get("exposed", 0),
            "stale_last_verdict": {v: stale_by_verdict.get(v, 0) for v in VERDICTS},
            "failing_checks": [{"check_id": r.check_id, "devices": r.n} for r in ranked],
            "reports_stored": int(reports_total),
            "reenrollments_pending": int(waiting_n),  # re-enrollments without proof, waiting for an operator
            "stale_grace_s": self.stale_grace,
            "retired": int(retired_n),  # not counted above
        }

    def groups(self, now: Optional[float] = None, allowed: Optional[FrozenSet[int]] = None) -> List[Dict[str, Any]]:
        """Every group (and the boxes in none) with its devices by state, riskiest first: most exposed, then
        most at risk, then most silent. ``allowed``: only these groups (a caller limited to groups)."""
        d, g = m.devices.c, m.groups.c
        cutoff = self.cutoff(now)
        silent = d.stale_base < cutoff
        scope = self._scope(DeviceFilter(allowed=allowed))
        with self.engine.connect() as conn:
            names = {r.id: r.name for r in conn.execute(select(g.id, g.name).where(
                g.id.in_(sorted(allowed)) if allowed is not None else true()))}
            rows = conn.execute(select(d.group_id, d.verdict, silent.label("silent"), func.count().label("n"))
                                .where(and_(True, *scope)).group_by(d.group_id, d.verdict, silent)).all()
        table: Dict[Optional[int], Dict[str, int]] = {gid: {s: 0 for s in STATES} for gid in names}
        for row in rows:
            counts = table.setdefault(row.group_id, {s: 0 for s in STATES})
            counts[state_of(row.verdict, bool(row.silent))] += int(row.n)
        out: List[Dict[str, Any]] = []
        for gid, counts in table.items():
            if gid is None and not sum(counts.values()):
                continue
            name = names.get(gid, NO_GROUP) if gid is not None else NO_GROUP
            out.append({"group": name, "group_id": gid, "devices": sum(counts.values()), "counts": counts})
        out.sort(key=lambda e: (-e["counts"]["exposed"], -e["counts"]["at_risk"], -e["counts"]["stale"],
                                hostname_key(e["group"])))
        return out

    # -- device list -----------------------------------------------------------------------------------
    def _scope(self, flt: DeviceFilter) -> List[Any]:
        """The conditions of ``flt``'s group and enrollment secret: whose devices a page is about."""
        d = m.devices.c
        conds: List[Any] = []
        if flt.allowed is not None:
            conds.append(d.group_id.in_(sorted(flt.allowed)) if flt.allowed else false())
        conds.append(d.retired_at.is_not(None) if flt.retired else d.retired_at.is_(None))
        if flt.tag:
            conds.append(d.id.in_(select(m.device_tags.c.device_pk).where(m.device_tags.c.tag == flt.tag.lower())))
        if flt.group == NO_GROUP:
            conds.append(d.group_id.is_(None))
        elif flt.group:
            conds.append(d.group_id == select(m.groups.c.id).where(m.groups.c.name == flt.group).scalar_subquery())
        if flt.secret is not None:
            conds.append(d.enroll_secret_id == flt.secret)
        return conds

    def _where(self, flt: DeviceFilter, cutoff: float) -> List[Any]:
        """Every condition of ``flt`` but the search (``q``: services/search.py)."""
        d = m.devices.c
        conds = self._scope(flt)
        if flt.state == "stale":
            conds.extend([d.stale_base < cutoff, d.verdict != "exposed"])
        elif flt.state == "exposed":
            conds.append(d.verdict == "exposed")
        elif flt.state:
            conds.extend([d.verdict == flt.state, d.stale_base >= cutoff])
        if flt.exposed is not None:
            conds.append(d.verdict == "exposed" if flt.exposed else d.verdict != "exposed")
        if flt.stale is not None:
            conds.append(d.stale_base < cutoff if flt.stale else d.stale_base >= cutoff)
        if flt.firmware:
            conds.append(d.firmware == flt.firmware)
        if flt.check:
            f = m.device_failing.c
            conds.append(d.id.in_(select(f.device_pk).where(f.check_id == flt.check)))
        return conds

    def devices(self, flt: DeviceFilter, now: Optional[float] = None) -> Dict[str, Any]:
        flt.validate()
        now = time.time() if now is None else now
        cutoff = self.cutoff(now)
        d, g, e = m.devices.c, m.groups.c, m.enroll_secrets.c
        conds = self._where(flt, cutoff)
        column, natural = SORTS[flt.sort]
        direction = flt.order or natural
        cols = [d.device_id, d.hostname, d.model, d.firmware, d.build, d.verdict, d.fail_count, d.failing,
                d.last_seen_at, d.enrolled_at, d.interval_s, d.stale_base, d.lan_addresses, d.agent_version,
                d.report_count, d.retired_at, d.note, g.name.label("group"), e.name.label("enroll_secret"),
                _tags_of(d.id)]
        offset = (flt.page - 1) * flt.per_page
        with self.engine.connect() as conn:
            match = self.search.match(conn, flt.q) if flt.q else None
            count_conds = conds + ([match.condition] if match is not None else [])
            total = conn.execute(select(func.count()).select_from(m.devices).where(and_(True, *count_conds))
                                 ).scalar_one()
            rows: Sequence[Any] = []
            if total > offset:
                page_conds = conds + ([match.page_condition(total)] if match is not None else [])
                # A search with few matches sorts them (found through its index) rather than letting the
                # planner walk the sort order's index over every device.
                plain = match is not None and match.sort_matches(total)
                order = [_sort_key(getattr(d, column), column, direction, plain)]
                if column != "hostname_key":
                    order.append(_sort_key(d.hostname_key, "hostname_key", "asc", plain))
                order.append(_sort_key(d.id, "id", "asc", plain))
                rows = conn.execute(select(*cols).select_from(_named_devices()).where(and_(True, *page_conds))
                                    .order_by(*order).limit(flt.per_page).offset(offset)).all()
        return {"total": total, "page": flt.page, "per_page": flt.per_page,
                "pages": max(1, -(-int(total) // flt.per_page)),
                "devices": [self._device_dict(r, cutoff) for r in rows]}

    def _device_dict(self, r: Any, cutoff: float) -> Dict[str, Any]:
        stale = r.stale_base < cutoff
        return {
            "device_id": r.device_id, "hostname": r.hostname, "model": r.model, "firmware": r.firmware,
            "build": r.build, "verdict": r.verdict, "state": state_of(r.verdict, stale), "stale": stale,
            "fail_count": r.fail_count, "failing": worst_first(json.loads(r.failing)),
            "last_seen_at": format_time(r.last_seen_at), "last_seen_epoch": r.last_seen_at,
            "enrolled_at": format_time(r.enrolled_at), "interval_s": r.interval_s,
            "stale_after": format_time(r.stale_base + self.stale_grace),
            "lan_addresses": json.loads(r.lan_addresses), "agent_version": r.agent_version,
            "reports": r.report_count, "group": r.group or "", "enroll_secret": r.enroll_secret or "",
            "retired_at": format_time(r.retired_at), "note": r.note,
            "tags": sorted((r.tags or "").split(",")) if r.tags else [],
        }

    def firmware_versions(self, limit: int = 200, scope: Optional[DeviceFilter] = None) -> List[str]:
        d = m.devices.c
        conds = self._scope(scope) if scope is not None else []
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(d.firmware).where(and_(True, *conds)).group_by(d.firmware)
                                               .order_by(d.firmware).limit(limit)).all()]

    def iter_csv(self, flt: DeviceFilter, now: Optional[float] = None) -> Iterator[str]:
        """CSV of every device matching ``flt`` (all pages). Cells a spreadsheet would run as a formula are
        prefixed with ``'`` (device-supplied strings are untrusted)."""
        header = ["device_id", "hostname", "state", "verdict", "stale", "fail_count", "failing", "model",
                  "firmware", "build", "last_seen_at", "enrolled_at", "lan_addresses", "agent_version", "group",
                  "enroll_secret"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(header)
        yield _take(buffer)
        page = DeviceFilter(**{**flt.__dict__, "per_page": MAX_PER_PAGE, "page": 1})
        while True:
            chunk = self.devices(page, now)
            for dev in chunk["devices"]:
                writer.writerow([_cell(v) for v in (
                    dev["device_id"], dev["hostname"], dev["state"], dev["verdict"], str(dev["stale"]).lower(),
                    dev["fail_count"], " ".join(dev["failing"]), dev["model"], dev["firmware"], dev["build"],
                    dev["last_seen_at"], dev["enrolled_at"], " ".join(dev["lan_addresses"]), dev["agent_version"],
                    dev["group"], dev["enroll_secret"])])
            yield _take(buffer)
            if page.page >= chunk["pages"]:
                break
            page.page += 1

    # -- one device ------------------------------------------------------------------------------------
    def _device_row(self, conn: Any, device_id: str, allowed: Optional[FrozenSet[int]] = None) -> Any:
        """The device's row; 404 when there is none or the caller may not see it (the same answer)."""
        d, g, e = m.devices.c, m.groups.c, m.enroll_secrets.c
        row = conn.execute(select(m.devices, g.name.label("group"), e.name.label("enroll_secret"), _tags_of(d.id))
                           .select_from(_named_devices()).where(d.device_id == device_id)).first()
        if row is None or (allowed is not None and row.group_id not in allowed):
            raise ApiError(404, "no device %r" % device_id[:128])
        return row

    def device(self, device_id: str, *, history: int = 50, history_page: int = 1,
               now: Optional[float] = None, allowed: Optional[FrozenSet[int]] = None) -> Dict[str, Any]:
        cutoff = self.cutoff(now)
        r, t = m.reports.c, m.transitions.c
        with self.engine.connect() as conn:
            row = self._device_row(conn, device_id, allowed)
            latest, received_at = None, None
            if row.last_report_pk is not None:
                stored = conn.execute(select(r.body, r.received_at).where(r.id == row.last_report_pk)).first()
                if stored is not None:
                    latest, received_at = load_body(stored.body), stored.received_at
            reports = conn.execute(select(r.report_id, r.generated_at, r.received_at, r.verdict, r.fail_count)
                                   .where(r.device_pk == row.id).order_by(r.generated_at.desc(), r.id.desc())
                                   .limit(history).offset((history_page - 1) * history)).all()
            events = conn.execute(select(t.kind, t.at, t.detail).where(t.device_pk == row.id)
                                  .order_by(t.at.desc(), t.id.desc()).limit(50)).all()
            previous = None
            if row.last_report_pk is not None and row.last_generated_at is not None:
                blob = conn.execute(select(r.body).where(r.device_pk == row.id, r.id != row.last_report_pk,
                                                         r.generated_at <= row.last_generated_at)
                                    .order_by(r.generated_at.desc(), r.id.desc()).limit(1)).scalar()
                previous = load_body(blob) if blob is not None else None
        out = self._device_dict(row, cutoff)
        findings = (latest or {}).get("findings", [])
        order = {"fail": 0, "error": 1, "unknown": 2, "pass": 3, "skipped": 4}
        out["findings"] = explained(sorted(findings, key=lambda f: (order.get(str(f.get("status")), 9),
                                                                    -SEVERITY_RANK.get(str(f.get("severity")), -9),
                                                                    str(f.get("id")))))
        out["latest_report"] = {k: v for k, v in (latest or {}).items() if k != "findings"} if latest else None
        # Did the latest report ask a callback prober? (None: no report yet.) Without one the reachability
        # checks are skipped: the page says so rather than letting the box look checked.
        out["reachability_checked"] = any(str(f.get("id", "")).startswith("reachability.") and f.get("status") in (
            "pass", "fail") for f in findings) if latest else None
        out["history"] = [{"report_id": h.report_id, "generated_at": format_time(h.generated_at),
                           "received_at": format_time(h.received_at), "verdict": h.verdict,
                           "fail_count": h.fail_count} for h in reports]
        out["history_page"] = history_page
        out["transitions"] = [{"kind": e.kind, "at": format_time(e.at), "detail": json.loads(e.detail)}
                              for e in events]
        out["diff"] = diff_reports(previous, latest) if latest else None
        out.update(self._clock(latest, received_at))
        return out

    def _clock(self, latest: Optional[Dict[str, Any]], received_at: Optional[float]) -> Dict[str, Any]:
        """When the latest report says it was made and when it arrived. ``clock_skew_s``: how far ahead of
        the server's clock the agent dated it (0 when not ahead; a report made before it arrives is not skew)."""
        claimed = parse_time(str((latest or {}).get("generated_at", ""))) if latest else None
        skew = 0 if claimed is None or received_at is None else max(0, round(claimed - received_at))
        return {"latest_generated_at": (latest or {}).get("generated_at"), "latest_received_at": format_time(received_at),
                "clock_skew_s": skew, "clock_skew_allowed_s": self.max_clock_skew}

    def report(self, report_id: str, allowed: Optional[FrozenSet[int]] = None) -> Dict[str, Any]:
        """One stored report with the diff from the device's report before it."""
        r, d = m.reports.c, m.devices.c
        with self.engine.connect() as conn:
            row = conn.execute(select(r.id, r.device_pk, r.body, r.generated_at, r.received_at, d.device_id, d.hostname,
                                      d.group_id).join_from(m.reports, m.devices, r.device_pk == d.id)
                               .where(r.report_id == report_id.strip().lower()[:64])).first()
            if row is None or (allowed is not None and row.group_id not in allowed):
                raise ApiError(404, "no report %r" % report_id[:64])
            before = conn.execute(select(r.body).where(
                r.device_pk == row.device_pk, r.id != row.id,
                (r.generated_at < row.generated_at) | and_(r.generated_at == row.generated_at, r.id < row.id))
                .order_by(r.generated_at.desc(), r.id.desc()).limit(1)).scalar()
        doc = load_body(row.body)
        previous = load_body(before) if before is not None else None
        return {"device_id": row.device_id, "hostname": row.hostname, "received_at": format_time(row.received_at),
                "report": doc, "diff": diff_reports(previous, doc)}

    def delivery_counts(self) -> Dict[str, int]:
        """Webhook deliveries by status."""
        w = m.webhook_deliveries.c
        with self.engine.connect() as conn:
            return {status: int(n) for status, n in conn.execute(select(w.status, func.count()).group_by(w.status))}


# Characters a spreadsheet may take as the start of a formula: ASCII and their full-width forms (some
# spreadsheets fold ＝ to =), tab and CR.
FORMULA_START = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
# Bidirectional controls reorder what a cell shows (U+202E makes "exe.pdf" look like "fdp.exe"); no device
# name needs them, so they are dropped.
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _cell(value: Any) -> Any:
    """A CSV cell from device-supplied text: bidi controls dropped, and a leading ``'`` when the first
    character after any leading white space could start a formula."""
    if not isinstance(value, str):
        return value
    value = BIDI_CONTROLS.sub("", value)
    if value.lstrip()[:1] in FORMULA_START or value[:1] in FORMULA_START:
        return "'" + value
    return value


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def parse_bool(value: Optional[str], name: str) -> Optional[bool]:
    if value is None or value == "":
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, "%s must be true or false" % name)
