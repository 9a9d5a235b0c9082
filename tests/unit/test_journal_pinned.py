"""The change journal pinned: its lines, the state of each change, backups and what ``vet`` lets through."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from exposure_guard.errors import JournalEntryRefused, JournalError
from exposure_guard.fixes.journal import ChangeJournal, ChangeRecord, new_change_id
from exposure_guard.qts.root import QtsRoot


@pytest.fixture
def journal(tmp_path: Path) -> ChangeJournal:
    (tmp_path / "nas").mkdir()
    return ChangeJournal(tmp_path / "nas/var/eg", tmp_path / "nas")


def lines(journal: ChangeJournal):
    return [json.loads(line) for line in journal.path.read_text("utf-8").splitlines()]


def planned(cid: str, **extra):
    event = {"change_id": cid, "event": "planned", "check_id": "service.telnet", "kind": "config-key",
             "target": "/etc/config/uLinux.conf [LOGIN] TELNET Enable", "before": "TRUE", "after": "FALSE",
             "params": {"file": "etc/config/uLinux.conf"}, "batch": "fix-1"}
    event.update(extra)
    return event


def test_change_ids_are_random_and_well_formed():
    ids = {new_change_id() for _ in range(200)}
    assert len(ids) == 200 and all(re.fullmatch(r"chg-[0-9a-f]{12}", i) for i in ids)


def test_lines_are_sorted_json_keeping_non_ascii_and_a_given_time(journal):
    journal.append({"change_id": "chg-1", "event": "planned", "target": "Gerät é", "at": "2026-01-01T00:00:00Z"})
    journal.append({"event": "x", "change_id": "chg-1"})
    raw = journal.path.read_bytes().decode("utf-8").splitlines()
    assert raw[0] == ('{"at": "2026-01-01T00:00:00Z", "change_id": "chg-1", "event": "planned", '
                      '"target": "Gerät é"}')
    assert re.fullmatch(r'\{"at": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "change_id": "chg-1", "event": "x"\}', raw[1])
    assert stat.S_IMODE(os.stat(str(journal.state_dir)).st_mode) == 0o700


def test_the_state_of_each_change_follows_its_latest_event(journal):
    journal.append(planned("chg-a", at="t1"))
    journal.append(planned("chg-b", at="t2", batch="fix-2", before=None))
    journal.append({"change_id": "chg-a", "event": "applied", "params": {"backup": "/b", "sha256_after": "s"}})
    journal.append({"change_id": "chg-b", "event": "failed", "detail": "Read-only file system"})
    journal.append({"change_id": "chg-a", "event": "undone", "detail": "restored", "at": "t9"})
    journal.append({"change_id": "chg-zz", "event": "applied"})  # no planned line: not a change
    journal.append({"change_id": "chg-a", "event": "something-newer"})  # unknown events change nothing
    a, b = journal.changes()
    assert a == ChangeRecord("chg-a", "service.telnet", "config-key", "/etc/config/uLinux.conf [LOGIN] TELNET Enable",
                             "TRUE", "FALSE", "t1", "undone",
                             {"file": "etc/config/uLinux.conf", "backup": "/b", "sha256_after": "s"},
                             detail="restored", undone_at="t9", batch="fix-1")
    assert (b.state, b.detail, b.before, b.batch, b.undone_at) == ("failed", "Read-only file system", None, "fix-2", "")
    assert a.to_report() == {"change_id": "chg-a", "check_id": "service.telnet", "target": a.target,
                             "before": "TRUE", "after": "FALSE", "at": "t1"}
    assert a.to_dict() == dict(a.to_report(), kind="config-key", state="undone", detail="restored", undone_at="t9",
                               batch="fix-1")
    assert journal.get("chg-b") == b


def test_a_planned_line_with_missing_fields_gives_empty_ones(journal):
    journal.append({"change_id": 7, "event": "planned"})
    (record,) = journal.changes()
    assert (record.change_id, record.check_id, record.kind, record.target, record.before, record.after,
            record.state, record.params, record.batch) == ("7", "", "", "", None, None, "planned", {}, "")
    assert record.at  # append stamped it


def test_get_of_an_unknown_change_names_it_and_the_journal(journal):
    journal.append(planned("chg-a"))
    with pytest.raises(JournalError) as info:
        journal.get("chg-nope")
    assert str(info.value) == "no change chg-nope in the journal %s; see `exposure-guard history`" % journal.path


def test_no_journal_yet_is_no_changes_and_no_state_dir_is_created(journal):
    assert journal.changes() == []
    assert not journal.state_dir.exists()


def test_damaged_lines_are_skipped_and_the_rest_read(journal):
    journal.append(planned("chg-a"))
    with journal.path.open("ab") as handle:
        handle.write(b"\xff\xfe not utf-8\n[1, 2]\n{\"event\": \"planned\"}\n{\"change_id\": \"chg-q\"}\n{torn")
    journal.append(planned("chg-b"))
    assert [r.change_id for r in journal.changes()] == ["chg-a", "chg-b"]


def test_an_unwritable_journal_says_nothing_was_changed(journal):
    journal.append(planned("chg-a"))
    journal.path.unlink()
    journal.path.mkdir()  # appending to a directory fails
    with pytest.raises(JournalError) as info:
        journal.append(planned("chg-b"))
    assert str(info.value).startswith("cannot write the change journal %s: " % journal.path)
    assert str(info.value).endswith("; nothing was changed")


def test_a_journal_that_is_a_link_is_not_read(journal, tmp_path):
    journal.append(planned("chg-a"))
    elsewhere = tmp_path / "elsewhere.jsonl"
    journal.path.rename(elsewhere)
    os.symlink(str(elsewhere), str(journal.path))
    with pytest.raises(JournalError) as info:
        journal.changes()
    assert str(info.value) == ("cannot read the change journal %s: it is a symbolic link (refused: another user may "
                               "have planted it)" % journal.path)


# ---------------------------------------------------------------- backups
def test_backups_are_a_first_ever_copy_and_one_per_change(journal, tmp_path):
    source = tmp_path / "nas/etc/config/uLinux.conf"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"one")
    first = journal.backup_file(source, "/etc/config/uLinux.conf", "chg-1")
    source.write_bytes(b"two")
    second = journal.backup_file(source, "/etc/config/uLinux.conf", "chg-2")
    assert first == str(journal.backups / "chg-1.etc__config__uLinux.conf")
    assert second == str(journal.backups / "chg-2.etc__config__uLinux.conf")
    assert (Path(first).read_bytes(), Path(second).read_bytes()) == (b"one", b"two")
    assert (journal.backups / "etc__config__uLinux.conf.orig").read_bytes() == b"one"
    assert stat.S_IMODE(os.stat(str(journal.backups)).st_mode) == 0o700
    assert journal.backup_file(tmp_path / "nas/missing.conf", "/missing.conf", "chg-3") == ""
    assert not (journal.backups / "missing.conf.orig").exists()


def test_a_backup_name_that_exists_is_an_error_not_overwritten(journal, tmp_path):
    source = tmp_path / "nas/a.conf"
    source.write_bytes(b"new")
    journal.backup_file(source, "/a.conf", "chg-1")
    with pytest.raises(JournalError) as info:
        journal.backup_file(source, "/a.conf", "chg-1")
    assert str(info.value).startswith("cannot write the backup %s: " % (journal.backups / "chg-1.a.conf"))


@pytest.mark.parametrize("how", ["symlink", "file", "group-writable"])
def test_a_backup_folder_that_is_not_private_is_refused(journal, tmp_path, how):
    journal.append(planned("chg-a"))  # creates the state dir
    if how == "symlink":
        (tmp_path / "other").mkdir(mode=0o700)
        os.symlink(str(tmp_path / "other"), str(journal.backups))
    elif how == "file":
        journal.backups.write_bytes(b"")
    else:
        journal.backups.mkdir(mode=0o700)
        os.chmod(str(journal.backups), 0o770)
    source = tmp_path / "nas/a.conf"
    source.write_bytes(b"x")
    with pytest.raises(JournalError, match="^refusing the backup folder %s: it is not a private directory"
                       % re.escape(str(journal.backups))):
        journal.backup_file(source, "/a.conf", "chg-1")


# ---------------------------------------------------------------- vet
def record(**params) -> ChangeRecord:
    return ChangeRecord("chg-v", "x", "config-key", "t", "a", "b", "t0", "applied", params)


def test_vet_accepts_a_line_this_agent_wrote(journal, tmp_path):
    root = QtsRoot(tmp_path / "nas")
    journal.vet(record(file="etc/config/uLinux.conf", backup=str(journal.backups / "chg-1.x")), root)
    journal.vet(record(file="etc/config/uLinux.conf", backup=""), root)
    journal.vet(record(), root)


@pytest.mark.parametrize("backup", ["relative/chg-1.x", "/tmp/chg-1.x", "{b}/../chg-1.x", "{b}/sub/chg-1.x",
                                    "{b}/..", "{b}/."])
def test_vet_refuses_a_backup_outside_the_backup_folder(journal, tmp_path, backup):
    path = backup.format(b=journal.backups)
    with pytest.raises(JournalEntryRefused) as info:
        journal.vet(record(file="etc/config/uLinux.conf", backup=path), QtsRoot(tmp_path / "nas"))
    assert str(info.value) == "its backup %r is not in %s" % (path, journal.backups)


def test_vet_refuses_a_file_outside_the_root(journal, tmp_path):
    with pytest.raises(JournalEntryRefused, match="^its file "):
        journal.vet(record(file="../../etc/shadow"), QtsRoot(tmp_path / "nas"))


def test_events_without_time_or_detail_leave_them_empty(journal):
    journal.append(planned("chg-a"))
    with journal.path.open("a") as handle:
        handle.write('{"change_id": "chg-a", "event": "applied"}\n{"change_id": "chg-a", "event": "undone"}\n')
    (record,) = journal.changes()
    assert (record.state, record.detail, record.undone_at) == ("undone", "", "")
    with journal.path.open("a") as handle:
        handle.write('{"change_id": "chg-b", "event": "planned"}\n{"change_id": "chg-b", "event": "failed"}\n')
    assert [(r.at, r.detail) for r in journal.changes()][1] == ("", "")


def test_a_backup_folder_only_others_may_enter_is_accepted(journal, tmp_path):
    journal.append(planned("chg-a"))
    journal.backups.mkdir(mode=0o700)
    os.chmod(str(journal.backups), 0o711)  # search only, no write: still private
    source = tmp_path / "nas/X"
    source.write_bytes(b"x")
    assert journal.backup_file(source, "/X/", "chg-1") == str(journal.backups / "chg-1.X")


def test_a_refused_backup_is_quoted_cut_to_200_characters(journal, tmp_path):
    long = "/" + "b" * 300
    with pytest.raises(JournalEntryRefused) as info:
        journal.vet(record(backup=long), QtsRoot(tmp_path / "nas"))
    assert str(info.value) == "its backup %r is not in %s" % (long[:200], journal.backups)
