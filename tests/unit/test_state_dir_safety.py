"""`fix` / `undo` / `history` on a tree another user can write (issue 15 item 8).

The state dir (``DIR/var/exposure-guard`` for ``--root DIR``) and its parents within the root must be owned
by the running user and not writable by group or others; journal and backups are opened without following
links; a journal line whose ``file`` leaves the checked root, or whose ``backup`` is not in the state dir's
``backups/``, is refused while the other changes are undone. Real symlinks, real modes, real owners (the
tests run as root and hand a directory to another uid with os.chown)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.qts import tree_bytes

OTHER_UID = 4242  # "another user" of the box
FIX = ("--offline", "--only", "service.telnet", "--yes")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="handing a directory to another uid needs root")


def state_of(root: Path) -> Path:
    return root / "var" / "exposure-guard"


def fix(run_cli, root: Path):
    return run_cli("fix", "--root", str(root), *FIX)


# -- who may own and write the state dir --------------------------------------------------------------------

def test_state_dir_writable_by_others_is_refused_and_nothing_changes(qts_tree, run_cli):
    root = qts_tree("exposed")
    state = state_of(root)
    state.mkdir(parents=True)
    state.chmod(0o777)
    before = (root / "etc/config/uLinux.conf").read_bytes()
    code, out, err = fix(run_cli, root)
    assert code == 2 and "applied" not in out, out + err
    assert str(state) in err and "writable by group or others" in err and "chmod go-w" in err
    assert (root / "etc/config/uLinux.conf").read_bytes() == before
    assert not (state / "journal.jsonl").exists()


@needs_root
def test_state_dir_owned_by_another_user_is_refused(qts_tree, run_cli):
    root = qts_tree("exposed")
    state = state_of(root)
    state.mkdir(parents=True, mode=0o700)
    os.chown(str(state), OTHER_UID, OTHER_UID)
    code, out, err = fix(run_cli, root)
    assert code == 2 and str(state) in err and "owned by uid %d" % OTHER_UID in err
    for command in (("undo", "--all"), ("history",)):
        code, _out, err = run_cli(command[0], "--root", str(root), *command[1:])
        assert code == 2 and str(state) in err


@needs_root
@pytest.mark.parametrize("how", ["writable", "owner"])
def test_a_parent_within_the_root_that_another_user_controls_is_refused(qts_tree, run_cli, how):
    root = qts_tree("exposed")
    (root / "var").mkdir()
    if how == "writable":
        (root / "var").chmod(0o777)
    else:
        os.chown(str(root / "var"), OTHER_UID, OTHER_UID)
    code, _out, err = fix(run_cli, root)
    assert code == 2 and str(root / "var") in err, err
    assert not state_of(root).exists()


def test_root_writable_by_others_is_refused(qts_tree, run_cli):
    root = qts_tree("exposed")
    root.chmod(0o777)
    code, _out, err = fix(run_cli, root)
    assert code == 2 and str(root) in err


def test_state_dir_that_is_a_symlink_is_refused(qts_tree, run_cli, tmp_path):
    root = qts_tree("exposed")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (root / "var").mkdir()
    state_of(root).symlink_to(elsewhere)
    code, _out, err = fix(run_cli, root)
    assert code == 2 and "symbolic link" in err and str(state_of(root)) in err
    assert list(elsewhere.iterdir()) == []


# -- planted links inside a private state dir ----------------------------------------------------------------

def test_journal_symlink_is_not_followed(qts_tree, run_cli, tmp_path):
    root = qts_tree("exposed")
    state = state_of(root)
    state.mkdir(parents=True, mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    (state / "journal.jsonl").symlink_to(victim)
    before = (root / "etc/config/uLinux.conf").read_bytes()
    code, out, err = fix(run_cli, root)
    assert code != 0 and "applied" not in out
    assert "journal" in err and str(state / "journal.jsonl") in err
    assert victim.read_bytes() == b"precious\n"
    assert (root / "etc/config/uLinux.conf").read_bytes() == before
    code, _out, err = run_cli("history", "--root", str(root))
    assert code != 0 and "journal" in err


def test_backups_symlink_is_not_followed(qts_tree, run_cli, tmp_path):
    root = qts_tree("exposed")
    state = state_of(root)
    state.mkdir(parents=True, mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / "backups").symlink_to(elsewhere)
    code, out, err = fix(run_cli, root)
    assert "applied" not in out, out + err
    assert list(elsewhere.iterdir()) == []
    assert str(state / "backups") in out + err


def test_a_planted_backup_name_is_never_written_through(qts_tree, run_cli, tmp_path):
    root = qts_tree("exposed")
    backups = state_of(root) / "backups"
    backups.mkdir(parents=True, mode=0o700)
    state_of(root).chmod(0o700)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    (backups / "etc__config__uLinux.conf.orig").symlink_to(victim)
    code, out, err = fix(run_cli, root)
    assert "applied chg-" in out, out + err
    assert victim.read_bytes() == b"precious\n"


# -- journal lines that point outside the root or the backups ------------------------------------------------

def _forged(change_id: str, file: str, backup: str) -> str:
    planned = {"change_id": change_id, "event": "planned", "check_id": "service.telnet", "kind": "config-key",
               "target": "/%s [LOGIN] TELNET Enable" % file, "before": "TRUE", "after": "FALSE",
               "params": {"file": file, "section": "LOGIN", "key": "TELNET Enable", "value": "FALSE"},
               "batch": "fix-forged", "at": "2024-01-01T00:00:00Z"}
    applied = {"change_id": change_id, "event": "applied", "params": {"backup": backup, "sha256_before": "0",
                                                                       "sha256_after": "0"},
               "at": "2024-01-01T00:00:01Z"}
    return json.dumps(planned) + "\n" + json.dumps(applied) + "\n"


def test_undo_refuses_journal_lines_leaving_the_root_and_undoes_the_rest(qts_tree, run_cli, tmp_path):
    root = qts_tree("exposed")
    original = tree_bytes(root)
    code, out, err = fix(run_cli, root)
    assert "applied chg-" in out, out + err
    outside = tmp_path / "outside.conf"
    outside.write_bytes(b"[LOGIN]\nTELNET Enable = FALSE\n")
    attacker = tmp_path / "attacker-bytes"
    attacker.write_bytes(b"ATTACKER\n")
    (root / "etc/config/link.conf").symlink_to(outside)
    journal = state_of(root) / "journal.jsonl"
    with journal.open("a") as handle:
        handle.write(_forged("chg-dotdot", "../outside.conf", str(attacker)))
        handle.write(_forged("chg-absolute", str(outside), ""))
        handle.write(_forged("chg-link", "etc/config/link.conf", ""))
        handle.write(_forged("chg-backup", "etc/config/uLinux.conf", str(attacker)))
    code, out, err = run_cli("undo", "--root", str(root), "--all")
    assert code == 3, out + err
    for change_id in ("chg-dotdot", "chg-absolute", "chg-link", "chg-backup"):
        assert "%s refused:" % change_id in out, out
    assert "leaves the checked root" in out and "not in %s" % (state_of(root) / "backups") in out
    assert outside.read_bytes() == b"[LOGIN]\nTELNET Enable = FALSE\n"
    (root / "etc/config/link.conf").unlink()
    assert tree_bytes(root) == original  # the genuine change was undone (exact bytes)
    assert b"ATTACKER" not in (root / "etc/config/uLinux.conf").read_bytes()


def test_planted_lock_files_are_not_followed(tmp_path):
    from exposure_guard import spool
    from exposure_guard.daemon import InstanceLock

    state = tmp_path / "state"
    (state / "spool").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    (state / "agent.lock").symlink_to(victim)
    (state / "spool" / ".lock").symlink_to(victim)
    with pytest.raises(OSError), InstanceLock(state / "agent.lock"):
        pass
    with pytest.raises(OSError), spool.spool_lock(state):
        pass
    assert victim.read_bytes() == b"precious\n"
