"""router.upnp-mappings against loopback IGD stand-ins: classification, severity, evidence, the router facts,
the fix (per fix_scope) with journal and undo, never touching other hosts' mappings."""

from __future__ import annotations

import functools

import pytest

from exposure_guard.checks import get_check, myqnapcloud
from exposure_guard.context import CheckContext
from exposure_guard.fixes.actions import ACTION_KINDS
from exposure_guard.fixes.apply import apply_actions, plan, undo_changes
from exposure_guard.fixes.journal import ChangeJournal
from exposure_guard.qts.root import QtsRoot
from exposure_guard.settings import load_settings
from exposure_guard.upnp import audit as upnp_audit
from tests.support.fakeigd import ENVELOPE, FAULT, FakeIgd, FakeSsdp, Mapping
from tests.support.qts import write_tree

NAS = "10.77.0.10"  # this NAS, per [agent] lan_addresses (loopback addresses never count as LAN addresses)
OTHER = "192.168.1.77"


def make_ctx(tmp_path, igd_url="", ulinux="[System]\nWeb Access Port = 8080\n[Stunnel]\nPort = 443\n", **settings):
    root = write_tree(tmp_path / "root", ulinux, default=None)
    overrides = {("router", "igd_url"): igd_url, ("agent", "lan_addresses"): NAS}
    overrides.update({tuple(k.split("__")): v for k, v in settings.items()})
    return CheckContext(QtsRoot(root), load_settings(None, environ={}).with_overrides(overrides),
                        state_dir=tmp_path / "state")


def evaluate(ctx):
    return get_check("router.upnp-mappings").evaluate(ctx)


def table():
    return [Mapping(8080, NAS, 8080, desc="ARC admin", lease=0), Mapping(8443, NAS, 8443, desc="photo", lease=600),
            Mapping(22, NAS, 22, "TCP", "ssh"), Mapping(51413, OTHER, 51413, "UDP", "torrent"),
            Mapping(8081, OTHER, 8080, desc="camera")]


@pytest.mark.parametrize("variant", ["igd2", "igd1", "ppp"])
def test_management_port_mapping_is_critical_with_full_evidence(tmp_path, variant):
    with FakeIgd(variant, table()) as igd:
        ctx = make_ctx(tmp_path, igd.location)
        out = evaluate(ctx)
    assert out.status == "fail" and out.severity == "critical"
    assert "forwards 3 ports to this NAS" in out.summary and "2 of them management ports" in out.summary
    assert "TCP 8080 → 10.77.0.10:8080 'ARC admin'" in out.summary
    rows = {r["external"]: r for r in out.evidence["mappings_to_this_nas"]}
    assert set(rows) == {"TCP 8080", "TCP 8443", "TCP 22"}
    assert rows["TCP 8080"]["internal"] == "10.77.0.10:8080" and rows["TCP 8080"]["management_port"] is True
    assert rows["TCP 8443"]["management_port"] is False and rows["TCP 8443"]["lease_seconds"] == 600
    assert rows["TCP 8080"]["description"] == "ARC admin" and rows["TCP 8080"]["protocol"] == "TCP"
    others = out.evidence["mappings_to_other_hosts"]
    assert {o["external"] for o in others} == {"UDP 51413", "TCP 8081"}
    assert all(o["note"] == "not this NAS's; never deleted" for o in others)
    assert out.evidence["upnp_offered"] is True and out.evidence["igd_external_ip"] == "203.0.113.7"
    assert out.evidence["management_ports"] == [22, 443, 8080]
    # the router facts other checks read (cached for the run)
    assert len(ctx.router.mappings()) == 5 and len(ctx.router.to_nas()) == 3
    assert ctx.router.external_ip == "203.0.113.7" and ctx.router.upnp_offered is True


def test_non_management_mapping_is_high(tmp_path):
    with FakeIgd("igd2", [Mapping(8443, NAS, 8443, desc="photo")]) as igd:
        out = evaluate(make_ctx(tmp_path, igd.location))
    assert out.status == "fail" and out.severity == "high"
    assert out.summary == ("the router forwards 1 port to this NAS by UPnP: TCP 8443 → 10.77.0.10:8443 'photo' "
                           "(opened by unknown software)")


def test_management_ports_come_from_the_nas_settings(tmp_path):
    with FakeIgd("igd2", [Mapping(8080, NAS, 8080), Mapping(5000, NAS, 5000)]) as igd:
        out = evaluate(make_ctx(tmp_path, igd.location, ulinux="[System]\nWeb Access Port = 5000\n"))
    rows = {r["external"]: r["management_port"] for r in out.evidence["mappings_to_this_nas"]}
    assert rows == {"TCP 8080": False, "TCP 5000": True} and out.severity == "critical"
    assert "forwards 2 ports to this NAS by UPnP, 1 of them a management port: TCP 5000 →" in out.summary


def test_only_other_hosts_mapped_passes_and_lists_them(tmp_path):
    with FakeIgd("igd2", [Mapping(8081, OTHER, 8080, desc="camera")]) as igd:
        out = evaluate(make_ctx(tmp_path, igd.location))
    assert out.status == "pass" and "none active to this NAS" in out.summary
    assert out.evidence["mappings_to_other_hosts"][0]["internal"] == "%s:8080" % OTHER


def test_disabled_mapping_to_the_nas_does_not_fail(tmp_path):
    with FakeIgd("igd1", [Mapping(8080, NAS, 8080, enabled=False)]) as igd:
        out = evaluate(make_ctx(tmp_path, igd.location))
    assert out.status == "pass" and out.evidence["mappings_to_this_nas"][0]["enabled"] is False


def test_no_lan_address_known_is_unknown(tmp_path):
    with FakeIgd("igd2", table()) as igd:
        ctx = make_ctx(tmp_path, igd.location)
        ctx.settings = ctx.settings.with_overrides({("agent", "lan_addresses"): ""})
        out = evaluate(ctx)
    assert out.status == "unknown" and "lan_addresses" in out.summary


def test_unreachable_configured_igd_is_unknown_with_the_reason(tmp_path):
    out = evaluate(make_ctx(tmp_path, "http://127.0.0.1:9/rootDesc.xml"))
    assert out.status == "unknown" and "connection refused" in out.summary
    assert out.evidence["upnp_offered"] is None


def test_unreadable_table_is_unknown(tmp_path):
    with FakeIgd("igd1", soap_override={"GetGenericPortMappingEntry": (500, b"junk")}) as igd:
        out = evaluate(make_ctx(tmp_path, igd.location))
    assert out.status == "unknown" and "cannot be read" in out.summary


def test_fake_root_never_searches_the_lan_unless_told(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("SSDP must not be sent for a --root tree")

    monkeypatch.setattr(upnp_audit, "find_gateways", boom)
    out = evaluate(make_ctx(tmp_path))
    assert out.status == "skipped" and "[router] discover = yes" in out.summary
    out = evaluate(make_ctx(tmp_path, router__discover="no"))
    assert out.status == "skipped"


# A search that gets an answer ends 0.4 s after it, so a long timeout costs nothing and a loaded machine
# cannot miss the answer.
ANSWERED = "30"


def _loopback_discovery(monkeypatch, responder):
    monkeypatch.setattr(upnp_audit, "find_gateways", functools.partial(upnp_audit.find_gateways, interfaces=["127.0.0.1"],
                                                                   group=responder.address))


def test_discovered_igd_is_audited(tmp_path, monkeypatch):
    with FakeIgd("igd1", table()) as igd, FakeSsdp(igd.location) as responder:
        _loopback_discovery(monkeypatch, responder)
        out = evaluate(make_ctx(tmp_path, router__discover="yes", router__discovery_timeout=ANSWERED))
    assert out.status == "fail" and out.evidence["found_by"] == "ssdp"
    assert out.evidence["discovery"]["answers"][0]["location"] == igd.location


def test_no_igd_answering_passes_saying_the_router_offers_no_upnp(tmp_path, monkeypatch):
    with FakeSsdp("", answer=b"not ssdp") as responder:
        _loopback_discovery(monkeypatch, responder)
        ctx = make_ctx(tmp_path, router__discover="yes", router__discovery_timeout="0.3")
        out = evaluate(ctx)
    assert out.status == "pass" and "does not offer UPnP" in out.summary
    assert out.evidence["upnp_offered"] is False and ctx.router.upnp_offered is False
    assert ctx.router.mappings() == [] and ctx.router.external_ip is None


def test_discovery_that_cannot_search_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(upnp_audit, "find_gateways", functools.partial(upnp_audit.find_gateways, interfaces=[]))
    out = evaluate(make_ctx(tmp_path, router__discover="yes"))
    assert out.status == "unknown" and out.evidence["upnp_offered"] is None


def test_broken_igd_answering_ssdp_is_unknown_not_pass(tmp_path, monkeypatch):
    with FakeIgd("igd1", description=b"<x") as igd, FakeSsdp(igd.location) as responder:
        _loopback_discovery(monkeypatch, responder)
        out = evaluate(make_ctx(tmp_path, router__discover="yes", router__discovery_timeout=ANSWERED))
    assert out.status == "unknown" and "not well-formed" in out.summary


# ---------------------------------------------------------------- the fix
def fix(ctx, outcome):
    return get_check("router.upnp-mappings").plan_fix(ctx, outcome)


@pytest.mark.parametrize("scope,deleted", [("management", {8080, 22}), ("all", {8080, 22, 8443})])
def test_fix_deletes_per_scope_journals_and_undo_re_adds(tmp_path, scope, deleted):
    with FakeIgd("igd2", table()) as igd:
        ctx = make_ctx(tmp_path, igd.location, router__fix_scope=scope)
        outcome = evaluate(ctx)
        actions = fix(ctx, outcome)
        assert {a.mapping.external_port for a in actions} == deleted
        journal = ChangeJournal(tmp_path / "state")
        planned = plan(ctx, actions)
        assert all(p.before.startswith("TCP ") for p in planned)
        result = apply_actions(ctx, journal, planned)
        assert not result.failed and len(result.applied) == len(deleted)
        left = {m.ext for m in igd.mappings}
        assert left == {8443, 51413, 8081} - deleted | {8443, 51413, 8081} & left
        assert not deleted & left and {51413, 8081} <= left  # other hosts untouched
        after = evaluate(ctx)
        assert after.status == ("pass" if scope == "all" else "fail")
        if scope == "management":
            assert after.severity == "high"
        # re-running plans nothing
        assert plan(ctx, fix(ctx, after)) == []
        records = journal.changes()
        assert all(r.kind == "igd-mapping-delete" and r.after == "absent" for r in records)
        lines = undo_changes(ctx, journal, journal.changes())
        assert all("re-added" in line for line in lines)
        restored = {(m.ext, m.client, m.port, m.desc, m.lease) for m in igd.mappings}
    assert restored == {(m.ext, m.client, m.port, m.desc, m.lease) for m in table()}


def test_undo_after_undo_is_a_no_op_and_does_not_overwrite_a_new_owner(tmp_path):
    with FakeIgd("igd1", [Mapping(8080, NAS, 8080, desc="admin")]) as igd:
        ctx = make_ctx(tmp_path, igd.location)
        journal = ChangeJournal(tmp_path / "state")
        apply_actions(ctx, journal, plan(ctx, fix(ctx, evaluate(ctx))))
        assert igd.mappings == []
        igd.mappings.append(Mapping(8080, OTHER, 80, desc="someone else"))
        kind = ACTION_KINDS["igd-mapping-delete"]
        with pytest.raises(Exception, match="now maps that port to %s:80" % OTHER):
            kind.undo(ctx, journal.changes()[0])
        assert igd.mappings[0].client == OTHER


def test_fix_skips_a_port_that_now_leads_elsewhere(tmp_path):
    with FakeIgd("igd1", [Mapping(8080, NAS, 8080)]) as igd:
        ctx = make_ctx(tmp_path, igd.location)
        actions = fix(ctx, evaluate(ctx))
        igd.mappings[:] = [Mapping(8080, OTHER, 8080)]
        assert plan(ctx, actions) == []
        assert igd.mappings[0].client == OTHER


def test_failed_delete_is_journaled_as_failed(tmp_path):
    with FakeIgd("igd1", [Mapping(8080, NAS, 8080)]) as igd:
        ctx = make_ctx(tmp_path, igd.location)
        actions = fix(ctx, evaluate(ctx))
        igd.soap_override["DeletePortMapping"] = (500, (ENVELOPE % (FAULT % (606, "Action not authorized"))).encode())
        journal = ChangeJournal(tmp_path / "state")
        result = apply_actions(ctx, journal, plan(ctx, actions))
    assert result.failed and "606" in result.failed[0]
    assert journal.changes()[0].state == "failed"


def test_arc_removal_plans_only_this_nas_arc_mappings(tmp_path):
    mappings = [Mapping(8080, NAS, 8080, desc="web"), Mapping(10443, NAS, 443, desc="https"),
                Mapping(9000, NAS, 9000, desc="QNAP Photo"), Mapping(7000, NAS, 7000, desc="plex"),
                Mapping(10444, OTHER, 443, desc="QNAP elsewhere")]
    ulinux = "[System]\nWeb Access Port = 8080\nExtPort = 8080\n[Stunnel]\nExtSSLPort = 10443\n"
    with FakeIgd("igd2", mappings) as igd:
        ctx = make_ctx(tmp_path, igd.location, ulinux=ulinux)
        actions = myqnapcloud.arc_mapping_removal(ctx)
        assert sorted(a.mapping.external_port for a in actions) == [8080, 9000, 10443]
        assert all(a.check_id == "myqnapcloud.upnp-forwarding" for a in actions)
        ctx.offline = True
        ctx.refresh()
        assert myqnapcloud.arc_mapping_removal(ctx) == []
    # no router reachable: the ARC fix goes ahead without router actions
    assert myqnapcloud.arc_mapping_removal(make_ctx(tmp_path, "http://127.0.0.1:9/x.xml")) == []
    assert myqnapcloud.arc_mapping_removal(make_ctx(tmp_path)) == []


def test_every_mapping_says_who_opened_it_and_what_it_leads_to(tmp_path):
    mappings = [Mapping(8080, NAS, 8080, desc="web"),                      # ARC's recorded router port
                Mapping(9000, NAS, 9000, desc="myQNAPcloud photo"),        # ARC by its description
                Mapping(32400, NAS, 32400, desc="Plex Media Server"),      # Plex by its description
                Mapping(41000, NAS, 32400, desc=""),                       # Plex by its usual port
                Mapping(445, NAS, 445, desc="libminiupnpc"),               # nobody known: unknown, leads to SMB
                Mapping(2222, NAS, 22, desc="Syncthing"),                  # description wins over the port
                Mapping(8088, NAS, 8088, desc="x"),                        # a package's web port
                Mapping(10444, OTHER, 443, desc="QNAP elsewhere")]         # another host, whatever it says
    ulinux = ("[System]\nWeb Access Port = 8080\nExtPort = 8080\n[Stunnel]\nPort = 443\n"
              "[LOGIN]\nSSH Port = 22\n")
    with FakeIgd("igd2", mappings) as igd:
        ctx = make_ctx(tmp_path, igd.location, ulinux=ulinux)
        (ctx.root.path("etc/config/qpkg.conf")).write_text(
            "[Tautulli]\nName = Tautulli\nWeb_Port = 8088\nInstall_Path = /share/x/.qpkg/Tautulli\n")
        (ctx.root.path("etc/config/upnpc.conf")).write_text("[UPnP_Global]\nEnable = FALSE\n")
        out = evaluate(ctx)
    rows = {r["external"]: r for r in out.evidence["mappings_to_this_nas"]}
    who = {port: (rows["TCP %d" % port]["opened_by"]["kind"], rows["TCP %d" % port]["opened_by"]["label"])
           for port in (8080, 9000, 32400, 41000, 445, 2222, 8088)}
    assert who == {
        8080: ("arc", "this NAS's Auto Router Configuration (myQNAPcloud), left over: ARC is off now"),
        9000: ("arc", "this NAS's Auto Router Configuration (myQNAPcloud), left over: ARC is off now"),
        32400: ("app", "Plex Media Server"), 41000: ("app", "Plex Media Server"), 445: ("unknown", "unknown"),
        2222: ("app", "Syncthing"), 8088: ("unknown", "unknown")}
    assert rows["TCP 8080"]["opened_by"]["why"] == ("its router port 8080 is the one ARC recorded in uLinux.conf "
                                                    "[System] ExtPort")
    assert rows["TCP 9000"]["opened_by"]["why"] == "its description names 'myqnapcloud'"
    assert rows["TCP 41000"]["opened_by"]["why"] == "internal port 32400 is Plex Media Server's usual port"
    leads = {port: rows["TCP %d" % port]["leads_to"] for port in (8080, 9000, 445, 2222, 8088, 32400)}
    assert leads == {8080: "admin HTTP", 9000: None, 445: "SMB", 2222: "SSH", 8088: "Tautulli web page",
                     32400: None}
    assert "TCP 2222 → 10.77.0.10:22 'Syncthing' (SSH, opened by Syncthing)" in out.summary
    assert "TCP 8080 → 10.77.0.10:8080 'web' (admin HTTP, opened by ARC)" in out.summary
    assert all("opened_by" not in row for row in out.evidence["mappings_to_other_hosts"])


def test_a_mapping_to_a_port_a_container_publishes_names_the_container(tmp_path):
    with FakeIgd("igd2", [Mapping(18096, NAS, 8096, desc="libminiupnpc")]) as igd:
        ctx = make_ctx(tmp_path, igd.location)
        folder = ctx.root.path("var/lib/docker/containers/abc")
        folder.mkdir(parents=True)
        (folder / "hostconfig.json").write_text('{"PortBindings": {"8096/tcp": [{"HostIp": "", "HostPort": "8096"}]}}')
        (folder / "config.v2.json").write_text('{"Name": "/jellyfin", "State": {"Running": true}}')
        out = evaluate(ctx)
    row = out.evidence["mappings_to_this_nas"][0]
    assert row["opened_by"] == {"kind": "container", "label": "container jellyfin (or software in it)",
                                "why": "internal port 8096 is published by container jellyfin"}
    assert row["leads_to"] == "container jellyfin"


def test_ipv6_pinholes_are_described_and_said_to_be_unlistable(tmp_path):
    with FakeIgd("igd2", table()) as igd:
        out = evaluate(make_ctx(tmp_path / "a", igd.location))
        assert igd.calls.count("GetFirewallStatus") == 1
    pinholes = out.evidence["ipv6_pinholes"]
    assert pinholes["offered"] is True and "cannot be listed" in pinholes["note"]
    assert pinholes["services"][0]["control_url"].endswith("/ctl/IP6FCtl")
    assert (pinholes["services"][0]["firewall_enabled"], pinholes["services"][0]["inbound_pinhole_allowed"]) == (
        True, True)
    with FakeIgd("igd2", table()) as igd:
        igd.inbound_pinholes = "0"
        shut = evaluate(make_ctx(tmp_path / "b", igd.location)).evidence["ipv6_pinholes"]
    assert shut["note"] == "the router does not let LAN hosts open inbound IPv6 pinholes by UPnP"
    fault = ENVELOPE % FAULT % (606, "Action not authorized")
    with FakeIgd("igd2", table(), soap_override={"GetFirewallStatus": (500, fault.encode())}) as igd:
        refused = evaluate(make_ctx(tmp_path / "c", igd.location))
    assert refused.status == "fail"  # the IPv4 audit is unaffected
    assert "could not be read" in refused.evidence["ipv6_pinholes"]["note"]
    assert "606" in refused.evidence["ipv6_pinholes"]["services"][0]["error"]
    with FakeIgd("igd1", table()) as igd:
        none = evaluate(make_ctx(tmp_path / "d", igd.location)).evidence["ipv6_pinholes"]
    assert none["offered"] is False and "cannot open IPv6 pinholes" in none["note"]


def test_arc_on_labels_its_mappings_without_left_over(tmp_path):
    ulinux = "[System]\nWeb Access Port = 8080\n[Stunnel]\nPort = 443\nExtSSLPort = 10443\n"
    with FakeIgd("igd2", [Mapping(10443, NAS, 443, desc="https")]) as igd:
        ctx = make_ctx(tmp_path, igd.location, ulinux=ulinux)
        (ctx.root.path("etc/config/upnpc.conf")).write_text("[UPnP_Global]\nEnable = TRUE\n")
        out = evaluate(ctx)
    row = out.evidence["mappings_to_this_nas"][0]
    assert row["opened_by"] == {"kind": "arc", "label": "this NAS's Auto Router Configuration (myQNAPcloud)",
                                "why": "its router port 10443 is the one ARC recorded in uLinux.conf "
                                       "[Stunnel] ExtSSLPort"}
    assert row["leads_to"] == "admin HTTPS"


def test_wan_exposed_stays_registered_as_skipped(tmp_path):
    out = get_check("router.upnp-wan-exposed").evaluate(make_ctx(tmp_path))
    assert out.status == "skipped"
