"""The change journal: append-only JSON lines with before/after values, plus file backups.

Each change is journaled as ``planned`` before it is applied and ``applied`` (or ``failed``) after, so a
crash in between is visible; ``undo`` appends ``undone`` entries. A torn last line (power loss in the
middle of an append) is skipped, never fatal.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from exposure_guard.atomicio import append_line_durably, atomic_write
from exposure_guard.errors import JournalError
from exposure_guard.report import utc_now


def new_change_id() -> str:
    return "chg-" + os.urandom(6).hex()


@dataclass
class ChangeRecord:
    change_id: str
    check_id: str
    kind: str
    target: str
    before: Optional[str]
    after: Optional[str]
    at: str
    state: str  # planned | applied | failed | undone
    params: Dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    undone_at: str = ""
    batch: str = ""  # one `fix` run (or daemon cycle); `undo --last` reverts the newest batch

    def to_report(self) -> Dict[str, Any]:
        return {"change_id": self.change_id, "check_id": self.check_id, "target": self.target,
                "before": self.before, "after": self.after, "at": self.at}

    def to_dict(self) -> Dict[str, Any]:
        out = self.to_report()
        out.update({"kind": self.kind, "state": self.state, "detail": self.detail, "undone_at": self.undone_at,
                    "batch": self.batch})
        return out


class ChangeJournal:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "journal.jsonl"
        self.backups = self.state_dir / "backups"

    # -- writing -------------------------------------------------------------------------------------
    def append(self, event: Dict[str, Any]) -> None:
        event = dict(event)
        event.setdefault("at", utc_now())
        try:
            append_line_durably(self.path, json.dumps(event, sort_keys=True, ensure_ascii=False))
        except OSError as exc:
            raise JournalError("cannot write the change journal %s: %s; nothing was changed"
                               % (self.path, exc.strerror)) from None

    def backup_file(self, source: Path, shown: str, change_id: str) -> str:
        """Keep a first-ever copy of ``source`` and a copy for this change; returns the per-change copy."""
        self.backups.mkdir(parents=True, exist_ok=True)
        flat = shown.strip("/").replace("/", "__")
        data = source.read_bytes() if source.exists() else None
        first = self.backups / (flat + ".orig")
        if data is not None and not first.exists():
            atomic_write(first, data, mode=0o600)
        mine = self.backups / ("%s.%s" % (change_id, flat))
        if data is not None:
            atomic_write(mine, data, mode=0o600)
            return str(mine)
        return ""

    # -- reading -------------------------------------------------------------------------------------
    def events(self) -> Iterator[Dict[str, Any]]:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise JournalError("cannot read the change journal %s: %s" % (self.path, exc.strerror)) from None
        with handle:
            for raw in handle:
                try:
                    event = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue  # torn or damaged line
                if isinstance(event, dict) and "change_id" in event and "event" in event:
                    yield event

    def changes(self) -> List[ChangeRecord]:
        """One record per change, in the order they were planned, with their latest state."""
        records: Dict[str, ChangeRecord] = {}
        for event in self.events():
            cid = str(event["change_id"])
            kind = event["event"]
            if kind == "planned":
                records[cid] = ChangeRecord(
                    change_id=cid, check_id=str(event.get("check_id", "")), kind=str(event.get("kind", "")),
                    target=str(event.get("target", "")), before=event.get("before"), after=event.get("after"),
                    at=str(event.get("at", "")), state="planned", params=dict(event.get("params") or {}),
                    batch=str(event.get("batch", "")),
                )
            elif cid in records:
                record = records[cid]
                if kind in ("applied", "failed"):
                    record.state = kind
                    record.params.update(event.get("params") or {})
                    record.detail = str(event.get("detail", ""))
                elif kind == "undone":
                    record.state = "undone"
                    record.undone_at = str(event.get("at", ""))
                    record.detail = str(event.get("detail", ""))
        return list(records.values())

    def get(self, change_id: str) -> ChangeRecord:
        for record in self.changes():
            if record.change_id == change_id:
                return record
        raise JournalError("no change %s in the journal %s; see `exposure-guard history`" % (change_id, self.path))
