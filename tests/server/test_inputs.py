"""Issue 15 item 12: request values that used to reach the database (or the UTF-8 encoder) unchecked and
came back as 500s — huge or non-ASCII numbers in query strings and paths, lone surrogates in JSON — are
400s now, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from tests.support.server import Api, device_identity, make_report

HUGE = "99999999999999999999"  # 20 digits: past SQLite's and PostgreSQL's 64-bit integers
NUMBERS = [HUGE, "¹", "１", "1_0", "-1", " 1", "0x10", "1e3", "١"]


@pytest.mark.parametrize("path", [
    "/api/v1/devices?page=%s", "/api/v1/devices?per_page=%s", "/api/v1/devices.csv?page=%s",
    "/api/v1/transitions?limit=%s", "/api/v1/devices/dev-1?history=%s", "/api/v1/devices/dev-1?history_page=%s",
])
def test_bad_numbers_in_api_query_strings_are_400(api: Api, path: str) -> None:
    api.enroll_key(device_identity("dev-1"))
    for value in NUMBERS:
        response = api.client.get(path % value, headers=api.auth)
        assert response.status_code == 400, (value, response.text)
        assert "detail" in response.json()


def test_bad_numbers_in_dashboard_queries_and_paths_are_400(api: Api) -> None:
    api.enroll_key(device_identity("dev-1"))
    api.login()
    for value in NUMBERS:
        for path in ("/?page=%s", "/devices/dev-1?page=%s", "/devices.csv?per_page=%s"):
            assert api.client.get(path % value).status_code == 400, (path, value)
        for kind, verb in (("enroll-secrets", "revoke"), ("api-tokens", "revoke"), ("webhooks", "delete"),
                           ("re-enroll", "approve")):
            response = api.client.post("/admin/%s/%s/%s" % (kind, value, verb), data={"csrf": api.csrf()})
            assert response.status_code in (400, 404), (kind, value, response.status_code)
    for value in NUMBERS:
        assert api.client.delete("/api/v1/enroll-secrets/" + value, headers=api.auth).status_code in (400, 404), value


def test_huge_ids_given_to_the_services_match_nothing(api: Api) -> None:
    for managed in (api.admin.enroll_secrets, api.admin.api_tokens):
        assert managed.remove(HUGE) is False
        assert managed.remove("¹") is False
    assert api.admin.webhooks.remove(HUGE) is False


def _lone_surrogate_body(doc: dict) -> bytes:
    text = json.dumps(doc)  # ensure_ascii: every non-ASCII character is a \\u escape
    return text.replace("SURROGATE", "\\ud800").encode("ascii")


def test_lone_surrogate_in_enrollment_is_400(api: Api) -> None:
    for field in ("hostname", "device_id", "model"):
        dev = device_identity("dev-s")
        dev[field] = "SURROGATE" if field != "hostname" else "nas-SURROGATE"
        body = _lone_surrogate_body({"enroll_secret": api.secret, "device": dev})
        response = api.client.post("/api/v1/enroll", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (field, response.text)
    assert api.count("devices") == 0


def test_lone_surrogate_in_checkin_is_400(api: Api) -> None:
    dev = device_identity("dev-s")
    key = api.enroll_key(dev)
    doc = make_report(dev)
    doc["device"]["hostname"] = "nas-SURROGATE"
    assert api.checkin(key, None, raw=_lone_surrogate_body(doc)).status_code == 400
    assert api.checkin(key, None, raw=_lone_surrogate_body(doc), gzip_body=True).status_code == 400
    doc = make_report(dev)
    doc["findings"][0]["evidence"] = {"SURROGATE": 1}  # in a key, deep in the document
    assert api.checkin(key, None, raw=_lone_surrogate_body(doc)).status_code == 400
    assert api.count("reports") == 0
    # A surrogate *pair* is a proper character (an emoji) and is fine.
    doc = make_report(dev)
    doc["device"]["hostname"] = "nas-\U0001F600"
    assert api.checkin(key, doc).status_code == 201


def test_lone_surrogate_in_admin_json_is_400(api: Api) -> None:
    body = _lone_surrogate_body({"name": "x-SURROGATE"})
    response = api.client.post("/api/v1/enroll-secrets", content=body, headers=dict(api.auth, **{
        "Content-Type": "application/json"}))
    assert response.status_code == 400


def test_control_characters_in_device_identity_are_refused(api: Api) -> None:
    """NUL cannot be stored in a PostgreSQL text column (it was a 500 there); no identity needs controls."""
    for value in ("nas\x00", "nas\x1b[31m", "nas\r\nX-Injected: 1"):
        dev = device_identity("dev-ctl", hostname=value)
        assert api.enroll(dev).status_code == 422, repr(value)
    dev = device_identity("dev-ctl")
    key = api.enroll_key(dev)
    for field, value in (("hostname", "nas\x00"), ("firmware", "5.1\x00"), ("device_id", "dev-ctl\x00")):
        doc = make_report(dev)
        doc["device"][field] = value
        response = api.checkin(key, doc)
        assert response.status_code == 422, (field, response.text)
    doc = make_report(dev)
    doc["agent"]["version"] = "1.0\x00"
    assert api.checkin(key, doc).status_code in (201, 422)
    assert api.count("devices") == 1


def test_nul_in_query_path_form_and_names_is_400(api: Api) -> None:
    """PostgreSQL refuses NUL in any text parameter (a 500 there): refused before it reaches the database."""
    api.enroll_key(device_identity("dev-1"))
    for path in ("/api/v1/devices?q=a%00b", "/api/v1/devices?firmware=%00", "/api/v1/devices?check=%00",
                 "/api/v1/devices/dev%00-1", "/api/v1/reports/a%00b", "/api/v1/devices.csv?q=%00"):
        response = api.client.get(path, headers=api.auth)
        assert response.status_code == 400, (path, response.status_code)
    page = api.client.get("/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    response = api.client.post("/login", data={"username": "admin\x00", "password": "x" * 12, "csrf": csrf})
    assert response.status_code == 400
    response = api.client.post("/api/v1/enroll-secrets", json={"name": "a\x00b"}, headers=api.auth)
    assert response.status_code == 400
