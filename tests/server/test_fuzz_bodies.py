"""Fuzzing the server's two request-body parsers (issue 15, "fuzz every parser"): the check-in body (gunzip,
JSON, surrogate check, schema, derived fields) and the enrollment body (JSON, surrogate check, identity).

Each gets ``EG_SERVER_FUZZ_EXAMPLES`` (default ``EG_FUZZ_EXAMPLES``, 10,000) generated inputs through the validation functions
directly, then a few hundred through the real HTTP app on SQLite and PostgreSQL. The only acceptable outcome
is a result or an ``ApiError`` below 500: anything else (another exception, a 5xx) is a crash. The inputs
really tried are counted and printed (``pytest -s`` shows them)."""

from __future__ import annotations

import copy
import gzip
import json
import os
import random
import time
from collections import Counter
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.fuzz import FUZZ_EXAMPLES, TALLY, json_paths
from tests.support.server import Api, device_identity, finding, make_report

from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import decode_json
from exposure_guard_server.services.enroll import parse_enroll_body
from exposure_guard_server.services.ingest import decode_body, prepare_report

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("EG_SERVER_FUZZ_EXAMPLES", FUZZ_EXAMPLES))  # EG_FUZZ_EXAMPLES sets both
HTTP_EXAMPLES = int(os.environ.get("EG_SERVER_FUZZ_HTTP_EXAMPLES", "250"))  # per database: 500 on the two
MAX_BODY = 256 * 1024
TRIED: Counter = Counter()  # this module's figures; the run's summary (tests/conftest.py) shows TALLY

# Strings and numbers that broke servers before: surrogates, NUL and other controls, bidi overrides, huge
# and non-ASCII numbers, dates far out, formula starters, markup.
HOSTILE_STRINGS = [
    "\ud800", "a\udfffb", "\x00", "nas\x00", "\x1b[31m", "\r\nX: y", "\u202e", "\ufeff", "\uffff", "\U0010ffff",
    "99999999999999999999", "¹", "１２", "-0", "1e999", "2099-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59", "2024-02-30T00:00:00Z", "＝cmd|' /C calc'!A0", "=1+1", "<script>", "../../x",
    "00000000-0000-0000-0000-000000000000", "fail", "pass", "critical", "exposure-guard/report/v1", "a" * 300, "",
]
HOSTILE_TEXT = st.sampled_from(HOSTILE_STRINGS)
SCALARS = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30) | HOSTILE_TEXT)
_ATOMS = [None, True, False, 0, -1, 2 ** 64, -(2 ** 63) - 1, 1.5, 1e308, -0.0, *HOSTILE_STRINGS]


def _nested(seed: int) -> Any:
    """A nested JSON value grown from ``seed`` with plain ``random``: Hypothesis' own recursive strategy
    costs several milliseconds an example, which 10,000 examples cannot afford."""
    rng = random.Random(seed)

    def grow(depth: int) -> Any:
        roll = rng.random()
        if depth > 3 or roll < 0.5:
            return rng.choice(_ATOMS)
        if roll < 0.75:
            return [grow(depth + 1) for _ in range(rng.randint(0, 4))]
        return {str(rng.choice(_ATOMS)): grow(depth + 1) for _ in range(rng.randint(0, 4))}

    return grow(0)


JSON_VALUES = SCALARS | st.integers(0, 2 ** 32).map(_nested)

BASE_REPORT = make_report(device_identity("fuzz-device"), failing=["service.telnet"],
                          extra=[finding("extra.check", "fail", severity="low", nested={"a": [1, {"b": None}]})])
BASE_ENROLL = {"enroll_secret": "ege_fuzz", "device": device_identity("fuzz-device"), "agent": {"version": "1.0"},
               "previous_node_key": "egn_x"}


def _mutated(base: Any, path: tuple, value: Any, how: str) -> Any:
    doc = copy.deepcopy(base)
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if how == "delete":
        del parent[path[-1]]
    elif how == "insert" and isinstance(parent, dict):
        parent[str(value)[:20]] = value
    else:
        parent[path[-1]] = value
    return doc


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


PATHS = {id(BASE_REPORT): json_paths(BASE_REPORT), id(BASE_ENROLL): json_paths(BASE_ENROLL)}


@st.composite
def bodies(draw: Any, base: Any) -> bytes:
    """A request body: a mutated valid document (serialised in several ways), raw bytes, or deep nesting."""
    kind = draw(st.sampled_from(["mutated"] * 6 + ["bytes", "json", "deep", "truncated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode("utf-8", "surrogatepass")
    if kind == "deep":
        return _deep(draw(st.integers(1, 5000)))
    doc = _mutated(base, draw(st.sampled_from(PATHS[id(base)])), draw(JSON_VALUES),
                   draw(st.sampled_from(["replace", "delete", "insert"])))
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    raw = text.encode("utf-8", "surrogatepass")
    if kind == "truncated":
        raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


def _tried(parser: str) -> None:
    TRIED[parser] += 1
    TALLY[parser] += 1


def _must_not_crash(call: Callable[[], Any]) -> None:
    try:
        call()
    except ApiError as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.detail)


def _settings(examples: int) -> Any:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    for name, count in sorted(TRIED.items()):
        print("\nfuzz %s: %d inputs tried" % (name, count))


@_settings(EXAMPLES)
@given(raw=bodies(BASE_REPORT), gzipped=st.booleans())
def test_checkin_body_validation_never_crashes(raw: bytes, gzipped: bool) -> None:
    _tried("server check-in body (decode_body + prepare_report)")
    body, encoding = (gzip.compress(raw), "gzip") if gzipped else (raw, "")

    def validate() -> None:
        doc, data = decode_body(body, encoding, MAX_BODY)
        prepared = prepare_report(doc, data, body if gzipped else None)
        assert prepared.device_id and prepared.report_id
        # What goes into the database's text columns is encodable.
        json.dumps([prepared.doc["device"], prepared.failing], ensure_ascii=False).encode("utf-8")

    _must_not_crash(validate)


@_settings(EXAMPLES)
@given(raw=bodies(BASE_ENROLL))
def test_enroll_body_validation_never_crashes(raw: bytes) -> None:
    _tried("server enroll body (decode_json + parse_enroll_body)")

    def validate() -> None:
        request = parse_enroll_body(decode_json(raw, "body must be JSON"))
        json.dumps([request.device, request.agent_version], ensure_ascii=False).encode("utf-8")

    _must_not_crash(validate)


def test_validation_fuzzing_stays_bounded() -> None:
    """One generated body of each kind costs milliseconds, so 10,000 stay well inside a minute."""
    start = time.monotonic()
    for depth in (10, 1000, 5000):
        _must_not_crash(lambda depth=depth: decode_body(_deep(depth), "", MAX_BODY))
    assert time.monotonic() - start < 5


@settings(max_examples=HTTP_EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(checkin=bodies(BASE_REPORT), enroll=bodies(BASE_ENROLL), gzipped=st.booleans())
def test_http_app_answers_hostile_bodies_without_5xx(api: Api, checkin: bytes, enroll: bytes, gzipped: bool) -> None:
    """Through the real app (TestClient raises on a server error, so a crash fails the test)."""
    _tried("server HTTP app (a check-in and an enroll body each, SQLite and PostgreSQL)")
    if not hasattr(api, "fuzz_key"):
        api.fuzz_key = api.enroll_key(device_identity("fuzz-device"))  # type: ignore[attr-defined]
    body = gzip.compress(checkin) if gzipped else checkin
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    response = api.checkin(api.fuzz_key, None, raw=body, headers=headers)  # type: ignore[attr-defined]
    assert response.status_code < 500, response.text
    enroll_doc = enroll.replace(b"ege_fuzz", api.secret.encode())  # a valid secret: the body is looked at
    response = api.client.post("/api/v1/enroll", content=enroll_doc, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
