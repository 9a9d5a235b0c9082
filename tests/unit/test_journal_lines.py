"""A damaged journal (torn write, another tool, an attacker with write access) never stops history/undo."""

from __future__ import annotations

from pathlib import Path

from exposure_guard.fixes.journal import ChangeJournal


def test_params_that_are_not_an_object_count_as_none(tmp_path: Path) -> None:
    # Found by the journal fuzz test: dict(1.0) raised TypeError and `history` crashed.
    (tmp_path / "journal.jsonl").write_text(
        '{"change_id": "c1", "event": "planned", "params": 1.0}\n'
        '{"change_id": "c2", "event": "planned", "params": {"file": "etc/config/uLinux.conf"}}\n'
        '{"change_id": "c2", "event": "applied", "params": [["a", "b"]]}\n'
        '{"change_id": "c1", "event": "applied", "params": "xy"}\n', encoding="utf-8")
    records = {r.change_id: r for r in ChangeJournal(tmp_path).changes()}
    assert records["c1"].params == {} and records["c1"].state == "applied"
    assert records["c2"].params == {"file": "etc/config/uLinux.conf"} and records["c2"].state == "applied"
