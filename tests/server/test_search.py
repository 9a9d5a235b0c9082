"""The device list's search (services/search.py) on SQLite and PostgreSQL: the indexed search gives exactly
what the old ILIKE scan gives (the same engine, forced to scan, is the oracle) for generated queries — short
ones, ``%``, ``_``, ``\\``, quotes, line breaks, unicode, any case — with every other filter, sort and page;
the index follows host name and address changes, retirement and deletion through the real write paths; the
plans use the index (FTS5 table / pg_trgm index) for 3 characters and more; migration 0011 keeps rows both
ways; without the index everything still works by scanning."""

from __future__ import annotations

import logging
import random
import uuid
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, insert, inspect, text
from tests.support.server import Api, PgCluster, device_identity, make_engine, make_report

from exposure_guard_server import db
from exposure_guard_server.db import models as m
from exposure_guard_server.db.schema import alembic_config
from exposure_guard_server.naturalsort import hostname_key
from exposure_guard_server.services import search as search_module
from exposure_guard_server.services.fleet import NO_GROUP, SORTS, DeviceFilter, Reader

# Names that make LIKE, FTS5 and case folding work: wildcards and the escape character as literals,
# quotes, FTS5 syntax, non-ASCII letters (some of which lower() folds on one engine only), emoji.
ODD_NAMES = ["100%-backup", "under_score", "back\\slash", 'quo"te', "it's", "NAS-Ümlaut", "straße-nas", "ÉCOLE-nas",
             "İstanbul", "\u212aelvin", "snow☃man", "emoji-😀-box", "a  b", "x", "OR AND NOT", "col:on", "(paren)",
             "nas*star", "MiXeD-CaSe", "tab\there", "line\nbreak", "ňàś-ŁÓDŹ", "Σίσυφος"]
MODELS = ["TS-453D", "TS-251D", "TVS-872XT", "ts-453d", "Mödel_%"]
FIELDS = ("hostname", "device_id", "model", "lan_addresses")
ALPHABET = "aAbBnNsS0123.-_%\\\"' \n\tÄäßİıéÉ☃😀:[],*K\u212a"


def _device(i: int, rng: random.Random, groups: int) -> Dict[str, Any]:
    host = ODD_NAMES[i] if i < len(ODD_NAMES) else "nas%d-%s" % (i, rng.choice(("office", "Lab", "BACKUP", "front")))
    addresses = ["10.%d.%d.%d" % (i // 256, i % 256, rng.randrange(256))]
    if i % 7 == 0:
        addresses.append("fe80::%x" % i)
    verdict = rng.choice(("ok", "ok", "at_risk", "exposed", "pending"))
    seen = 1_000_000.0 - rng.randrange(10 ** 6)
    return {"id": i + 1, "device_id": "dev-%04d%s" % (i, "-Ω" if i % 11 == 0 else ""), "node_key_hash": "%064x" % i,
            "enrolled_at": 0.0, "hostname": host, "hostname_key": hostname_key(host),
            "group_id": (i % groups) + 1 if i % 5 else None, "model": rng.choice(MODELS), "firmware": "5.1.%d" % (i % 3),
            "build": "", "lan_addresses": '["%s"]' % '", "'.join(addresses), "agent_version": "1.0.0",
            "interval_s": 3600, "last_seen_at": seen, "verdict": verdict,
            "risk": {"pending": 0, "ok": 1, "at_risk": 2, "exposed": 3}[verdict], "fail_count": rng.randrange(3),
            "failing": "[]", "stale_base": seen + 7200, "stale": False, "report_count": 1,
            "retired_at": 5.0 if i % 13 == 4 else None, "note": ""}


def populate(engine: Any, count: int, groups: int = 4, seed: int = 3) -> List[Dict[str, Any]]:
    rng = random.Random(seed)
    rows = [_device(i, rng, groups) for i in range(count)]
    with engine.begin() as conn:
        conn.execute(insert(m.groups), [{"id": g + 1, "name": "customer-%d" % g, "created_at": 0.0}
                                        for g in range(groups)])
        for start in range(0, count, 5000):
            conn.execute(insert(m.devices), rows[start:start + 5000])
        conn.execute(insert(m.device_tags), [{"device_pk": r["id"], "tag": "eu"} for r in rows if r["id"] % 3 == 0])
    return rows


@pytest.fixture
def fleet(engine: Any) -> Tuple[Any, List[Dict[str, Any]]]:
    return engine, populate(engine, 260)


def scanner(engine: Any) -> Reader:
    """A Reader whose search is the old ILIKE scan."""
    reader = Reader(engine)
    reader.search.forced_scan = True
    return reader


def listing(reader: Reader, flt: DeviceFilter) -> Tuple[int, List[str]]:
    out = reader.devices(flt, now=2_000_000.0)
    return out["total"], [d["device_id"] for d in out["devices"]]


def fts_consistent(engine: Any) -> None:
    """SQLite: the FTS5 index holds exactly the devices table's current values (FTS5's own check)."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO device_search (device_search, rank) VALUES ('integrity-check', 1)"))


FIXED_QUERIES = ["%", "_", "\\", "%%", "__", '"', "'", '""', "nas", "NAS", "10.", ".1", "dev-00", "ts-453", "ümlaut",
                 "ÜMLAUT", "Ümlaut", "STRASSE", "ß", "i", "I", "k", "K", "\u212a", "elvin", "İst", "ist", "\n", "e\nb",
                 "d\n[", "4\nts-", "p\ndev", "😀", "o", "-", ":", " ", "   ", "a  b", "OR", "*", "fe80", '["', '", "',
                 "]", "école", "ÉCOLE", "Ω", "ω", "σίσυφος", "ΣΊΣΥΦΟΣ", "łódź", "ŁÓDŹ", "☃", "\t", "b\\s", "0%-", "r_s"]


def queries_from(rows: List[Dict[str, Any]]) -> Any:
    """Fragments of stored values (any case), made-up text from a nasty alphabet, and fixed odd ones."""
    values = [str(r[f]) for r in rows for f in FIELDS]

    @st.composite
    def fragment(draw: Any) -> str:
        value = draw(st.sampled_from(values))
        start = draw(st.integers(0, max(0, len(value) - 1)))
        piece = value[start:start + draw(st.integers(1, 9))] or value
        flips = draw(st.lists(st.booleans(), min_size=len(piece), max_size=len(piece)))
        return "".join(c.swapcase() if flip else c for c, flip in zip(piece, flips))

    made_up = st.text(alphabet=ALPHABET, min_size=1, max_size=6)
    return st.one_of(fragment(), made_up, st.sampled_from(FIXED_QUERIES))


# (SORT_MATCHES_UP_TO, INDEX_SHARE): the shipped choice, then the page always walking an index, then SQLite's
# count through the FTS5 index whatever the candidates, then never (both page plans, both count plans).
PLANS = [(search_module.SORT_MATCHES_UP_TO, search_module.INDEX_SHARE), (0, 1.0), (3, 1.0), (5000, 0.0)]


@contextmanager
def plans(sort_matches_up_to: int, index_share: float) -> Iterator[None]:
    saved = search_module.SORT_MATCHES_UP_TO, search_module.INDEX_SHARE
    search_module.SORT_MATCHES_UP_TO, search_module.INDEX_SHARE = sort_matches_up_to, index_share
    try:
        yield
    finally:
        search_module.SORT_MATCHES_UP_TO, search_module.INDEX_SHARE = saved


FILTERS = st.fixed_dictionaries({
    "sort": st.sampled_from(sorted(SORTS)), "order": st.sampled_from(["", "asc", "desc"]),
    "group": st.sampled_from(["", "customer-1", NO_GROUP]), "retired": st.booleans(),
    "tag": st.sampled_from(["", "", "eu"]), "state": st.sampled_from(["", "", "ok", "exposed", "stale"]),
})


def test_indexed_search_gives_the_scans_results(fleet: Tuple[Any, List[Dict[str, Any]]]) -> None:
    engine, rows = fleet
    fast, slow = Reader(engine), scanner(engine)
    assert fast.search.indexed()

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(queries_from(rows), FILTERS, st.sampled_from(PLANS), st.sampled_from([(500, 1), (7, 2)]))
    def check(q: str, filters: Dict[str, Any], plan: Tuple[int, float], paging: Tuple[int, int]) -> None:
        with plans(*plan):
            flt = dict(filters, q=q, per_page=paging[0], page=paging[1])
            assert listing(fast, DeviceFilter(**flt)) == listing(slow, DeviceFilter(**flt)), (q, flt)

    check()


def test_fixed_queries_give_the_scans_results(fleet: Tuple[Any, List[Dict[str, Any]]]) -> None:
    engine, rows = fleet
    fast, slow = Reader(engine), scanner(engine)
    queries = FIXED_QUERIES + [name[i:i + n] for name in ODD_NAMES for i in range(len(name)) for n in (1, 3)]
    queries = list(dict.fromkeys(queries + [q.upper() for q in queries] + [q.lower() for q in queries]))
    filters = [{}, {"retired": True}, {"sort": "hostname", "per_page": 7, "page": 2}]
    for plan in PLANS:
        with plans(*plan):
            for q in queries:
                for flt in filters if plan == PLANS[0] else filters[:1]:
                    args = dict({"per_page": 500}, **flt, q=q)
                    assert listing(fast, DeviceFilter(**args)) == listing(slow, DeviceFilter(**args)), (q, args)


def test_search_semantics_on_ascii_rows(fleet: Tuple[Any, List[Dict[str, Any]]]) -> None:
    """What the scan means, checked in Python on the rows made of ASCII only: a case-insensitive substring of
    any of the four fields, ``%``, ``_`` and ``\\`` literal."""
    engine, rows = fleet
    reader = Reader(engine)
    plain = [r for r in rows if all(str(r[f]).isascii() for f in FIELDS) and r["retired_at"] is None]
    for q in ("%", "_", "\\", '"', "'", "nas1", "NAS1", "Lab", "10.0.", "dev-000", "ts-453d", "a  b", "*", "OR AND",
              "(", "fe80::", "9-b", "no such thing"):
        _total, found = listing(reader, DeviceFilter(q=q, per_page=500))
        want = {r["device_id"] for r in plain if any(q.lower() in str(r[f]).lower() for f in FIELDS)}
        assert {d for d in found if d in {r["device_id"] for r in plain}} == want, q
    assert listing(reader, DeviceFilter(q="100%", per_page=500))[1] == ["dev-0000-Ω"]
    assert listing(reader, DeviceFilter(q="r_s", per_page=500))[1] == ["dev-0001"]  # under_score only


def _statements(engine: Any, reader: Reader, flt: DeviceFilter) -> List[Tuple[str, Any]]:
    seen: List[Tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        # The count and the page (not SQLite's look at how many candidates the FTS5 index has).
        if statement.startswith("SELECT count(*)") or "ORDER BY" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        reader.devices(flt)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen


def _plans(engine: Any, statements: List[Tuple[str, Any]]) -> List[str]:
    plans = []
    with engine.connect() as conn:
        for statement, parameters in statements:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET plan_cache_mode = force_custom_plan")
                rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
                plans.append("\n".join(r[0] for r in rows))
            else:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
                plans.append("\n".join(str(r[-1]) for r in rows))
    return plans


def test_the_index_is_used_from_three_characters(engine: Any) -> None:
    populate(engine, 20000, groups=50)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE devices")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    reader = Reader(engine)
    index = "device_search VIRTUAL TABLE" if engine.dialect.name == "sqlite" else m.SEARCH_TRGM_INDEX
    for q in ("nas1234-", "10.77.", "DEV-0198"):
        for sort in ("risk", "hostname"):
            statements = _statements(engine, reader, DeviceFilter(q=q, sort=sort))
            assert len(statements) == 2  # the count and the page
            for plan in _plans(engine, statements):
                assert index in plan, (q, plan)
    # Shorter than a trigram: a scan (of search_text on PostgreSQL), never a walk of the whole index.
    for q in ("ab", "7", "1-"):
        statements = _statements(engine, reader, DeviceFilter(q=q))
        assert statements
        for plan in _plans(engine, statements):
            assert index not in plan, (q, plan)
            if engine.dialect.name == "postgresql":
                assert "search_text ~~" in plan, plan
    # A search with many matches pages by walking the sort order's index and checking each row.
    many = _statements(engine, reader, DeviceFilter(q="nas"))
    assert len(many) == 2
    if engine.dialect.name == "sqlite":
        assert "VIRTUAL TABLE" not in _plans(engine, many[1:])[0]


def _box(api: Api, device_id: str, hostname: str, addresses: List[str]) -> str:
    ident = dict(device_identity(device_id, hostname), lan_addresses=addresses)
    key = api.enroll_key(ident)
    assert api.checkin(key, make_report(ident)).status_code == 201
    return key


def _found(api: Api, q: str, **params: Any) -> List[str]:
    answer = api.client.get("/api/v1/devices", params=dict(params, q=q), headers=api.auth)
    assert answer.status_code == 200, answer.text
    found = [d["device_id"] for d in answer.json()["devices"]]
    scan = scanner(api.server.engine)
    assert listing(scan, DeviceFilter(q=q, retired=params.get("retired") == "true"))[1] == found, q
    return found


def test_search_follows_every_write_path(api: Api) -> None:
    engine = api.server.engine
    key = _box(api, "qnap-upd-1", "Alpha-One", ["192.168.7.21"])
    _box(api, "qnap-other", "charlie", ["192.168.9.9"])
    fts_consistent(engine)
    assert _found(api, "ALPHA") == ["qnap-upd-1"] and _found(api, "7.21") == ["qnap-upd-1"]
    assert _found(api, "upd-1") == ["qnap-upd-1"] and _found(api, "al") == ["qnap-upd-1"]
    # A check-in that renames the box and moves it to another address.
    ident = dict(device_identity("qnap-upd-1", "bravo-two"), lan_addresses=["10.9.8.77"], model="TS-873A")
    assert api.checkin(key, make_report(ident)).status_code == 201
    fts_consistent(engine)
    assert _found(api, "alpha") == [] and _found(api, "7.21") == [] and _found(api, "al") == []
    assert _found(api, "Bravo") == ["qnap-upd-1"] and _found(api, "8.77") == ["qnap-upd-1"]
    assert _found(api, "ts-873") == ["qnap-upd-1"] and _found(api, "192.168") == ["qnap-other"]
    # A check-in with the same identity changes nothing in the index.
    assert api.checkin(key, make_report(ident)).status_code == 201
    fts_consistent(engine)
    assert _found(api, "bravo") == ["qnap-upd-1"]
    # Retired: out of the list, in the retired list.
    assert api.client.patch("/api/v1/devices/qnap-upd-1", json={"retired": True}, headers=api.auth).status_code == 200
    assert _found(api, "bravo") == [] and _found(api, "bravo", retired="true") == ["qnap-upd-1"]
    # Deleted: gone from the index too.
    assert api.client.delete("/api/v1/devices/qnap-upd-1", headers=api.auth).status_code == 200
    fts_consistent(engine)
    assert _found(api, "bravo", retired="true") == [] and _found(api, "qnap") == ["qnap-other"]
    # Enrolled again under the same id, with the old name.
    _box(api, "qnap-upd-1", "Alpha-One", ["192.168.7.21"])
    fts_consistent(engine)
    assert _found(api, "qnap") == ["qnap-other", "qnap-upd-1"] or _found(api, "qnap") == ["qnap-upd-1", "qnap-other"]
    assert _found(api, "alpha-o") == ["qnap-upd-1"]
    # The HTML page searches the same way.
    api.login()
    page = api.client.get("/", params={"q": "ALPHA-o"})
    assert page.status_code == 200 and "qnap-upd-1" in page.text and "qnap-other" not in page.text


def _count(engine: Any, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def test_migration_0011_indexes_existing_rows_and_downgrades_keeping_them(engine: Any) -> None:
    from alembic import command

    with engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0010")
        conn.commit()
    assert "search_text" not in {c["name"] for c in inspect(engine).get_columns("devices")}
    with engine.begin() as conn:
        for pk, host, lan in ((1, "Old-Box", '["192.168.50.1"]'), (2, "other", '["10.0.0.2"]'), (3, "ÄRGER", "[]")):
            conn.execute(text("INSERT INTO devices (id, device_id, node_key_hash, enrolled_at, hostname, hostname_key, "
                              "model, firmware, build, lan_addresses, agent_version, interval_s, verdict, risk, "
                              "fail_count, failing, stale_base, stale, report_count, note) VALUES (:pk, :d, :h, 0, "
                              ":host, :host, 'TS-453D', '', '', :lan, '', 3600, 'ok', 1, 0, '[]', 0, false, 1, '')"),
                         {"pk": pk, "d": "dev-%d" % pk, "h": "key-%d" % pk, "host": host, "lan": lan})
            conn.execute(text("INSERT INTO reports (id, report_id, device_pk, generated_at, received_at, verdict, "
                              "fail_count, body_sha256, body) VALUES (:pk, :r, :pk, 1, 1, 'ok', 0, 's', :b)"),
                         {"pk": pk, "r": "r-%d" % pk, "b": b"x"})

    def rows() -> Any:
        with engine.connect() as conn:
            return (conn.execute(text("SELECT id, device_id, hostname, lan_addresses FROM devices ORDER BY id")).all(),
                    conn.execute(text("SELECT count(*) FROM reports")).scalar())

    before = rows()
    assert db.migrate(engine) == db.head_revision()
    assert rows() == before
    fts_consistent(engine)
    reader = Reader(engine)
    assert reader.search.indexed()
    assert listing(reader, DeviceFilter(q="old-b"))[1] == ["dev-1"]
    assert listing(reader, DeviceFilter(q="168.50"))[1] == ["dev-1"]
    assert listing(reader, DeviceFilter(q="dev-"))[0] == 3
    assert _count(engine, "SELECT search_text FROM devices WHERE id = 1") == 'old-box\ndev-1\nts-453d\n["192.168.50.1"]'
    with engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0010")
        conn.commit()
    assert rows() == before
    assert "search_text" not in {c["name"] for c in inspect(engine).get_columns("devices")}
    assert not any(m.is_search_object(name) for name in inspect(engine).get_table_names())
    assert not any(m.is_search_object(ix["name"] or "") for ix in inspect(engine).get_indexes("devices"))
    assert db.migrate(engine) == db.head_revision()
    assert rows() == before
    assert listing(Reader(engine), DeviceFilter(q="OLD-BOX"))[1] == ["dev-1"]


def test_without_the_fts_table_sqlite_scans_and_says_so(tmp_path: Any, caplog: Any) -> None:
    engine = make_engine("sqlite:///%s" % (tmp_path / "plain.db"))
    db.migrate(engine)
    with engine.begin() as conn:
        for trigger in ("device_search_ai", "device_search_ad", "device_search_au"):
            conn.exec_driver_sql("DROP TRIGGER %s" % trigger)
        conn.exec_driver_sql("DROP TABLE device_search")
    rows = populate(engine, 120)
    reader = Reader(engine)
    with caplog.at_level(logging.WARNING, logger="exposure_guard_server.search"):
        assert not reader.search.indexed()
    assert "scans the devices table" in caplog.text
    for q in ("nas1", "%", "off", "Ü", "dev-00"):
        assert listing(reader, DeviceFilter(q=q, per_page=500)) == listing(scanner(engine), DeviceFilter(q=q, per_page=500))
    assert listing(reader, DeviceFilter(q="under_", per_page=500))[1] == [rows[1]["device_id"]]
    engine.dispose()


@pytest.fixture
def pg_without_trgm(pg_cluster: Optional[PgCluster]) -> Iterator[Tuple[str, str]]:
    """A new database whose owner may create tables but not extensions (no CREATE on the database)."""
    if pg_cluster is None:
        pytest.skip("needs EXPOSURE_GUARD_TEST_PG_URL")
    suffix = uuid.uuid4().hex[:10]
    role, name = "eg_plain_%s" % suffix, "eg_plain_db_%s" % suffix
    admin = pg_cluster.admin
    with admin.connect() as conn:
        conn.execute(text('CREATE ROLE "%s" LOGIN' % role))
        conn.execute(text('CREATE DATABASE "%s" TEMPLATE template0' % name))
    owner = make_engine(pg_cluster.url_for(name))
    with owner.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text('ALTER SCHEMA public OWNER TO "%s"' % role))
        assert conn.execute(text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")).scalar() == 0
    owner.dispose()
    from sqlalchemy.engine import make_url

    url = make_url(pg_cluster.url_for(name)).set(username=role, password=None).render_as_string(hide_password=False)
    try:
        yield url, role
    finally:
        pg_cluster.drop(name)
        with admin.connect() as conn:
            conn.execute(text('DROP ROLE IF EXISTS "%s"' % role))


@pytest.mark.postgres
def test_postgresql_without_pg_trgm_migrates_and_scans(pg_without_trgm: Tuple[str, str], caplog: Any) -> None:
    url, _role = pg_without_trgm
    engine = make_engine(url)
    try:
        with caplog.at_level(logging.WARNING, logger="exposure_guard_server.search"):
            assert db.migrate(engine) == db.head_revision()
        assert "pg_trgm extension could not be created" in caplog.text
        assert not any(ix["name"] == m.SEARCH_TRGM_INDEX for ix in inspect(engine).get_indexes("devices"))
        populate(engine, 120)
        reader = Reader(engine)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="exposure_guard_server.search"):
            assert not reader.search.indexed()
        assert "scans the devices table" in caplog.text
        for q in ("nas1", "%", "off", "ümlaut", "dev-00", "e\nb"):
            assert listing(reader, DeviceFilter(q=q, per_page=500)) == listing(scanner(engine),
                                                                               DeviceFilter(q=q, per_page=500))
    finally:
        engine.dispose()
