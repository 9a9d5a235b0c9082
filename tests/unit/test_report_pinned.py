"""Report building pinned: every cap at its exact boundary, what the budget leaves out and in which order,
defaults, counts and the JSON text itself."""

from __future__ import annotations

import json
import re
import sys

from exposure_guard import report as report_module
from exposure_guard.report import (
    MAX_EVIDENCE_BYTES,
    MAX_REPORT_CHANGES,
    Finding,
    Report,
    _capped_evidence,
    _fit_budget,
    _fit_text,
    _json_size,
    cap_evidence,
)


def finding(id: str = "a.b", status: str = "fail", severity: str = "high", **kwargs) -> Finding:
    return Finding(id, "title", severity, status, "summary", **kwargs)


# ---------------------------------------------------------------- caps at their boundaries
def test_lists_and_strings_at_the_cap_are_kept_whole():
    value = {"l": [1, 2, 3], "nested": [[1, 2, 3]], "s": "abc", "deep": {"t": ["xyz"]}}
    assert cap_evidence(value, max_items=3, max_text=3) == value


def test_one_more_is_cut_and_counted_at_any_depth_with_the_same_caps():
    value = {"l": [1, 2, 3, 4], "nested": [[1, 2, 3, 4]], "s": "abcd", "deep": {"t": ["wxyz"]}}
    assert cap_evidence(value, max_items=3, max_text=3) == {
        "l": [1, 2, 3], "l_omitted": 1, "nested": [[1, 2, 3, {"omitted": 1}]], "s": "abc… (1 characters omitted)",
        "deep": {"t": ["wxy… (1 characters omitted)"]}}


def test_one_findings_evidence_over_its_byte_cap_is_replaced_by_a_marker():
    fits = {"t": ["x" * 3250] * 20}
    fits["t"][-1] += "x" * (MAX_EVIDENCE_BYTES - _json_size(fits))
    assert _json_size(fits) == MAX_EVIDENCE_BYTES and len(fits["t"][-1]) <= 4000
    assert _capped_evidence(fits) == fits
    over = {"t": ["x" * 3000] * 25}
    size = _json_size(cap_evidence(over))
    assert size > MAX_EVIDENCE_BYTES
    assert _capped_evidence(over) == {"evidence_omitted_bytes": size, "evidence_omitted": "%d bytes of evidence left "
                                      "out: more than the %d bytes kept per finding" % (size, MAX_EVIDENCE_BYTES)}


def test_fit_text_keeps_text_at_the_limit_and_says_how_much_was_cut():
    assert _fit_text("a" * 40, 40) == "a" * 40
    cut = _fit_text("a" * 100, 40)
    assert len(cut) <= 40 and cut == "a" * (40 - len("… (100 characters omitted)")) + "… (%d characters omitted)" % (
        100 - (40 - len("… (100 characters omitted)")))


# ---------------------------------------------------------------- the report budget
def doc_with(sizes):
    return {"schema": "s", "findings": [{"id": str(i), "evidence": {"t": "x" * n}} for i, n in enumerate(sizes)]}


def test_a_report_exactly_at_the_budget_is_untouched():
    doc = doc_with([500, 100])
    assert _fit_budget(json.loads(json.dumps(doc)), _json_size(doc)) == doc


def test_the_largest_evidence_goes_first_and_only_as_much_as_needed():
    doc = doc_with([300, 900, 600])
    size = _json_size(doc)
    out = _fit_budget(json.loads(json.dumps(doc)), size - 500)
    assert [f["evidence"].get("evidence_omitted_bytes") for f in out["findings"]] == [None, _json_size({"t": "x" * 900}),
                                                                                      None]
    assert out["findings"][1]["evidence"]["evidence_omitted"].endswith(
        "left out to keep the report under %d bytes" % (size - 500))


def test_the_budget_counts_the_markers_it_puts_in():
    # after the largest evidence is replaced the report is one byte over: the next largest must go too
    doc = doc_with([7000, 9000, 4000])
    largest = _json_size({"t": "x" * 9000})
    marker = _json_size(report_module._evidence_left_out(largest, "left out to keep the report under 99999 bytes"))
    budget = _json_size(doc) - (largest - marker) - 1
    assert 10000 <= budget <= 99999  # the marker's digits count as assumed above
    out = _fit_budget(json.loads(json.dumps(doc)), budget)
    assert _json_size(out) <= budget
    assert ["evidence_omitted" in f["evidence"] for f in out["findings"]] == [True, True, False]


# ---------------------------------------------------------------- defaults, counts, JSON
def test_finding_defaults_and_repr():
    f = Finding("a.b", "t", "high", "fail", "s")
    assert (f.evidence, f.fixable, f.fixed, f.references, f.family, f.exposure) == ({}, False, False, [], "local",
                                                                                     False)
    assert f.evidence is not Finding("c", "t", "high", "fail", "s").evidence
    assert repr(f) == "Finding('a.b', 'fail', 'high')"
    r = Report({"name": "n"}, [f], report_id="r-1")
    assert repr(r) == "Report(r-1, 1 findings)"
    assert (r.duration_ms, r.mode, r.changes) == (0, "report", [])


def test_counts_cover_every_status_and_unknown_ones_count_too():
    r = Report({}, [finding(status="fail"), finding(status="fail"), finding(status="pass"), finding(status="odd")])
    assert r.counts() == {"pass": 1, "fail": 2, "unknown": 0, "error": 0, "skipped": 0, "odd": 1}


def test_failing_defaults_to_low_and_up():
    r = Report({}, [finding("i", severity="info"), finding("l", severity="low"), finding("c", severity="critical"),
                    finding("p", status="pass", severity="critical")])
    assert [f.id for f in r.failing()] == ["l", "c"]
    assert [f.id for f in r.failing("critical")] == ["c"]


def test_changes_exactly_at_the_cap_have_no_omitted_count():
    change = {"change_id": "c", "check_id": "x", "target": "t", "before": "a", "after": "b", "at": "now"}
    doc = Report({}, [], changes=[change] * MAX_REPORT_CHANGES).to_dict()
    assert len(doc["changes"]) == MAX_REPORT_CHANGES and "changes_omitted" not in doc
    doc = Report({}, [], changes=[change] * (MAX_REPORT_CHANGES + 1)).to_dict()
    assert doc["changes_omitted"] == 1


def test_the_json_text_keeps_field_order_indent_and_non_ascii():
    r = Report({"name": "Büro-NAS"}, [finding()], report_id="r-1", generated_at="2026-01-01T00:00:00Z")
    text = r.to_json()
    assert text.startswith('{\n  "schema": "exposure-guard/report/v1",\n  "report_id": "r-1",\n')
    assert '"name": "Büro-NAS"' in text
    assert r.to_json(indent=None).startswith('{"schema": "exposure-guard/report/v1", "report_id": "r-1", ')
    agent = r.to_dict()["agent"]
    assert agent["python"] == "%d.%d.%d" % sys.version_info[:3] and re.fullmatch(r"\d+\.\d+\.\d+", agent["python"])
