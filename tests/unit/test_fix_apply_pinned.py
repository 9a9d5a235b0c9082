"""apply_actions / undo_changes and the router-mapping action pinned: records, journal lines, every line an
undo prints, and what the IGD action says and decides. Routers are loopback FakeIgds over real HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from exposure_guard.context import CheckContext
from exposure_guard.errors import ExposureGuardError, JournalEntryRefused
from exposure_guard.fixes.actions import ACTION_KINDS, ConfigKeyAction, DaemonStopAction
from exposure_guard.fixes.apply import apply_actions, plan, undo_changes
from exposure_guard.fixes.igd import IgdMappingDeleteAction
from exposure_guard.fixes.journal import ChangeJournal, ChangeRecord
from exposure_guard.qts.root import QtsRoot
from exposure_guard.upnp.models import WANIP1, PortMapping
from tests.support.fakeigd import ENVELOPE, FAULT, FakeIgd, Mapping

ULINUX = (b"[System]\nVersion = 5.1.0\nNumber = 2399\nBuild Number = 20230926\n"
          b"[LOGIN]\nTELNET Enable = TRUE\n[SNMP]\nEnable = TRUE\n")
NAS = "10.77.0.10"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "nas/etc/config").mkdir(parents=True)
    (tmp_path / "nas/etc/config/uLinux.conf").write_bytes(ULINUX)
    return tmp_path / "nas"


def ctx_of(root: Path) -> CheckContext:
    return CheckContext(QtsRoot(root), offline=True, state_dir=root / "var/eg")


def journal_of(root: Path) -> ChangeJournal:
    return ChangeJournal(root / "var/eg", root)


def events(root: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in (root / "var/eg/journal.jsonl").read_text().splitlines()]


def telnet() -> ConfigKeyAction:
    return ConfigKeyAction("service.telnet", "/etc/config/uLinux.conf", "LOGIN", "TELNET Enable", "FALSE")


def snmp() -> ConfigKeyAction:
    return ConfigKeyAction("service.snmp", "etc/config/uLinux.conf", "SNMP", "Enable", "FALSE")


# ---------------------------------------------------------------- apply_actions
def test_applied_records_carry_everything_undo_needs(root):
    ctx = ctx_of(root)
    result = apply_actions(ctx, journal_of(root), plan(ctx, [telnet(), snmp()]))
    first, second = result.applied
    assert re.fullmatch(r"fix-[0-9a-f]{12}", first.batch) and first.batch == second.batch
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", first.at)
    assert (first.kind, first.target, first.before, first.after, first.state) == (
        "config-key", "/etc/config/uLinux.conf [LOGIN] TELNET Enable", "TRUE", "FALSE", "applied")
    assert set(first.params) == {"file", "section", "key", "value", "backup", "sha256_after"}
    assert first.params["file"] == "etc/config/uLinux.conf"  # stored relative to the root
    assert first.to_report() == journal_of(root).changes()[0].to_report()
    assert [e["event"] for e in events(root)] == ["planned", "applied", "planned", "applied"]
    planned = events(root)[0]
    assert {k: planned[k] for k in ("check_id", "kind", "target", "before", "after", "batch")} == {
        "check_id": "service.telnet", "kind": "config-key", "target": first.target, "before": "TRUE",
        "after": "FALSE", "batch": first.batch}
    assert planned["params"] == {"file": "etc/config/uLinux.conf", "section": "LOGIN", "key": "TELNET Enable",
                                 "value": "FALSE"}
    assert events(root)[1]["params"]["backup"] == first.params["backup"]


def test_a_skipped_first_action_does_not_stop_the_next(root):
    ctx = ctx_of(root)
    planned = plan(ctx, [telnet(), snmp()])
    (root / "etc/config/uLinux.conf").write_bytes(ULINUX.replace(b"TELNET Enable = TRUE", b"TELNET Enable = 0"))
    result = apply_actions(ctx, journal_of(root), planned)
    assert result.skipped == ["/etc/config/uLinux.conf [LOGIN] TELNET Enable"]
    assert [r.check_id for r in result.applied] == ["service.snmp"] and result.failed == []


def test_a_failed_action_is_journaled_with_its_reason(root, tmp_path):
    (root / "etc/config/uLinux.conf").chmod(0o644)
    outside = tmp_path / "elsewhere.conf"
    outside.write_bytes(ULINUX)
    (root / "etc/config/uLinux.conf").unlink()
    (root / "etc/config/uLinux.conf").symlink_to(outside)
    ctx = ctx_of(root)
    result = apply_actions(ctx, journal_of(root), plan(ctx, [telnet()]))
    failed = events(root)[1]
    assert failed["event"] == "failed" and failed["detail"] and failed["detail"] in result.failed[0]
    assert journal_of(root).changes()[0].detail == failed["detail"]


# ---------------------------------------------------------------- undo_changes lines
def record(cid: str, state: str, kind: str = "config-key", **params: Any) -> ChangeRecord:
    return ChangeRecord(cid, "x", kind, "t", "TRUE", "FALSE", "t0", state, params)


def test_every_line_undo_prints(root):
    ctx = ctx_of(root)
    journal = journal_of(root)
    apply_actions(ctx, journal, plan(ctx, [telnet()]))
    applied = journal.changes()[0]
    records = [applied, record("chg-undone", "undone"), record("chg-failed", "failed"),
               record("chg-refused", "applied", file="../../etc/passwd", section="a", key="b"),
               record("chg-refused2", "applied", file="etc/config/uLinux.conf", section="System",
                      key="Web Access Port"),
               record("chg-newer", "applied", kind="k" * 100), record("chg-newest", "applied", kind="other")]
    lines = undo_changes(ctx, journal, records)
    assert lines.pop(0) == "chg-newest FAILED to undo: it is of unknown kind 'other' (written by a newer agent?)"
    assert lines[:3] == [
        "chg-newer FAILED to undo: it is of unknown kind %r (written by a newer agent?)" % ("k" * 60),
        "chg-refused2 refused: it would change [System] Web Access Port, which could lock the owner out; not "
        "undone (the journal line was not written by this agent, or the tree moved)",
        lines[2]]
    assert lines[2].startswith("chg-refused refused: its file ")
    assert lines[3:] == ["chg-failed had failed; nothing to undo", "chg-undone already undone",
                         "%s undone: restored the exact original bytes of /etc/config/uLinux.conf" % applied.change_id]
    assert (lines.refused, lines.failed) == (2, 2)
    undone = events(root)[-1]
    assert (undone["event"], undone["change_id"], undone["detail"]) == (
        "undone", applied.change_id, "restored the exact original bytes of /etc/config/uLinux.conf")
    assert (root / "etc/config/uLinux.conf").read_bytes() == ULINUX


def test_undo_texts_of_the_config_action(root):
    ctx = ctx_of(root)
    journal = journal_of(root)
    apply_actions(ctx, journal, plan(ctx, [telnet()]))
    (root / "etc/config/uLinux.conf").write_bytes(b"[LOGIN]\nTELNET Enable = FALSE\n[New]\nx = 1\n")
    (line,) = undo_changes(ctx, journal, journal.changes())
    assert line.endswith(" undone: set /etc/config/uLinux.conf [LOGIN] TELNET Enable back to 'TRUE' (the file had "
                         "other changes since; they were kept)")
    with pytest.raises(JournalEntryRefused) as info:
        ConfigKeyAction.undo(ctx, record("c", "applied", file="etc/config/uLinux.conf", section="LOGIN"))
    assert str(info.value) == "it does not name a file, section and key with a text value before"
    with pytest.raises(ExposureGuardError) as info:
        ConfigKeyAction("x", "etc/config/uLinux.conf", "Login", "SSH Port", "22")
    assert str(info.value) == "refusing to plan a change of [Login] SSH Port: it could lock the owner out"


def test_a_backup_that_cannot_be_restored_is_a_named_error(root, monkeypatch):
    from exposure_guard.fixes import actions

    ctx = ctx_of(root)
    journal = journal_of(root)
    apply_actions(ctx, journal, plan(ctx, [telnet()]))

    def read_only(path, data, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(actions, "atomic_write", read_only)
    (line,) = undo_changes(ctx, journal, journal.changes())
    assert line.endswith("FAILED to undo: cannot restore /etc/config/uLinux.conf [LOGIN] TELNET Enable: "
                         "Read-only file system")


def test_config_paths_are_kept_relative_to_the_root():
    assert ConfigKeyAction("x", "//Xtra.conf", "A", "b", "c").file == "Xtra.conf"


def test_daemon_stop_texts_and_params():
    action = DaemonStopAction("service.telnet", "utelnetd", "/usr/sbin/utelnetd -d")
    assert (action.check_id, action.params(), action.target, action.after) == (
        "service.telnet", {"name": "utelnetd", "command": "/usr/sbin/utelnetd -d"}, "process utelnetd", "stopped")
    rec = ChangeRecord("c", "service.telnet", "daemon-stop", "process utelnetd", "stopped", "stopped", "t",
                       "applied", {"name": "utelnetd", "command": "x"})
    assert DaemonStopAction.undo(None, rec) == "utelnetd was not running before; left stopped"  # type: ignore[arg-type]


def test_every_action_kind_is_registered_under_its_name():
    assert dict(ACTION_KINDS) == {"config-key": ConfigKeyAction, "daemon-stop": DaemonStopAction,
                                  "igd-mapping-delete": IgdMappingDeleteAction}


# ---------------------------------------------------------------- the router mapping action
def igd_action(igd: FakeIgd, mapping: Optional[PortMapping] = None) -> IgdMappingDeleteAction:
    return IgdMappingDeleteAction("router.upnp-mappings", "http://127.0.0.1:%d/ctl/IPConn" % igd.port,
                                  igd.service_type, mapping or PortMapping("", 8080, "TCP", 8080, NAS, True, "adm", 0))


def test_igd_action_texts(root):
    with FakeIgd("igd1", [Mapping(8080, NAS, 8080, desc="adm", lease=0, enabled=False)]) as igd:
        action = igd_action(igd)
        ctx = ctx_of(root)
        url = "http://127.0.0.1:%d/ctl/IPConn" % igd.port
        assert action.target == "IGD %s mapping TCP 8080 → %s:8080" % (url, NAS)
        assert action.describe(ctx) == "delete the router's UPnP mapping TCP 8080 → %s:8080 'adm' (IGD %s)" % (NAS, url)
        assert action.current(ctx) == "TCP 8080 → %s:8080 'adm' (disabled) lease 0 s" % NAS
        igd.mappings[0].enabled = True
        assert action.current(ctx) == "TCP 8080 → %s:8080 'adm' lease 0 s" % NAS
        igd.mappings.clear()
        assert action.current(ctx) == "absent" and action.needed(ctx) is False
        igd.soap_override["GetSpecificPortMappingEntry"] = (500, (ENVELOPE % (FAULT % (501, "Busy"))).encode())
        assert action.current(ctx) == ("unknown (GetSpecificPortMappingEntry failed with UPnP error 501 Busy (Action "
                                       "Failed) at %s)" % url)


@pytest.mark.parametrize("code,needed", [(401, True), (402, False), (501, False)])
def test_igd_action_is_needed_when_the_router_cannot_say(root, code, needed):
    with FakeIgd("igd1") as igd:
        igd.soap_override["GetSpecificPortMappingEntry"] = (500, (ENVELOPE % (FAULT % (code, "x"))).encode())
        assert igd_action(igd).needed(ctx_of(root)) is needed
    # no answer at all: the delete itself will say why
    unreachable = IgdMappingDeleteAction("r", "http://127.0.0.1:9/ctl", WANIP1,
                                         PortMapping("", 1, "TCP", 1, NAS, True, "", 0))
    assert unreachable.needed(ctx_of(root)) is True


def undo_record(igd: FakeIgd, **mapping: Any) -> ChangeRecord:
    base = PortMapping("", 8080, "TCP", 8080, NAS, True, "adm", 600).to_dict()
    base.update(mapping)
    return ChangeRecord("c", "router.upnp-mappings", "igd-mapping-delete", "t", "x", "absent", "t", "applied",
                        {"control_url": "http://127.0.0.1:%d/ctl/IPConn" % igd.port,
                         "service_type": igd.service_type, "mapping": base})


@pytest.mark.parametrize("port", [0, 65535])
@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_igd_undo_re_adds_edge_ports_of_both_protocols(root, port, protocol):
    with FakeIgd("igd1") as igd:
        url = "http://127.0.0.1:%d/ctl/IPConn" % igd.port
        line = IgdMappingDeleteAction.undo(ctx_of(root), undo_record(igd, external_port=port, internal_port=port,
                                                                     protocol=protocol))
        assert line == "re-added mapping %s %d → %s:%d ('adm', lease 600 s) on %s" % (protocol, port, NAS, port, url)
        assert [(m.ext, m.proto, m.port) for m in igd.mappings] == [(port, protocol, port)]
        # the re-add went to the service the journal names (the fake answers only its own service type)
        assert igd.calls == ["GetSpecificPortMappingEntry", "AddPortMapping"]
        assert IgdMappingDeleteAction.undo(ctx_of(root), undo_record(igd, external_port=port, internal_port=port,
                                                                     protocol=protocol)) == \
            "mapping %s %d → %s:%d is already back on the router" % (protocol, port, NAS, port)


def test_igd_undo_failures_are_named(root):
    with FakeIgd("igd1", [Mapping(8080, "10.77.0.99", 80)]) as igd:
        url = "http://127.0.0.1:%d/ctl/IPConn" % igd.port
        with pytest.raises(ExposureGuardError) as info:
            IgdMappingDeleteAction.undo(ctx_of(root), undo_record(igd))
        assert str(info.value) == ("cannot re-add TCP 8080 → %s:8080: the router now maps that port to 10.77.0.99:80; "
                                   "left as is" % NAS)
        igd.mappings.clear()
        igd.soap_override["AddPortMapping"] = (500, (ENVELOPE % (FAULT % (606, "Action not authorized"))).encode())
        with pytest.raises(ExposureGuardError) as info:
            IgdMappingDeleteAction.undo(ctx_of(root), undo_record(igd))
        assert str(info.value).startswith("cannot re-add TCP 8080 → %s:8080 on %s: AddPortMapping failed with UPnP "
                                          "error 606" % (NAS, url))


@pytest.mark.parametrize("mapping,error", [
    ({"protocol": "ICMP"}, "its mapping ICMP 8080 → %s:8080 is not a TCP or UDP port mapping" % NAS),
    ({"external_port": 65536}, "its mapping TCP 65536 → %s:8080 is not a TCP or UDP port mapping" % NAS),
    ({"internal_port": 65536}, "its mapping TCP 8080 → %s:65536 is not a TCP or UDP port mapping" % NAS),
    ({"external_port": -1}, "its mapping TCP -1 → %s:8080 is not a TCP or UDP port mapping" % NAS),
    ({"internal_port": -1}, "its mapping TCP 8080 → %s:-1 is not a TCP or UDP port mapping" % NAS),
    ({"external_port": "x"}, "its mapping, control URL or service type is missing or damaged"),
])
def test_igd_undo_refuses_damaged_mappings_with_a_reason(root, mapping, error):
    with FakeIgd("igd1") as igd:
        with pytest.raises(JournalEntryRefused) as info:
            IgdMappingDeleteAction.undo(ctx_of(root), undo_record(igd, **mapping))
        assert str(info.value) == error
        assert igd.calls == []  # nothing was sent
