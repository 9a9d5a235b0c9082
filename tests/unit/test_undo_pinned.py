"""Fix and undo pinned: batches, backups, crashes, skipped and failed actions, damaged journal lines.

Each test builds a small QTS tree, applies real ConfigKeyActions through the journal and undoes them through
the CLI (in-process) or ``undo_changes``; the verdict is always the bytes on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

import pytest

from exposure_guard.context import CheckContext
from exposure_guard.core import plan_fixes
from exposure_guard.fixes.actions import ConfigKeyAction
from exposure_guard.fixes.apply import apply_actions, plan, undo_changes
from exposure_guard.fixes.journal import ChangeJournal
from exposure_guard.qts.root import QtsRoot
from exposure_guard.settings import load_settings
from tests.support.qts import tree_bytes

ULINUX = (b"[System]\nVersion = 5.1.0\nNumber = 2399\nBuild Number = 20230926\n"
          b"Server Name = NAS\n[LOGIN]\nTELNET Enable = TRUE\n[SNMP]\nEnable = TRUE\n")
UPNPC = b"[UPnP_Global]\nEnable = TRUE\n"
STATE = "var/exposure-guard"  # the state dir the CLI uses under --root


@pytest.fixture
def nas(tmp_path: Path) -> Path:
    root = tmp_path / "nas"
    (root / "etc/config").mkdir(parents=True)
    (root / "etc/config/uLinux.conf").write_bytes(ULINUX)
    (root / "etc/config/upnpc.conf").write_bytes(UPNPC)
    return root


def context(root: Path) -> CheckContext:
    return CheckContext(QtsRoot(root), offline=True, state_dir=root / STATE)


def journal_of(root: Path) -> ChangeJournal:
    return ChangeJournal(root / STATE, root)


def telnet_off() -> ConfigKeyAction:
    return ConfigKeyAction("service.telnet", "etc/config/uLinux.conf", "LOGIN", "TELNET Enable", "FALSE")


def snmp_off() -> ConfigKeyAction:
    return ConfigKeyAction("service.snmp", "etc/config/uLinux.conf", "SNMP", "Enable", "FALSE")


def upnp_off() -> ConfigKeyAction:
    return ConfigKeyAction("myqnapcloud.upnp-forwarding", "etc/config/upnpc.conf", "UPnP_Global", "Enable", "FALSE")


def fix(root: Path, *actions: ConfigKeyAction):
    ctx = context(root)
    return apply_actions(ctx, journal_of(root), plan(ctx, list(actions)))


def events(root: Path) -> List[Dict[str, object]]:
    return [json.loads(line) for line in (root / STATE / "journal.jsonl").read_text().splitlines()]


def conf(root: Path, name: str = "uLinux.conf") -> bytes:
    return (root / "etc/config" / name).read_bytes()


# ---------------------------------------------------------------- undo --last and batches
def test_undo_last_reverts_the_whole_newest_batch_and_only_it(nas, run_cli):
    original = tree_bytes(nas)
    first = fix(nas, telnet_off())
    second = fix(nas, snmp_off(), upnp_off())
    assert len(first.applied) == 1 and len(second.applied) == 2
    assert first.applied[0].batch != second.applied[0].batch == second.applied[1].batch

    code, out, _ = run_cli("undo", "--root", str(nas), "--last")
    assert code == 0 and out.count(" undone: ") == 2
    assert conf(nas, "upnpc.conf") == UPNPC
    assert conf(nas) == ULINUX.replace(b"TELNET Enable = TRUE", b"TELNET Enable = FALSE")

    code, out, _ = run_cli("undo", "--root", str(nas), "--last")  # then the batch before it
    assert code == 0 and out.count(" undone: ") == 1 and first.applied[0].change_id in out
    assert tree_bytes(nas) == original

    code, out, _ = run_cli("undo", "--root", str(nas), "--last")
    assert code == 0 and "Nothing to undo" in out


def test_undo_last_of_an_old_journal_without_batches_reverts_one_change(nas, run_cli):
    fix(nas, telnet_off(), snmp_off())
    path = nas / STATE / "journal.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in e.items() if k != "batch"}) + "\n" for e in lines))
    code, out, _ = run_cli("undo", "--root", str(nas), "--last")
    assert code == 0 and out.count(" undone: ") == 1
    assert conf(nas) == ULINUX.replace(b"TELNET Enable = TRUE", b"TELNET Enable = FALSE")


def test_two_changes_to_one_file_have_their_own_backups_and_undo_to_the_original_bytes(nas):
    result = fix(nas, telnet_off(), snmp_off())
    backups = [r.params["backup"] for r in result.applied]
    assert len(set(backups)) == 2 and all(Path(b).is_file() for b in backups)
    assert Path(backups[0]).read_bytes() == ULINUX  # each backup holds the file as that change found it
    assert Path(backups[1]).read_bytes() == ULINUX.replace(b"TELNET Enable = TRUE", b"TELNET Enable = FALSE")
    lines = undo_changes(context(nas), journal_of(nas), journal_of(nas).changes())
    assert [line.split(" undone: ")[1] for line in lines] == ["restored the exact original bytes of "
                                                                "/etc/config/uLinux.conf"] * 2
    assert conf(nas) == ULINUX


def test_the_first_ever_backup_is_never_overwritten(nas):
    fix(nas, telnet_off())
    orig = nas / STATE / "backups/etc__config__uLinux.conf.orig"
    assert orig.read_bytes() == ULINUX
    undo_changes(context(nas), journal_of(nas), journal_of(nas).changes())
    (nas / "etc/config/uLinux.conf").write_bytes(ULINUX.replace(b"NAS", b"RENAMED"))
    fix(nas, telnet_off())
    assert orig.read_bytes() == ULINUX
    assert len(list((nas / STATE / "backups").iterdir())) == 3  # .orig and one per change


# ---------------------------------------------------------------- undo after the file changed
def test_undo_after_other_edits_reverts_only_that_key_in_that_file(nas, run_cli):
    fix(nas, upnp_off())
    edited = conf(nas, "upnpc.conf") + b"[Owner]\nNote = kept\n"
    (nas / "etc/config/upnpc.conf").write_bytes(edited)
    code, out, _ = run_cli("undo", "--root", str(nas), "--last")
    assert code == 0 and "set /etc/config/upnpc.conf [UPnP_Global] Enable back to 'TRUE'" in out
    assert conf(nas, "upnpc.conf") == edited.replace(b"Enable = FALSE", b"Enable = TRUE")
    assert conf(nas) == ULINUX  # never the default uLinux.conf instead of the file the fix changed


def test_undo_of_a_key_the_fix_added_removes_it_and_keeps_other_edits(nas):
    add = ConfigKeyAction("service.x", "etc/config/upnpc.conf", "UPnP_Global", "Added Key", "0")
    result = fix(nas, add)
    assert result.applied[0].before is None and b"Added Key = 0" in conf(nas, "upnpc.conf")
    (nas / "etc/config/upnpc.conf").write_bytes(conf(nas, "upnpc.conf") + b"[Owner]\nNote = kept\n")
    lines = undo_changes(context(nas), journal_of(nas), journal_of(nas).changes())
    assert "back to None" in lines[0]
    assert conf(nas, "upnpc.conf") == UPNPC + b"[Owner]\nNote = kept\n"


def test_undo_of_a_key_added_to_a_file_that_did_not_exist_removes_the_key(nas):
    add = ConfigKeyAction("service.x", "etc/config/new.conf", "Global", "Enable", "FALSE")
    result = fix(nas, add)
    assert result.applied[0].params["backup"] == ""  # nothing to back up
    assert conf(nas, "new.conf") == b"[Global]\nEnable = FALSE\n"
    undo_changes(context(nas), journal_of(nas), journal_of(nas).changes())
    assert b"Enable" not in conf(nas, "new.conf")


# ---------------------------------------------------------------- crash between planned and applied
def crash_after_planning(root: Path, action: ConfigKeyAction, change_made: bool) -> None:
    """What a power cut leaves: the 'planned' line, with or without the change, and no 'applied' line."""
    ctx = context(root)
    journal_of(root).append({"change_id": "chg-000000000001", "check_id": action.check_id, "kind": action.kind,
                             "target": action.target, "before": action.current(ctx), "after": action.after,
                             "params": action.params(), "batch": "fix-crashed", "event": "planned"})
    if change_made:
        ctx.config.setcfg(action.section, action.key, action.value, action.file)


@pytest.mark.parametrize("change_made", [True, False])
def test_a_change_cut_off_between_planned_and_applied_is_undone_from_its_planned_line(nas, run_cli, change_made):
    crash_after_planning(nas, telnet_off(), change_made)
    code, out, _ = run_cli("history", "--root", str(nas), "--json")
    assert [r["state"] for r in json.loads(out)] == ["planned"]
    code, out, _ = run_cli("undo", "--root", str(nas), "--last")
    assert code == 0 and "chg-000000000001 undone" in out
    assert conf(nas) == ULINUX
    code, out, _ = run_cli("history", "--root", str(nas), "--json")
    assert [r["state"] for r in json.loads(out)] == ["undone"]


# ---------------------------------------------------------------- needed(), skipped, failed
def test_an_action_no_longer_needed_at_apply_time_is_skipped_and_not_journaled(nas):
    ctx = context(nas)
    planned = plan(ctx, [telnet_off(), upnp_off()])
    assert [p.before for p in planned] == ["TRUE", "TRUE"]
    (nas / "etc/config/upnpc.conf").write_bytes(b"[UPnP_Global]\nEnable = false\n")  # the owner was quicker
    result = apply_actions(ctx, journal_of(nas), planned)
    assert result.skipped == ["/etc/config/upnpc.conf [UPnP_Global] Enable"]
    assert [r.target for r in result.applied] == ["/etc/config/uLinux.conf [LOGIN] TELNET Enable"]
    assert [e["event"] for e in events(nas)] == ["planned", "applied"]


@pytest.mark.parametrize("now,wanted,needed", [("TRUE", "FALSE", True), ("1", "FALSE", True), ("0", "FALSE", False),
                                               ("no", "0", False), ("yes", "TRUE", False), ("abc", "abc", False),
                                               ("abc", "abd", True), (None, "FALSE", True)])
def test_needed_compares_booleans_by_meaning_and_other_values_exactly(nas, now, wanted, needed):
    text = b"[UPnP_Global]\n" + (b"Enable = %s\n" % now.encode() if now is not None else b"")
    (nas / "etc/config/upnpc.conf").write_bytes(text)
    action = ConfigKeyAction("x", "etc/config/upnpc.conf", "UPnP_Global", "Enable", wanted)
    assert action.needed(context(nas)) is needed
    assert len(plan(context(nas), [action])) == int(needed)


def test_a_failed_action_is_journaled_and_the_others_still_go_ahead(nas, tmp_path):
    outside = tmp_path / "outside.conf"
    outside.write_bytes(UPNPC)
    (nas / "etc/config/upnpc.conf").unlink()
    os.symlink(str(outside), str(nas / "etc/config/upnpc.conf"))  # a link out of the checked tree
    result = fix(nas, upnp_off(), telnet_off())
    assert len(result.failed) == 1 and result.failed[0].startswith("/etc/config/upnpc.conf [UPnP_Global] Enable: ")
    assert [r.check_id for r in result.applied] == ["service.telnet"]
    assert [e["event"] for e in events(nas)] == ["planned", "failed", "planned", "applied"]
    assert outside.read_bytes() == UPNPC
    assert b"TELNET Enable = FALSE" in conf(nas)


def test_a_failing_undo_is_reported_and_the_others_are_still_undone(nas, run_cli):
    fix(nas, telnet_off(), upnp_off())
    (nas / "etc/config/upnpc.conf").write_bytes(b"[UPnP_Global]\nEnable = FALSE\nOther = 1\n")
    (nas / "etc/config").chmod(0o755)
    target = nas / "etc/config/upnpc.conf"
    target.unlink()
    target.mkdir()  # no longer a file: its undo cannot work
    code, out, _ = run_cli("undo", "--root", str(nas), "--all")
    assert code == 3
    assert out.count("FAILED to undo") == 1 and out.count(" undone: ") == 1
    assert conf(nas) == ULINUX


# ---------------------------------------------------------------- damaged and forged journal lines
def write_journal(root: Path, lines: List[object]) -> None:
    (root / STATE).mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / STATE / "journal.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_json_lines_that_are_not_events_are_skipped_by_history_and_undo(nas, run_cli):
    write_journal(nas, [[1, 2], "planned", 7, None, {"event": "planned"}, {"change_id": "chg-x"}])
    code, out, _ = run_cli("history", "--root", str(nas), "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run_cli("undo", "--root", str(nas), "--all")
    assert code == 0 and "Nothing to undo" in out


@pytest.mark.parametrize("params,before", [
    ({"file": "etc/config/uLinux.conf", "section": 5, "key": "TELNET Enable"}, "TRUE"),
    ({"file": ["etc/config/uLinux.conf"], "section": "LOGIN", "key": "TELNET Enable"}, "TRUE"),
    ({"file": "etc/config/uLinux.conf", "section": "LOGIN"}, "TRUE"),
    ({"file": "etc/config/uLinux.conf", "section": "LOGIN", "key": "TELNET Enable"}, ["TRUE"]),
    ({"file": "etc/config/uLinux.conf", "section": "LOGIN", "key": "TELNET Enable"}, {"x": 1}),
])
def test_events_with_damaged_fields_are_refused_not_a_crash(nas, run_cli, params, before):
    write_journal(nas, [{"change_id": "chg-bad", "event": "planned", "kind": "config-key", "check_id": "x",
                         "target": "t", "before": before, "after": "FALSE", "params": params, "batch": "b"},
                        {"change_id": "chg-bad", "event": "applied", "params": {}}])
    code, out, _ = run_cli("history", "--root", str(nas))
    assert code == 0 and "chg-bad" in out
    code, out, err = run_cli("undo", "--root", str(nas), "--all")
    assert code == 3 and "chg-bad refused" in out, out + err
    assert conf(nas) == ULINUX


@pytest.mark.parametrize("section,key", [("System", "Web Access Port"), ("Stunnel", "Port"), (" LOGIN ", "SSH Port"),
                                         ("login", "ssh enable"), ("System", "Force SSL"), ("STUNNEL", "Enable")])
def test_a_forged_journal_line_cannot_undo_its_way_into_a_protected_key(nas, run_cli, section, key):
    write_journal(nas, [{"change_id": "chg-forged", "event": "planned", "kind": "config-key", "check_id": "x",
                         "target": "t", "before": "1", "after": "0", "batch": "b",
                         "params": {"file": "etc/config/uLinux.conf", "section": section, "key": key}},
                        {"change_id": "chg-forged", "event": "applied", "params": {}}])
    code, out, _ = run_cli("undo", "--root", str(nas), "--last")
    assert code == 3 and "chg-forged refused" in out and "lock the owner out" in out
    assert conf(nas) == ULINUX


def test_a_change_of_unknown_kind_is_reported_and_the_rest_undone(nas, run_cli):
    fix(nas, telnet_off())
    path = nas / STATE / "journal.jsonl"
    with path.open("a") as handle:
        handle.write(json.dumps({"change_id": "chg-new", "event": "planned", "kind": "firewall-rule", "batch": "z",
                                 "target": "t", "before": None, "after": "x", "params": {}}) + "\n")
    code, out, _ = run_cli("undo", "--root", str(nas), "--all")
    assert code == 3 and "unknown kind 'firewall-rule'" in out
    assert conf(nas) == ULINUX


# ---------------------------------------------------------------- which checks get fixed, by policy
@pytest.mark.parametrize("ini,daemon,expected", [
    ("[agent]\nmode = report\n", True, []),
    ("[agent]\nmode = fix\n", True, ["myqnapcloud.upnp-forwarding", "service.telnet"]),
    ("[agent]\nmode = report\n[checks]\nservice.telnet = fix\n", True, ["service.telnet"]),
    ("[agent]\nmode = fix\n[checks]\nservice.telnet = report\n", True, ["myqnapcloud.upnp-forwarding"]),
    ("[agent]\nmode = fix\n[checks]\nservice.telnet = ignore\nmyqnapcloud.upnp-forwarding = report\n", True, []),
    ("[agent]\nmode = report\n", False, ["myqnapcloud.upnp-forwarding", "service.telnet"]),
    ("[agent]\nmode = report\n[checks]\nservice.telnet = report\n", False, ["myqnapcloud.upnp-forwarding"]),
    ("[agent]\nmode = report\n[checks]\nservice.telnet = ignore\n", False, ["myqnapcloud.upnp-forwarding"]),
], ids=["daemon-report", "daemon-fix", "daemon-report-one-fix", "daemon-fix-one-report", "daemon-ignore-and-report",
        "fix-all", "fix-but-report", "fix-but-ignore"])
def test_mixed_per_check_policies_decide_what_the_daemon_and_fix_change(qts_tree, tmp_path, ini, daemon, expected):
    from exposure_guard.checks.runner import run_checks

    root = qts_tree("exposed")
    settings_file = tmp_path / "s.ini"
    settings_file.write_text(ini)
    ctx = CheckContext(QtsRoot(root), load_settings(settings_file, environ={}), offline=True,
                       state_dir=root / STATE)
    _, outcomes = run_checks(ctx, None)
    planned = plan_fixes(ctx, outcomes, daemon=daemon)
    assert sorted({p.action.check_id for p in planned}) == expected


GOOD_MAPPING = {"remote_host": "", "external_port": 8080, "protocol": "TCP", "internal_port": 8080,
                "internal_client": "10.0.0.2", "enabled": True, "description": "x", "lease_seconds": 0}


@pytest.mark.parametrize("params", [
    {},
    {"control_url": "http://127.0.0.1:9/ctl", "service_type": "urn:x:1"},
    {"control_url": "http://127.0.0.1:9/ctl", "service_type": "urn:x:1", "mapping": "8080"},
    {"control_url": "http://127.0.0.1:9/ctl", "service_type": "urn:x:1", "mapping": dict(GOOD_MAPPING, external_port="x")},
    {"control_url": "file:///etc/passwd", "service_type": "urn:x:1", "mapping": GOOD_MAPPING},
    {"control_url": ["http://127.0.0.1:9/ctl"], "service_type": "urn:x:1", "mapping": GOOD_MAPPING},
    {"control_url": "http://127.0.0.1:9/ctl", "service_type": 1, "mapping": GOOD_MAPPING},
    {"control_url": "http://127.0.0.1:9/ctl", "service_type": "urn:x:1", "mapping": dict(GOOD_MAPPING, protocol="icmp")},
    {"control_url": "http://127.0.0.1:9/ctl", "service_type": "urn:x:1", "mapping": dict(GOOD_MAPPING, external_port=70000)},
    {"control_url": "http://127.0.0.1:9/ctl", "service_type": "urn:x:1", "mapping": dict(GOOD_MAPPING, internal_port=-1)},
])
def test_a_damaged_router_mapping_line_is_refused_without_contacting_anything(nas, run_cli, params):
    write_journal(nas, [{"change_id": "chg-igd", "event": "planned", "kind": "igd-mapping-delete", "check_id": "x",
                         "target": "t", "before": "present", "after": "absent", "batch": "b", "params": params},
                        {"change_id": "chg-igd", "event": "applied", "params": {}}])
    code, out, _ = run_cli("undo", "--root", str(nas), "--last")
    assert code == 3 and "chg-igd refused" in out
