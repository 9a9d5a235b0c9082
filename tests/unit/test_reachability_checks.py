"""Agent side of the reachability callback against loopback services and a stand-in prober (no netns)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Dict

import pytest

from exposure_guard.checks import admin, reachability, router
from exposure_guard.context import CheckContext
from exposure_guard.contracts import UNVERIFIED
from exposure_guard.facts import reachability as reach_facts
from exposure_guard.qts.root import QtsRoot
from exposure_guard.settings import load_settings
from tests.support.net import free_port
from tests.support.reach import FakeProber, Services, nas_tree, router_facts, tcp_mapping


@pytest.fixture
def prober():
    fake = FakeProber()
    yield fake
    fake.close()


def make_ctx(tmp_path: Path, services: Services, url: str, timeout: str = "30", **extra: Dict[str, Any]) -> CheckContext:
    root = nas_tree(tmp_path / "root", services, **extra)
    settings = load_settings(None, environ={}).with_overrides(
        {("reachability", "prober_url"): url, ("reachability", "timeout"): timeout,
         ("reachability", "local_probe"): "yes"})  # the test tree is this machine's own services
    ctx = CheckContext(QtsRoot(root), settings)
    ctx.provide_router(router_facts([]))  # the router audit ran and found no mapping
    return ctx


def by_port(outcome, port):
    return [v for v in outcome.evidence["ports"] if v["port"] == port]


def test_no_prober_configured_skips_everything(tmp_path, services):
    ctx = make_ctx(tmp_path, services, "")
    for evaluate in (reachability.reachability_admin, reachability.reachability_services,
                     router.upnp_wan_exposed):
        outcome = evaluate(ctx)
        assert outcome.status == "skipped"
        assert "prober_url" in outcome.summary


def test_admin_verified_by_certificate_and_http(tmp_path, services, prober):
    ctx = make_ctx(tmp_path, services, prober.url)
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "fail" and outcome.severity == "critical"
    https = by_port(outcome, services.https_port)[0]
    assert https["state"] == "verified" and https["matched_by"] == "tls-certificate"
    http = by_port(outcome, services.http_port)[0]
    assert http["state"] == "verified" and http["matched_by"] == "http"
    # no UPnP mapping known for these ports: the forward must be a static rule on the router
    assert "NOT a UPnP mapping" in https["forwarded"]
    assert "NOT a UPnP mapping" in outcome.summary
    asked = prober.requests[0]
    assert {p["port"]: p["tls"] for p in asked["ports"]}[services.https_port] is True
    assert asked["upnp"] is True and len(asked["nonce"]) >= 16


def test_services_verified_by_banner(tmp_path, services, prober):
    ctx = make_ctx(tmp_path, services, prober.url)
    outcome = reachability.reachability_services(ctx)
    assert outcome.status == "fail"
    ssh = by_port(outcome, services.ssh_port)[0]
    assert ssh["state"] == "verified" and ssh["matched_by"] == "banner" and ssh["service"] == "SSH"
    assert outcome.severity == "critical"  # SSH is a management port
    closed = by_port(outcome, services.closed)
    assert closed and closed[0]["state"] == "closed"
    # one callback served both checks
    reachability.reachability_admin(ctx)
    assert len(prober.requests) == 1


def test_something_else_answers_is_open_unverified(tmp_path, services, prober):
    prober.override[services.http_port] = {"state": "open", "http": {"status": 200, "server": "router-httpd",
                                                                       "location": "", "title": "Router login"}}
    prober.override[services.https_port] = {"state": "filtered", "error": "no answer"}
    ctx = make_ctx(tmp_path, services, prober.url)
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "fail" and outcome.severity == "high"
    assert "something else answers" in outcome.summary
    verdict = by_port(outcome, services.http_port)[0]
    assert verdict["state"] == "open-unverified"
    assert verdict["remote"]["http"]["title"] == "Router login"
    assert by_port(outcome, services.https_port)[0]["state"] == "filtered"


def test_closed_and_filtered_pass(tmp_path, services, prober):
    for port in (services.http_port, services.https_port):
        prober.override[port] = {"state": "closed"}
    ctx = make_ctx(tmp_path, services, prober.url)
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "pass", outcome.summary
    assert {v["state"] for v in outcome.evidence["ports"]} == {"closed"}


def test_empty_http_answers_do_not_verify(tmp_path, services, prober):
    # Two bare 404s without Server/title/Location prove nothing about who answered.
    from exposure_guard.contracts.fingerprint import compare

    bare = {"state": "open", "http": {"status": 404, "server": "", "location": "", "title": ""}}
    assert compare(bare, bare) is None
    assert compare({"tls": {"sha256": "a" * 64}}, {"tls": {"sha256": "b" * 64}, "http": bare["http"]}) is None


def test_upnp_mapping_is_named_and_mapped_ports_are_asked(tmp_path, services, prober):
    ext = free_port()
    ctx = make_ctx(tmp_path, services, prober.url)
    ctx.provide_router(router_facts([tcp_mapping(ext, services.http_port, description="QNAP web"),
                                     tcp_mapping(5555, 5555, protocol="UDP")]))  # UDP ignored
    # The router maps ext → the admin port: the prober sees the admin page on ext.
    prober.override[ext] = prober.answer({"nonce": "x" * 16, "ports": [{"port": services.http_port}]},
                                         "127.0.0.1")["ports"][0]
    outcome = reachability.reachability_admin(ctx)
    verdict = by_port(outcome, ext)[0]
    assert verdict["state"] == "verified" and verdict["local_port"] == services.http_port
    assert "UPnP mapping" in verdict["forwarded"] and "QNAP web" in verdict["forwarded"]
    assert 5555 not in [p["port"] for p in prober.requests[0]["ports"]]


def test_ports_are_asked_sixteen_at_a_time_and_the_cap_drops_the_least_important(tmp_path, services, prober):
    ctx = make_ctx(tmp_path, services, prober.url)
    ctx.provide_router(router_facts([tcp_mapping(20000 + i, 30000 + i) for i in range(70)]))
    targets, dropped = reach_facts.plan_targets(ctx)
    assert len(targets) == 64 and len(dropped) == 70 + 4 - 64  # admin 2, SSH, and FTP + Web Server (one closed port)
    assert targets[0].service == "admin HTTP" and targets[1].service == "admin HTTPS"
    assert any(t.service == "SSH" for t in targets)
    outcome = reachability.reachability_services(ctx)
    assert [len(r["ports"]) for r in prober.requests] == [16, 16, 16, 16]
    assert [r["upnp"] for r in prober.requests] == [True, False, False, False]  # the WAN-side UPnP test runs once
    asked = [p["port"] for r in prober.requests for p in r["ports"]]
    assert len(asked) == len(set(asked)) == 64
    assert len(outcome.evidence["ports"]) + len(reachability.reachability_admin(ctx).evidence["ports"]) == 64
    assert any("only 64 ports are asked per check (4 requests of 16)" in note for note in outcome.evidence["notes"])
    assert len(prober.requests) == 4  # both checks share the callback


def test_a_refused_later_request_keeps_what_the_first_ones_said(tmp_path, services, prober):
    ctx = make_ctx(tmp_path, services, prober.url)
    ctx.provide_router(router_facts([tcp_mapping(20000 + i, 30000 + i) for i in range(20)]))

    def respond(request):
        if len(prober.requests) == 1:
            return 200, json.dumps(prober.answer(request, "127.0.0.1")).encode(), 0.0
        return 429, json.dumps({"error": "rate_limited", "detail": "slow down"}).encode(), 0.0

    prober.respond = respond
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "fail"  # the admin ports were in the first request and are verified
    notes = [n for n in outcome.evidence["notes"] if "not asked: the prober's answer to the next request" in n]
    assert len(notes) == 1 and notes[0].startswith("ipv4: ports ") and "20019" in notes[0], notes
    assert "slow down" in notes[0] or "429" in notes[0]
    assert len(prober.requests) == 2


def test_the_other_doors_are_asked_when_they_listen_here(tmp_path, services, prober):
    ctx = make_ctx(tmp_path, services, prober.url, LOGIN={"TELNET Enable": "FALSE", "TELNET Port": 2323},
                   Samba={"Enable": "TRUE"})
    root = ctx.root.root
    listening = [services.http_port, services.https_port, 445, 548, 2323, 8088, 9443]
    rows = "".join("%4d: 00000000:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 %d 1\n"
                   % (i, port, 9000 + i) for i, port in enumerate(listening))
    (root / "proc/net").mkdir(parents=True)
    (root / "proc/net/tcp").write_text("  sl  local_address rem_address   st\n" + rows)
    (root / "etc/config/qpkg.conf").write_text(
        "[PlexMediaServer]\nName = PlexMediaServer\nWeb_Port = 8088\nWeb_SSL_Port = 9443\nEnable = TRUE\n"
        "[Other]\nName = Other\nWeb_Port = 7777\nEnable = TRUE\n")
    (root / "proc/4711").mkdir()
    (root / "proc/4711/cmdline").write_bytes(b"\0".join([b"/usr/bin/docker-proxy", b"-proto", b"tcp", b"-host-ip",
                                                         b"0.0.0.0", b"-host-port", b"8096", b"-container-ip",
                                                         b"172.17.0.2", b"-container-port", b"8096"]) + b"\0")
    targets, dropped = reach_facts.plan_targets(ctx)
    doors = {t.external: (t.service, t.probe, t.tls) for t in targets if t.category == "service"}
    assert doors[2323] == ("Telnet", "banner", False)  # listens although the config says off
    assert doors[445] == ("SMB", "banner", False) and 139 not in doors  # 139 does not listen
    assert doors[548] == ("AFP", "banner", False)
    assert doors[8088] == ("PlexMediaServer web page", "http", False) and doors[9443][2] is True
    assert 7777 not in doors  # an app whose page does not listen is not asked
    assert doors[8096] == ("container 172.17.0.2 port 8096", "http", None)
    assert not dropped
    by = {t.external: t for t in targets}
    assert by[445].sources == ["listens here (/proc/net/tcp, /proc/net/tcp6)"]
    assert by[8096].sources == ["published by a container (docker-proxy process)"]


def test_router_table_unknown_says_so(tmp_path, services, prober):
    ctx = make_ctx(tmp_path, services, prober.url)
    ctx.provide_router(None)  # the router's table was not read
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "fail"
    assert "kind is unknown" in by_port(outcome, services.http_port)[0]["forwarded"]


@pytest.mark.parametrize("router_ip, expected", [
    ("100.64.3.4", "CGNAT"), ("192.168.0.2", "double NAT"), ("203.0.113.9", "another NAT"), ("127.0.0.1", None)])
def test_nat_notes(tmp_path, services, prober, router_ip, expected):
    ctx = make_ctx(tmp_path, services, prober.url)
    ctx.provide_router(router_facts([], external_ip=router_ip))
    outcome = reachability.reachability_admin(ctx)
    notes = " ".join(outcome.evidence.get("notes", []))
    if expected:
        assert expected in notes and expected in outcome.summary
    else:
        assert "NAT" not in notes


@pytest.mark.parametrize("router_ip, expected", [
    ("100.64.3.4", "CGNAT"), ("192.168.0.2", "double NAT"), ("203.0.113.9", "another NAT")])
def test_nothing_answering_behind_another_nat_is_unknown_not_pass(tmp_path, services, prober, router_ip, expected):
    for port in (services.http_port, services.https_port):
        prober.override[port] = {"state": "closed"}
    ctx = make_ctx(tmp_path, services, prober.url)
    ctx.provide_router(router_facts([], external_ip=router_ip))
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "unknown", outcome.summary
    assert expected in outcome.summary and "may not mean" in outcome.summary
    ctx2 = make_ctx(tmp_path / "same", services, prober.url)
    ctx2.provide_router(router_facts([], external_ip="127.0.0.1"))  # the prober saw the router's own address
    assert reachability.reachability_admin(ctx2).status == "pass"


def test_an_igd_without_an_external_address_is_a_nat_in_front(tmp_path, services, prober):
    for port in (services.http_port, services.https_port):
        prober.override[port] = {"state": "closed"}
    ctx = make_ctx(tmp_path, services, prober.url)
    ctx.provide_router(router_facts([], external_ip=None))  # miniupnpd behind another NAT answers ""
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "unknown" and "reports no external address" in outcome.summary
    no_igd = make_ctx(tmp_path / "no-igd", services, prober.url)
    no_igd.provide_router(None)  # nothing to compare with: the callback alone decides
    assert reachability.reachability_admin(no_igd).status == "pass"


def test_router_answering_on_a_port_it_forwards_here_is_unknown(tmp_path, services, prober):
    ext = free_port()
    ctx = make_ctx(tmp_path, services, prober.url)
    ctx.provide_router(router_facts([tcp_mapping(ext, services.http_port, description="QNAP web")]))
    for port in (services.http_port, services.https_port):
        prober.override[port] = {"state": "closed"}
    prober.override[ext] = {"state": "open", "http": {"status": 200, "server": "router-httpd", "location": "",
                                                      "title": "Router login"}}
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "unknown", outcome.summary
    assert "forwards port(s) %d to this NAS" % ext in outcome.summary
    assert by_port(outcome, ext)[0]["state"] == UNVERIFIED


def test_token_is_sent(tmp_path, services, prober):
    ctx = make_ctx(tmp_path, services, prober.url)
    ctx.settings = ctx.settings.with_overrides({("reachability", "token"): "s3cret"})
    reachability.reachability_admin(ctx)
    assert prober.requests[0]["_authorization"] == "Bearer s3cret"


# ---------------------------------------------------------------- the prober misbehaves
def test_prober_unreachable_is_unknown(tmp_path, services):
    ctx = make_ctx(tmp_path, services, "http://127.0.0.1:%d" % free_port())
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "unknown"
    assert "cannot connect to the prober" in outcome.summary


@pytest.mark.parametrize("name, respond, reason", [
    ("huge", lambda r: (200, b"[" + b"1," * 200000 + b"1]", 0.0), "larger than"),
    ("not json", lambda r: (200, b"<html>hi</html>", 0.0), "does not follow"),
    ("wrong nonce", None, "nonce does not match"),
    ("refusal", lambda r: (429, json.dumps({"schema": "exposure-guard/prober/v1", "error": {
        "code": "rate_limited", "message": "slow down"}}).encode(), 0.0), "rate_limited"),
    ("500 html", lambda r: (500, b"oops", 0.0), "HTTP 500"),
    ("bad state", None, "state: not one of"),
    ("extra port", None, "not asked"),
])
def test_prober_garbage_is_unknown(tmp_path, services, prober, name, respond, reason):
    if name == "wrong nonce":
        prober.respond = lambda r: (200, json.dumps(dict(prober.answer(r, "127.0.0.1"), nonce="z" * 32)).encode(), 0)
    elif name == "bad state":
        def respond(r):  # noqa: F811
            doc = prober.answer(r, "127.0.0.1")
            doc["ports"][0]["state"] = "wide-open"
            return 200, json.dumps(doc).encode(), 0

        prober.respond = respond
    elif name == "extra port":
        def respond(r):  # noqa: F811
            doc = prober.answer(r, "127.0.0.1")
            doc["ports"].append(dict(doc["ports"][0], port=1))
            return 200, json.dumps(doc).encode(), 0

        prober.respond = respond
    else:
        prober.respond = respond
    ctx = make_ctx(tmp_path, services, prober.url)
    for evaluate in (reachability.reachability_admin, reachability.reachability_services,
                     router.upnp_wan_exposed):
        outcome = evaluate(ctx)
        assert outcome.status == "unknown", (name, outcome.summary)
        assert reason in outcome.summary


def test_slow_prober_hits_the_deadline(tmp_path, services, prober):
    prober.respond = lambda r: (200, json.dumps(prober.answer(r, "127.0.0.1")).encode(), 0.2)
    ctx = make_ctx(tmp_path, services, prober.url, timeout="1")
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "unknown"
    assert "too long" in outcome.summary or "did not answer" in outcome.summary


# ---------------------------------------------------------------- IPv6
def test_ipv6_asked_separately_when_the_nas_has_a_global_address(tmp_path, services, monkeypatch):
    fake = FakeProber(hosts=("127.0.0.1", "::1"))
    try:
        real = socket.getaddrinfo

        def resolve(host, *args, **kwargs):
            if host == "prober.test":
                return real("::1", *args, **kwargs) + real("127.0.0.1", *args, **kwargs)
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        # The NAS "has" a global IPv6 address; local fingerprints stay on loopback (network rule).
        monkeypatch.setattr(CheckContext, "lan_addresses", lambda ctx: ["2001:db8:77::10"])
        monkeypatch.setattr(reach_facts, "local_addresses",
                            lambda ctx, family: ["::1"] if family == "ipv6" else ["127.0.0.1"])
        svc6 = Services(tmp_path / "v6", host="::1")
        try:
            ctx = make_ctx(tmp_path, svc6, "http://prober.test:%d" % fake.port)
            fake.override.update({p: {"state": "closed"} for p in (svc6.http_port, svc6.https_port)})
            outcome = reachability.reachability_admin(ctx)
        finally:
            svc6.close()
        families = sorted(r["nonce"] for r in fake.requests)
        assert len(families) == 2
        assert outcome.evidence["observed_addresses"] == {"ipv4": "127.0.0.1", "ipv6": "::1"}
        assert outcome.status == "pass", outcome.summary
    finally:
        fake.close()


def test_ipv6_no_route_to_prober_is_a_note_not_unknown(tmp_path, services, prober, monkeypatch):
    monkeypatch.setattr(CheckContext, "lan_addresses", lambda ctx: ["2001:db8:77::10"])
    monkeypatch.setattr(reach_facts, "local_addresses",
                        lambda ctx, family: ["::1"] if family == "ipv6" else ["127.0.0.1"])
    for port in (services.http_port, services.https_port):
        prober.override[port] = {"state": "filtered"}
    ctx = make_ctx(tmp_path, services, prober.url)  # an IPv4-only prober URL
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "pass", outcome.summary
    assert outcome.evidence["families"]["ipv6"].startswith("not reachable")


def test_is_global_ipv6():
    assert reach_facts.is_global_ipv6("2001:db8:77::10")
    assert reach_facts.is_global_ipv6("2a01:4f8::1")
    for other in ("fe80::1", "fd00::2", "::1", "10.0.0.1", "::ffff:10.0.0.1", "ff02::1", "junk"):
        assert not reach_facts.is_global_ipv6(other)


# ---------------------------------------------------------------- router.upnp-wan-exposed
def test_wan_upnp_exposed(tmp_path, services, prober):
    prober.upnp = {"exposed": True, "error": None,
                   "ssdp": {"answered": True, "port": 1900, "server": "Linux UPnP/1.1 MiniUPnPd/2.3.1",
                            "location": "http://127.0.0.1:5000/rootDesc.xml"},
                   "igd": {"found": True, "port": 5000, "path": "/rootDesc.xml", "control_reachable": True,
                           "device_type": "urn:schemas-upnp-org:device:InternetGatewayDevice:2"}}
    ctx = make_ctx(tmp_path, services, prober.url)
    outcome = router.upnp_wan_exposed(ctx)
    assert outcome.status == "fail"
    assert "answers SSDP" in outcome.summary and "accepts UPnP control calls" in outcome.summary
    assert outcome.evidence["ipv4"]["ssdp"]["server"].endswith("MiniUPnPd/2.3.1")


def test_wan_upnp_quiet_passes_and_missing_is_unknown(tmp_path, services, prober):
    ctx = make_ctx(tmp_path, services, prober.url)
    assert router.upnp_wan_exposed(ctx).status == "pass"
    prober.upnp = None
    ctx = make_ctx(tmp_path / "again", services, prober.url)
    assert router.upnp_wan_exposed(ctx).status == "unknown"


# ---------------------------------------------------------------- admin.default-cert
def test_factory_certificate_fails(tmp_path, services, prober):
    ctx = make_ctx(tmp_path, services, "")
    outcome = admin.default_cert(ctx)
    assert outcome.status == "fail", outcome.summary
    assert outcome.evidence["subject"]["CN"] == "QNAP NAS" and outcome.evidence["self_signed"] is True
    # seen from the internet too (same leaf certificate through the prober): worse
    ctx = make_ctx(tmp_path / "b", services, prober.url)
    reachability.reachability_admin(ctx)
    outcome = admin.default_cert(ctx)
    assert outcome.status == "fail" and outcome.severity == "medium"
    assert outcome.evidence["seen_from_internet"]


def test_own_certificate_passes_and_https_off(tmp_path):
    svc = Services(tmp_path, cert_subject="/C=DE/O=Example/CN=nas.example.org")
    try:
        ctx = make_ctx(tmp_path, svc, "")
        outcome = admin.default_cert(ctx)
        assert outcome.status == "pass" and "nas.example.org" in outcome.summary
        ctx = make_ctx(tmp_path / "off", svc, "", Stunnel={"Enable": 0})
        assert admin.default_cert(ctx).status == "pass"
    finally:
        svc.close()


def test_nothing_on_https_port_is_unknown(tmp_path, services):
    ctx = make_ctx(tmp_path, services, "", Stunnel={"Port": services.closed})
    assert admin.default_cert(ctx).status == "unknown"


# ---------------------------------------------------------------- a --root copy: nothing written in it is contacted
def copy_ctx(tmp_path: Path, services: Services, url: str, **extra: Dict[str, Any]) -> CheckContext:
    """A --root tree with the default settings ([reachability] local_probe = auto)."""
    settings = load_settings(None, environ={}).with_overrides({("reachability", "prober_url"): url})
    ctx = CheckContext(QtsRoot(nas_tree(tmp_path / "root", services, **extra)), settings)
    ctx.provide_router(router_facts([]))
    return ctx


def test_root_copy_certificate_is_not_fetched(tmp_path, services):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        ctx = copy_ctx(tmp_path, services, "", Stunnel={"Port": listener.getsockname()[1]})
        outcome = admin.default_cert(ctx)
        assert outcome.status == "unknown" and "--root tree" in outcome.summary, outcome.summary
        assert "local_probe = yes" in outcome.summary
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection is waiting: nothing was contacted
            listener.accept()
    finally:
        listener.close()


def test_root_copy_answers_are_not_compared(tmp_path, services, prober):
    ctx = copy_ctx(tmp_path, services, prober.url)
    assert ctx.reachability.local == {"ipv4": {}}
    outcome = reachability.reachability_admin(ctx)
    # open from outside but not proven to be this NAS: high, not the critical of a verified exposure
    assert outcome.status == "fail" and outcome.severity == "high", outcome.summary
    assert "not compared with this NAS" in outcome.summary and "--root tree" in outcome.summary
    assert {v["state"] for v in outcome.evidence["ports"]} == {UNVERIFIED}
    assert any("local_probe" in n for n in outcome.evidence["notes"])
