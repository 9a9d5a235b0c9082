"""The server hands its callback prober to agents: at enrollment, and at the next check-in when it is set
or changed later; the agent keeps it (0600 state) and uses it unless its owner set a prober; a box that
ran without one says "reachability not checked" on its page. The agent's own code against the real server."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.support.server import Api, device_identity, finding, make_report

from exposure_guard import checkin
from exposure_guard.settings import load_settings


def test_the_prober_reaches_agents_at_enrollment_and_at_check_in(api: Api, tmp_path: Path) -> None:
    api.server.settings.set("prober_url", "https://prober.example.net/")
    api.server.settings.set("prober_token", "tok-123")
    answer = api.enroll(device_identity("hand-1", "hand-nas")).json()
    assert answer["prober"] == {"url": "https://prober.example.net", "token": "tok-123"}

    state = tmp_path / "state"
    state.mkdir()
    (state / checkin.ENROLLMENT_FILE).write_text(json.dumps({"server_url": "http://eg.test", "device_id": "hand-1",
                                                             "prober": answer["prober"]}))
    settings = load_settings(None, environ={})
    used = checkin.with_server_prober(settings, state)
    assert used.get("reachability", "prober_url") == "https://prober.example.net"
    assert used.get("reachability", "token") == "tok-123"
    assert used.sources["reachability.prober_url"] == "the fleet server"
    own = load_settings(None, environ={"EXPOSURE_GUARD_REACHABILITY_PROBER_URL": "https://mine.example.org"})
    assert checkin.with_server_prober(own, state).get("reachability", "prober_url") == "https://mine.example.org"

    # Changed on the server later: the next check-in answer carries it and the agent keeps it (0600).
    api.server.settings.set("prober_url", "https://prober2.example.net")
    key = answer["node_key"]
    reply = api.checkin(key, make_report(device_identity("hand-1", "hand-nas"))).json()
    assert reply["prober"]["url"] == "https://prober2.example.net"
    assert checkin.remember_prober(state, reply) is True and checkin.remember_prober(state, reply) is False
    assert checkin.read_enrollment(state)["prober"]["url"] == "https://prober2.example.net"
    assert stat.S_IMODE((state / checkin.ENROLLMENT_FILE).stat().st_mode) == 0o600
    # A hostile or broken answer is ignored.
    for bad in ({"url": "javascript:alert(1)"}, {"url": "https://x/\n"}, {"url": 5}, {"url": "https://x", "token": "a b"},
                "https://x", None):
        assert checkin.remember_prober(state, {"prober": bad}) is False
    assert checkin.read_enrollment(state)["prober"]["url"] == "https://prober2.example.net"


def test_without_a_prober_the_answers_say_nothing_and_the_page_says_not_checked(api: Api) -> None:
    answer = api.enroll(device_identity("noprobe", "np")).json()
    assert "prober" not in answer
    doc = make_report(device_identity("noprobe", "np"), extra=[
        finding("reachability.admin", "skipped", severity="critical")])
    doc["findings"][-1]["summary"] = "no callback prober configured ([reachability] prober_url is empty)"
    reply = api.checkin(answer["node_key"], doc).json()
    assert "prober" not in reply
    api.login()
    page = api.client.get("/devices/noprobe").text
    assert 'id="reachability-not-checked"' in page
