"""The generated fast validator agrees with jsonschema on report-v1 (valid documents and mutations)."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.fuzz import json_paths
from tests.support.server import device_identity, finding, make_report

from exposure_guard.contracts.schemacheck import Unsupported, compile_schema
from exposure_guard.report import load_schema

SCHEMA = load_schema()
FAST = compile_schema(SCHEMA)
SLOW = jsonschema.Draft202012Validator(SCHEMA)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10 ** 6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40) | st.sampled_from(["fail", "pass", "high", "report", "exposure-guard/report/v1",
                                              "2024-01-01T00:00:00Z", "a" * 300, "00000000-0000-0000-0000-000000000000"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _base() -> dict:
    extra = [finding("extra.check", "fail", severity="low", file="x", nested={"a": [1, 2, {"b": None}]})]
    return make_report(device_identity("dev-1"), failing=["service.telnet"], extra=extra)


BASE = _base()
PATHS = json_paths(BASE)


def test_valid_reports_pass_both() -> None:
    for doc in (BASE, make_report(device_identity("d", hostname="")), make_report(device_identity("x"), exposed=True)):
        assert SLOW.is_valid(doc) and FAST(doc)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), json_values, st.sampled_from(["replace", "delete"]))
def test_mutations_agree(path: tuple, value: Any, how: str) -> None:
    doc = copy.deepcopy(BASE)
    if not path:
        doc = value
    else:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if how == "delete":
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        else:
            parent[path[-1]] = value
    assert FAST(doc) == SLOW.is_valid(doc)


def test_integer_and_boolean_edge_cases_agree() -> None:
    for value in (1.0, 1.5, True, -1, 0, "3"):
        doc = copy.deepcopy(BASE)
        doc["duration_ms"] = value
        assert FAST(doc) == SLOW.is_valid(doc), value
    for value in (0, 1, "true", None):
        doc = copy.deepcopy(BASE)
        doc["summary"]["exposed"] = value
        assert FAST(doc) == SLOW.is_valid(doc), value


def test_unknown_keywords_are_refused() -> None:
    with pytest.raises(Unsupported):
        compile_schema({"type": "object", "allOf": [{"type": "string"}]})
