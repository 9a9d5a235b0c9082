"""The fleet page's trend: boxes per state and day (UTC) kept by the housekeeping sweep, drawn as an SVG
without script, for the whole fleet, one group, or a user's groups. SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from typing import List

from tests.support.server import ADMIN_PASSWORD, Api, device_identity, make_report

DAY = 86400.0


def _points(html: str, series: str) -> List[float]:
    match = re.search(r'points="([^"]*)" data-series="%s"' % series, html)
    assert match, series
    return [float(p.split(",")[1]) for p in match.group(1).split()]


def test_counts_per_day_and_group(api: Api) -> None:
    api.admin.groups.create("A")
    secret = api.admin.enroll_secrets.create("a", "A")[1]
    keys = {}
    for device_id, group_secret in (("a1", secret), ("a2", secret), ("n1", None)):
        ident = device_identity(device_id, "h-" + device_id)
        keys[device_id] = api.enroll(ident, group_secret).json()["node_key"]
        assert api.checkin(keys[device_id], make_report(ident)).status_code == 201
    now = time.time()
    trend = api.server.trend
    assert trend.snapshot(now - 2 * DAY) >= 2
    ident = device_identity("a1", "h-a1")
    assert api.checkin(keys["a1"], make_report(ident, ["router.upnp-mappings"], True,
                                               generated_at="2031-01-01T00:00:00Z")).status_code == 201
    trend.snapshot(now - DAY)
    trend.snapshot(now - DAY)  # rewriting a day replaces it
    whole = trend.series(30, None, now)
    assert len(whole["days"]) == 2 and whole["ok"] == [3, 2] and whole["exposed"] == [0, 1]
    group_a = trend.series(30, frozenset({1}), now)
    assert group_a["ok"] == [2, 1] and group_a["exposed"] == [0, 1]

    api.login()
    page = api.client.get("/").text
    assert 'id="trend"' in page and "<script" not in page
    exposed = _points(page, "exposed")
    assert len(exposed) == 2 and exposed[1] < exposed[0]  # up is more
    api.admin.set_password("viewer-a", ADMIN_PASSWORD, "viewer", ["A"])
    from fastapi.testclient import TestClient

    client = TestClient(api.client.app, base_url="http://127.0.0.1")
    api.login(client, "viewer-a", ADMIN_PASSWORD)
    limited = client.get("/").text
    def top(html: str) -> str:  # the y axis' top label: the largest count drawn
        return re.search(r'<text x="2" y="\d+" font-size="10" fill="#667085">(\d+)</text>', html).group(1)

    assert top(page) == "3" and top(limited) == "2"  # group A's 2 boxes, not the fleet's 3
    assert api.client.get("/metrics?group=A", headers=api.auth).text.count('state="exposed"} 1') == 1
