"""The device list's search (``q``): host name, device id, model or LAN addresses (their JSON text)
contain ``q``, case-insensitively; ``%``, ``_`` and ``\\`` in ``q`` are literal characters. The results
are exactly those of the plain scan it replaces (``scan_condition``: SQLAlchemy's ILIKE on each field,
which is ``lower(field) LIKE lower('%q%')``), found through an index:

- PostgreSQL: ``devices.search_text`` holds the four fields lowered, one a line (a stored generated
  column), with a pg_trgm GIN index. PostgreSQL's ILIKE lowers both sides with ``lower()``, so
  ``search_text LIKE lower('%q%')`` is the same test as the four ILIKEs as long as ``q`` holds no line
  break (a match cannot then run from one field into the next); a ``q`` with one uses the scan. Trigrams
  need 3 characters: for a shorter ``q`` (or one without letters or digits) the planner scans
  ``search_text``, one LIKE on ready-lowered text a row instead of four ILIKEs. Each search is planned for
  its own pattern (``plan_cache_mode``): a plan made for any pattern could walk the whole trigram index.
- SQLite: the FTS5 table ``device_search`` (trigram tokenizer, case folded) indexes ``search_text``; the
  triggers of migration 0011 keep it in step with every write of a device. Its match on ``q`` as a
  phrase is a superset (its case folding covers more than ASCII, and a phrase may span two fields), so
  the plain LIKEs then check the candidates. SQLite's LIKE already ignores ASCII case, and its
  ``lower()`` folds only ASCII: ``field LIKE '%q%'`` is the same test as ``lower(field) LIKE
  lower('%q%')``, without a copy of every value. A ``q`` shorter than 3 characters cannot be a trigram
  phrase: it scans with those LIKEs.

The device count of a search comes first; when it is at most ``SORT_MATCHES_UP_TO`` the page sorts the
matches found through the index (``unindexed``: the ORDER BY as expressions no index has, or a planner
might walk the sort order's index over every device for a rare name); with more matches the page walks
the sort order's index and stops at the page's last match. On SQLite the FTS5 index first says how many
candidates it has: past ``INDEX_SHARE`` of the devices looking each up costs more than checking every row
with the LIKEs, so the count scans too.

Without the index (no pg_trgm, no trigram tokenizer) everything still works by scanning; this is logged
once. ``EXPOSURE_GUARD_SEARCH_SCAN=1`` forces the old ILIKE scan (the benchmark's baseline)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, List, Optional

from sqlalchemy import Engine, column, func, literal_column, or_, select, table, text

from exposure_guard_server.db import models as m

log = logging.getLogger("exposure_guard_server.search")

MIN_INDEXED = 3  # characters: the shortest trigram
SORT_MATCHES_UP_TO = 5000
INDEX_SHARE = 0.4  # SQLite: the FTS5 index finds the matches when it offers at most this share of the devices
SCAN_ENV = "EXPOSURE_GUARD_SEARCH_SCAN"

_fts = table(m.SEARCH_FTS_TABLE, column("rowid"), column("search_text"))


def like_pattern(q: str) -> str:
    """``%q%`` with q's own ``\\``, ``%`` and ``_`` escaped (with ``\\``)."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def fields() -> List[Any]:
    return [m.devices.c[name] for name in m.SEARCH_FIELDS]


def scan_condition(q: str) -> Any:
    """The plain scan: ILIKE on each field (the search's definition, and its baseline)."""
    pattern = like_pattern(q)
    return or_(*[field.ilike(pattern, escape="\\") for field in fields()])


def fts_phrase(q: str) -> str:
    """``q`` as one FTS5 phrase (a double quote inside is doubled)."""
    return '"' + q.replace('"', '""') + '"'


class Match:
    """One search's conditions: ``condition`` finds the matches through the index (for the count, and for a
    page of at most SORT_MATCHES_UP_TO of them, sorted: ``sort_matches``); ``walk_condition`` checks rows met
    while walking the index of the page's sort order (for a page of more matches)."""

    def __init__(self, condition: Any, walk_condition: Any, sorts: bool) -> None:
        self.condition, self.walk_condition, self.sorts = condition, walk_condition, sorts

    def sort_matches(self, total: int) -> bool:
        return self.sorts and total <= SORT_MATCHES_UP_TO

    def page_condition(self, total: int) -> Any:
        return self.condition if self.sort_matches(total) else self.walk_condition


class Search:
    """The search conditions for one engine (its dialect and whether its index is there)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.forced_scan = os.environ.get(SCAN_ENV, "") not in ("", "0")
        self._indexed: Optional[bool] = None
        self._lock = threading.Lock()

    def indexed(self) -> bool:
        """Is the search index there (looked up once)? Its absence is logged."""
        if self._indexed is None:
            with self._lock:
                if self._indexed is None:
                    self._indexed = self._find_index()
                    if not self._indexed:
                        log.warning("search: no search index (%s): the device search scans the devices table "
                                    "(see docs/server.md, Performance)", "pg_trgm index %s" % m.SEARCH_TRGM_INDEX
                                    if self.dialect == "postgresql" else "FTS5 table %s" % m.SEARCH_FTS_TABLE)
        return self._indexed

    def _find_index(self) -> bool:
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                return conn.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :n"),
                                    {"n": m.SEARCH_FTS_TABLE}).first() is not None
            if self.dialect == "postgresql":
                return conn.execute(text("SELECT 1 FROM pg_indexes WHERE tablename = 'devices' AND indexname = :n "
                                         "AND schemaname = current_schema()"), {"n": m.SEARCH_TRGM_INDEX}).first() is not None
        return False

    def mode(self, q: str) -> str:
        """How ``q`` is searched: ``index`` (trigrams), ``text`` (a scan of ready-lowered search_text,
        PostgreSQL), ``like`` (a scan with plain LIKEs, SQLite) or ``scan`` (the ILIKE scan)."""
        if self.forced_scan:
            return "scan"
        if self.dialect == "postgresql":
            if "\n" in q:
                return "scan"
            return "index" if len(q) >= MIN_INDEXED and self.indexed() else "text"
        if self.dialect == "sqlite":
            # NUL would end the FTS5 query string early (the HTTP layer refuses it anyway).
            return "index" if len(q) >= MIN_INDEXED and "\x00" not in q and self.indexed() else "like"
        return "scan"

    def match(self, conn: Any, q: str) -> Match:
        """The conditions for ``q`` on ``conn`` (inside its transaction, before the search's statements)."""
        mode = self.mode(q)
        if mode == "scan":
            return Match(scan_condition(q), scan_condition(q), sorts=False)
        pattern = like_pattern(q)
        if self.dialect == "postgresql":
            conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            condition = m.devices.c.search_text.like(func.lower(pattern), escape="\\")
            return Match(condition, condition, sorts=True)
        plain = or_(*[field.like(pattern, escape="\\") for field in fields()])
        if mode == "index":
            # How many rows the FTS5 index offers (cheap: 7 ms for all of 100,000)? Looking each up to check
            # it costs about 0.3 µs; checking every row with the LIKEs costs 15-25 ms at 100,000 devices.
            match = _fts.c.search_text.match(fts_phrase(q))
            candidates, size = conn.execute(select(select(func.count()).select_from(_fts).where(match).scalar_subquery(),
                                                   select(func.max(m.devices.c.id)).scalar_subquery())).one()
            if candidates <= INDEX_SHARE * (size or 0):
                return Match(m.devices.c.id.in_(select(_fts.c.rowid).where(match)) & plain, plain, sorts=True)
        return Match(plain, plain, sorts=False)


def unindexed(expression: Any, numeric: bool) -> Any:
    """The same sort key as an expression no index has (``x + 0``, ``x || ''``): same values, same order."""
    return expression + literal_column("0") if numeric else expression.concat(literal_column("''"))
