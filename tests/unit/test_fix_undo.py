"""fix → check passes → undo → byte-identical original, journaled before applied, idempotent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.paths import SRC
from tests.support.qts import tree_bytes

FIXABLE = ["myqnapcloud.upnp-forwarding", "service.telnet"]


@pytest.mark.parametrize("check_id", FIXABLE)
def test_fix_then_check_passes_then_undo_restores_exact_bytes(qts_tree, run_cli, check_id):
    root = qts_tree("exposed")
    original = tree_bytes(root)
    code, out, _ = run_cli("check", "--root", str(root), "--offline", "--only", check_id, "--json")
    assert code == 1 and json.loads(out)["findings"][0]["status"] == "fail"

    code, out, err = run_cli("fix", "--root", str(root), "--offline", "--only", check_id, "--yes")
    assert "applied chg-" in out, out + err
    code, out, _ = run_cli("check", "--root", str(root), "--offline", "--only", check_id, "--json")
    assert code == 0 and json.loads(out)["findings"][0]["status"] == "pass"
    assert tree_bytes(root) != original

    # re-running is a no-op: nothing planned, nothing journaled
    journal = root / "var/exposure-guard/journal.jsonl"
    lines_before = journal.read_text().count("\n")
    code, out, _ = run_cli("fix", "--root", str(root), "--offline", "--only", check_id, "--yes")
    assert code == 0 and "Nothing to fix" in out
    assert journal.read_text().count("\n") == lines_before

    code, out, _ = run_cli("undo", "--root", str(root), "--last")
    assert code == 0 and "restored the exact original bytes" in out
    assert tree_bytes(root) == original
    code, out, _ = run_cli("check", "--root", str(root), "--offline", "--only", check_id, "--json")
    assert code == 1


def test_journal_records_planned_before_applied_and_history_lists_it(qts_tree, run_cli):
    root = qts_tree("exposed")
    run_cli("fix", "--root", str(root), "--offline", "--yes")
    events = [json.loads(line) for line in (root / "var/exposure-guard/journal.jsonl").read_text().splitlines()]
    kinds = [(e["event"], e["change_id"]) for e in events]
    for index, (event, change_id) in enumerate(kinds):
        if event == "applied":
            assert ("planned", change_id) in kinds[:index]
    planned = [e for e in events if e["event"] == "planned"]
    assert {e["check_id"] for e in planned} == set(FIXABLE)
    upnp = next(e for e in planned if e["check_id"] == "myqnapcloud.upnp-forwarding")
    assert upnp["before"] == "TRUE" and upnp["after"] == "FALSE"
    assert upnp["target"] == "/etc/config/upnpc.conf [UPnP_Global] Enable"
    backups = root / "var/exposure-guard/backups"
    assert (backups / "etc__config__upnpc.conf.orig").read_bytes() == b"[UPnP_Global]\nEnable = TRUE\n"
    code, out, _ = run_cli("history", "--root", str(root))
    assert code == 0 and "myqnapcloud.upnp-forwarding" in out and "applied" in out
    code, out, _ = run_cli("history", "--root", str(root), "--json")
    assert {r["state"] for r in json.loads(out)} == {"applied"}


def test_undo_all_and_undo_by_id_and_double_undo(qts_tree, run_cli):
    root = qts_tree("exposed")
    original = tree_bytes(root)
    run_cli("fix", "--root", str(root), "--offline", "--only", "service.telnet", "--yes")
    run_cli("fix", "--root", str(root), "--offline", "--only", "myqnapcloud.upnp-forwarding", "--yes")
    code, out, _ = run_cli("history", "--root", str(root), "--json")
    ids = [r["change_id"] for r in json.loads(out)]
    code, out, _ = run_cli("undo", "--root", str(root), ids[0])
    assert code == 0 and ids[0] in out
    code, out, _ = run_cli("undo", "--root", str(root), "--all")
    assert code == 0
    assert tree_bytes(root) == original
    code, out, _ = run_cli("undo", "--root", str(root), "--all")
    assert "Nothing to undo" in out
    code, _, err = run_cli("undo", "--root", str(root), "chg-doesnotexist")
    assert code == 3 and "no change chg-doesnotexist" in err


def test_undo_keeps_later_edits_by_the_owner(qts_tree, run_cli):
    root = qts_tree("exposed")
    run_cli("fix", "--root", str(root), "--offline", "--only", "service.telnet", "--yes")
    conf = root / "etc/config/uLinux.conf"
    conf.write_bytes(conf.read_bytes().replace(b"Server Name = NAS-OFFICE", b"Server Name = RENAMED"))
    code, out, _ = run_cli("undo", "--root", str(root), "--last")
    assert code == 0 and "other changes since" in out
    data = conf.read_bytes()
    assert b"Server Name = RENAMED" in data and b"TELNET Enable = TRUE" in data


def test_dry_run_changes_nothing(qts_tree, run_cli):
    root = qts_tree("exposed")
    original = tree_bytes(root)
    code, out, _ = run_cli("fix", "--root", str(root), "--offline", "--dry-run")
    assert code == 0 and "Dry run" in out and "[UPnP_Global] Enable: TRUE → FALSE" in out
    assert tree_bytes(root) == original
    assert not (root / "var").exists()


def test_fix_without_yes_and_without_tty_refuses(qts_tree, run_cli, monkeypatch):
    root = qts_tree("exposed")
    original = tree_bytes(root)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    code, _, err = run_cli("fix", "--root", str(root), "--offline")
    assert code == 2 and "--yes" in err
    assert tree_bytes(root) == original


def test_fix_never_touches_protected_keys():
    from exposure_guard.errors import ExposureGuardError
    from exposure_guard.fixes.actions import ConfigKeyAction

    for section, key in [("System", "Web Access Port"), ("Stunnel", "Enable"), ("LOGIN", "SSH Enable"),
                         ("system", "force ssl")]:
        with pytest.raises(ExposureGuardError, match="lock the owner out"):
            ConfigKeyAction("x", "etc/config/uLinux.conf", section, key, "0")


def test_per_check_report_policy_is_respected_by_fix(qts_tree, run_cli, tmp_path):
    root = qts_tree("exposed")
    ini = tmp_path / "s.ini"
    ini.write_text("[checks]\nservice.telnet = report\n")
    code, out, _ = run_cli("fix", "--root", str(root), "--offline", "--settings", str(ini), "--dry-run")
    assert "service.telnet" not in out and "myqnapcloud.upnp-forwarding" in out


def test_daemon_stop_action_uses_daemon_mgr_and_undo_restarts(qts_tree, run_cli):
    """With QTS tools present, the ARC fix stops upnpcd through daemon_mgr; undo starts it again."""
    from exposure_guard.checks.runner import run_checks
    from exposure_guard.context import CheckContext
    from exposure_guard.core import plan_fixes
    from exposure_guard.fixes.apply import apply_actions, undo_changes
    from exposure_guard.fixes.journal import ChangeJournal
    from exposure_guard.qts.root import QtsRoot

    root = qts_tree("exposed")
    calls = fake_daemon(root, "upnpcd", ["/sbin/upnpcd", "-i", "300"], "/sbin/upnpcd -i 300 &")
    ctx = CheckContext(QtsRoot(root, use_tools=True), offline=True, state_dir=root / "var/eg")
    _, outcomes = run_checks(ctx, ["myqnapcloud.upnp-forwarding"])
    planned = plan_fixes(ctx, outcomes, daemon=False)
    assert [p.action.kind for p in planned] == ["config-key", "daemon-stop"]
    journal = ChangeJournal(root / "var/eg")
    result = apply_actions(ctx, journal, planned)
    assert len(result.applied) == 2 and not result.failed
    assert calls.read_text().splitlines() == ["upnpcd stop /sbin/upnpcd -i 300 &"]
    stop = result.applied[1].params  # what the journal keeps: the command to start it with again, and the result
    assert (stop["name"], stop["command"]) == ("upnpcd", "/sbin/upnpcd -i 300 &") and stop["result"]
    report, _ = run_checks(ctx, ["myqnapcloud.upnp-forwarding"])
    assert report.findings[0].status == "pass"
    undo_changes(ctx, journal, journal.changes())
    assert calls.read_text().splitlines()[-1] == "upnpcd start /sbin/upnpcd -i 300 &"
    assert (root / "proc/777/comm").exists()


def fake_daemon(root, name, argv, registered):
    """A daemon in the fake /proc and a daemon_mgr test double that, like QTS, stops it only when given the
    exact command string it was started with (otherwise its watchdog keeps it running)."""
    proc = root / "proc/777"
    proc.mkdir(parents=True)
    (proc / "comm").write_text(name + "\n")
    (proc / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (root / "daemon_mgr.registered").write_text(registered)
    (root / "sbin").mkdir(exist_ok=True)
    calls = root / "daemon_mgr.calls"
    daemon_mgr = root / "sbin/daemon_mgr"
    daemon_mgr.write_text(
        f"#!/bin/sh\necho \"$@\" >> {calls}\n"
        "if [ \"$2\" = stop ]; then\n"
        f"  [ \"$3\" = \"$(cat {root}/daemon_mgr.registered)\" ] && mv {root}/proc/777 {root}/stopped777\n"
        "  exit 0\n"
        "fi\n"
        f"[ -d {root}/stopped777 ] && mv {root}/stopped777 {root}/proc/777\n"
        f"printf '%s' \"$3\" > {root}/daemon_mgr.registered\n")
    daemon_mgr.chmod(0o755)
    return calls


def test_daemon_is_stopped_with_the_command_line_it_really_runs(qts_tree):
    """upnpcd started with other arguments than QTS's usual ones: the stop uses what /proc says, so the
    daemon_mgr double (which ignores a wrong string, like QTS's watchdog) really stops it."""
    from exposure_guard.checks.runner import run_checks
    from exposure_guard.context import CheckContext
    from exposure_guard.core import plan_fixes
    from exposure_guard.fixes.apply import apply_actions, undo_changes
    from exposure_guard.fixes.journal import ChangeJournal
    from exposure_guard.qts.root import QtsRoot

    root = qts_tree("exposed")
    calls = fake_daemon(root, "upnpcd", ["/sbin/upnpcd", "-i", "600"], "/sbin/upnpcd -i 600 &")
    ctx = CheckContext(QtsRoot(root, use_tools=True), offline=True, state_dir=root / "var/eg")
    _, outcomes = run_checks(ctx, ["myqnapcloud.upnp-forwarding"])
    journal = ChangeJournal(root / "var/eg")
    apply_actions(ctx, journal, plan_fixes(ctx, outcomes, daemon=False))
    assert calls.read_text().splitlines() == ["upnpcd stop /sbin/upnpcd -i 600 &"]
    assert not (root / "proc/777").exists()
    undo_changes(ctx, journal, journal.changes())
    assert calls.read_text().splitlines()[-1] == "upnpcd start /sbin/upnpcd -i 600 &"
    assert (root / "proc/777").exists()


def test_the_daemon_mgr_double_ignores_a_guessed_string(qts_tree):
    """The double itself: a wrong command string leaves the daemon running (so the test above can fail)."""
    root = qts_tree("exposed")
    calls = fake_daemon(root, "upnpcd", ["/sbin/upnpcd", "-i", "600"], "/sbin/upnpcd -i 600 &")
    subprocess.run([str(root / "sbin/daemon_mgr"), "upnpcd", "stop", "/sbin/upnpcd -i 300 &"], check=True)
    assert (root / "proc/777").exists() and calls.read_text().strip() == "upnpcd stop /sbin/upnpcd -i 300 &"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare for a read-only mount")
def test_read_only_config_fix_fails_clearly_and_changes_nothing(qts_tree):
    """etc/config mounted read-only (in a private mount namespace): clear error, nothing lost, journal says so."""
    root = qts_tree("exposed")
    conf = root / "etc/config/upnpc.conf"
    before = conf.read_bytes()
    script = 'mount --bind "$1/etc/config" "$1/etc/config" && mount -o remount,bind,ro "$1/etc/config" && shift && exec "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(root), sys.executable, "-m",
         "exposure_guard", "fix", "--root", str(root), "--offline", "--only", "myqnapcloud.upnp-forwarding", "--yes"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(SRC)), stdin=subprocess.DEVNULL, timeout=60)
    if "mount" in proc.stderr and proc.returncode not in (1, 3):
        pytest.skip("cannot make a read-only bind mount here: %s" % proc.stderr.strip()[:200])
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout and "Read-only file system" in proc.stdout and "nothing was changed" in proc.stdout
    assert conf.read_bytes() == before
    events = [json.loads(x) for x in (root / "var/exposure-guard/journal.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["planned", "failed"]


def test_torn_journal_line_after_power_loss_is_skipped(qts_tree, run_cli):
    root = qts_tree("exposed")
    original = tree_bytes(root)
    run_cli("fix", "--root", str(root), "--offline", "--yes")
    journal = root / "var/exposure-guard/journal.jsonl"
    with journal.open("ab") as handle:
        handle.write(b'{"change_id": "chg-torn", "event": "plan')  # power lost mid-append
    code, out, _ = run_cli("history", "--root", str(root), "--json")
    assert code == 0 and len(json.loads(out)) == 2
    assert run_cli("undo", "--root", str(root), "--all")[0] == 0
    assert tree_bytes(root) == original
    code, out, _ = run_cli("history", "--root", str(root), "--json")
    assert [r["state"] for r in json.loads(out)] == ["undone", "undone"]  # entries after the torn line survive
