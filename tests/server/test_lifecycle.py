"""A box's lifecycle: note and tags, retire (hidden from every list and count, history kept, back by itself
when it reports again), delete with its history; every change in the audit log. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any, Dict

import pytest
from tests.support.server import Api, device_identity, make_report

from exposure_guard_server.services.lifecycle import parse_tags


def _box(api: Api, device_id: str, failing: Any = (), exposed: bool = False) -> str:
    ident = device_identity(device_id, "host-" + device_id)
    key = api.enroll_key(ident)
    assert api.checkin(key, make_report(ident, list(failing), exposed)).status_code == 201
    return key


def _patch(api: Api, device_id: str, **body: Any) -> Any:
    return api.client.patch("/api/v1/devices/" + device_id, json=body, headers=api.auth)


def _get(api: Api, path: str, **params: Any) -> Dict[str, Any]:
    answer = api.client.get(path, params=params, headers=api.auth)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_tags_and_note_filter_and_show(api: Api) -> None:
    _box(api, "lab-1")
    _box(api, "prod-1", ["service.telnet"])
    answer = _patch(api, "lab-1", tags="Test-Lab, eu , test-lab", note="in the basement\\nleft rack")
    assert answer.status_code == 200, answer.text
    assert answer.json()["tags"] == ["eu", "test-lab"]
    assert [d["device_id"] for d in _get(api, "/api/v1/devices", tag="test-lab")["devices"]] == ["lab-1"]
    device = _get(api, "/api/v1/devices/lab-1")
    assert device["tags"] == ["eu", "test-lab"] and device["note"].startswith("in the basement")
    assert _patch(api, "lab-1", tags=[]).json()["tags"] == []
    for bad in ({"tags": "bad tag!"}, {"tags": ["x"] * 0 + ["t%d" % i for i in range(21)]}, {"note": "x" * 2001},
                {"note": "bell\x07"}, {"retired": "yes"}, {"colour": "red"}, {"tags": [1]}):
        assert _patch(api, "lab-1", **bad).status_code == 400, bad
    assert _patch(api, "nope", note="x").status_code == 404


def test_retired_boxes_leave_every_count_and_come_back_when_they_report(api: Api) -> None:
    key = _box(api, "old", ["router.upnp-mappings"], exposed=True)
    _box(api, "new")
    assert _get(api, "/api/v1/summary")["counts"]["exposed"] == 1
    assert _patch(api, "old", retired=True).json()["retired_at"]
    summary = _get(api, "/api/v1/summary")
    assert summary["counts"]["exposed"] == 0 and summary["devices"] == 1 and summary["retired"] == 1
    assert summary["failing_checks"] == []
    assert [d["device_id"] for d in _get(api, "/api/v1/devices")["devices"]] == ["new"]
    assert [d["device_id"] for d in _get(api, "/api/v1/devices", retired="true")["devices"]] == ["old"]
    assert _get(api, "/api/v1/devices/old")["reports"] == 1  # history kept, page still there
    api.server.stale.run(now=10 ** 10)  # the sweep does not report a retired box as gone silent
    kinds = [e["kind"] for e in _get(api, "/api/v1/transitions", device="old")["transitions"]]
    assert "went_stale" not in kinds
    # It reports again: back in the counts, and the event says so.
    ident = device_identity("old", "host-old")
    answer = api.checkin(key, make_report(ident, ["router.upnp-mappings"], True, generated_at="2030-01-01T00:00:00Z"))
    assert answer.status_code == 201 and "back" in answer.json()["transitions"]
    assert _get(api, "/api/v1/summary")["counts"]["exposed"] == 1
    back = _get(api, "/api/v1/transitions", device="old", kind="back")["transitions"][0]
    assert back["detail"]["was_retired"] is True
    actions = [e["action"] for e in _get(api, "/api/v1/audit", target="device:old")["entries"]]
    assert actions == ["device.retire"]


def test_delete_takes_the_history_and_the_key(api: Api) -> None:
    key = _box(api, "gone", ["service.telnet"])
    _box(api, "kept")
    reports_before = api.count("reports")
    answer = api.client.delete("/api/v1/devices/gone", headers=api.auth)
    assert answer.status_code == 200 and answer.json()["reports_deleted"] == 1
    assert api.count("reports") == reports_before - 1 and api.count("devices") == 1
    assert api.client.get("/api/v1/devices/gone", headers=api.auth).status_code == 404
    assert api.checkin(key, make_report(device_identity("gone", "host-gone"))).status_code == 401
    assert api.client.delete("/api/v1/devices/gone", headers=api.auth).status_code == 404
    assert _get(api, "/api/v1/audit")["entries"][0]["action"] == "device.delete"


def test_the_dashboard_forms(api: Api) -> None:
    _box(api, "d1")
    api.login()
    csrf = api.csrf("/devices/d1")
    assert api.client.post("/devices/d1/details", data={"csrf": csrf, "note": "spare", "tags": "spare, eu"},
                           follow_redirects=False).status_code == 303
    page = api.client.get("/devices/d1").text
    assert 'href="/?tag=spare"' in page and "spare" in page
    assert api.client.post("/devices/d1/retire", data={"csrf": csrf, "retired": "true"},
                           follow_redirects=False).status_code == 303
    assert 'id="retired"' in api.client.get("/devices/d1").text
    assert "host-d1" not in api.client.get("/").text
    assert "host-d1" in api.client.get("/?retired=true").text
    refused = api.client.post("/devices/d1/delete", data={"csrf": csrf, "confirm": "wrong"}, follow_redirects=False)
    assert refused.status_code == 400 and api.count("devices") == 1
    assert api.client.post("/devices/d1/delete", data={"csrf": csrf, "confirm": "d1"},
                           follow_redirects=False).status_code == 303
    assert api.count("devices") == 0


@pytest.mark.parametrize("text,tags", [("a,b", ["a", "b"]), ("B  a", ["a", "b"]), ("", []), ("x.y_z-1", ["x.y_z-1"])])
def test_parse_tags(text: str, tags: Any) -> None:
    assert parse_tags(text) == tags
