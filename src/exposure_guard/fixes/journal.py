"""The change journal: append-only JSON lines with before/after values, plus file backups.

Each change is journaled as ``planned`` before it is applied and ``applied`` (or ``failed``) after, so a
crash in between is visible; ``undo`` appends ``undone`` entries. A torn last line (power loss in the
middle of an append) is skipped, never fatal.

The state dir must be one only this user controls (``secure_state_dir``); the journal and backups are
opened without following links, and new backups never replace an existing file. A journal line is data
someone could have forged: ``vet`` confines its ``file`` to the checked root and its ``backup`` to
``backups/`` before undo trusts it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

from exposure_guard.atomicio import append_line_durably, fsync_dir, write_new_file
from exposure_guard.errors import JournalEntryRefused, JournalError, UnsafePathError
from exposure_guard.qts.root import QtsRoot, secure_state_dir
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


def _params(event: Dict[str, Any]) -> Dict[str, Any]:
    """An event's ``params``; a damaged line's non-object params count as none."""
    params = event.get("params")
    return dict(params) if isinstance(params, dict) else {}


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link (refused: another user may have planted it)"
    return exc.strerror or str(exc)


class ChangeJournal:
    """The journal of one state dir. ``root`` is the checked tree (``--root``): the state dir's parents
    inside it are checked too, and journal lines are confined to it."""

    def __init__(self, state_dir: Path, root: Optional[Union[str, os.PathLike[str]]] = None) -> None:
        self.state_dir = Path(os.path.abspath(str(state_dir)))
        self.root = root
        self.path = self.state_dir / "journal.jsonl"
        self.backups = self.state_dir / "backups"

    def _secure(self, create: bool) -> None:
        secure_state_dir(self.state_dir, self.root, create=create)

    # -- writing -------------------------------------------------------------------------------------
    def append(self, event: Dict[str, Any]) -> None:
        self._secure(create=True)
        event = dict(event)
        event.setdefault("at", utc_now())
        try:
            append_line_durably(self.path, json.dumps(event, sort_keys=True, ensure_ascii=False))
        except OSError as exc:
            raise JournalError("cannot write the change journal %s: %s; nothing was changed"
                               % (self.path, _why(exc))) from None

    def _backup_dir(self) -> Path:
        """``backups/``: created 0700, or an existing real directory only this user can write."""
        self._secure(create=True)
        try:
            os.mkdir(str(self.backups), 0o700)
        except FileExistsError:
            pass
        info = os.lstat(str(self.backups))
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or \
                info.st_mode & 0o022:
            raise JournalError("refusing the backup folder %s: it is not a private directory of this user (a "
                               "symbolic link, another owner or writable by others); remove it and run again"
                               % self.backups)
        return self.backups

    def backup_file(self, source: Path, shown: str, change_id: str) -> str:
        """Keep a first-ever copy of ``source`` and a copy for this change; returns the per-change copy.
        Backups are new files (O_EXCL, no links followed): a name planted in ``backups/`` is never written."""
        folder = self._backup_dir()
        flat = shown.strip("/").replace("/", "__")
        data = source.read_bytes() if source.exists() else None
        if data is None:
            return ""
        try:
            write_new_file(folder / (flat + ".orig"), data)
        except FileExistsError:
            pass  # the first-ever copy is kept as it is
        mine = folder / ("%s.%s" % (change_id, flat))
        try:
            write_new_file(mine, data)
        except OSError as exc:
            raise JournalError("cannot write the backup %s: %s" % (mine, _why(exc))) from None
        fsync_dir(folder)
        return str(mine)

    # -- trusting a line -----------------------------------------------------------------------------
    def vet(self, record: ChangeRecord, root: QtsRoot) -> None:
        """Raise JournalEntryRefused unless the record's ``file`` stays inside ``root`` and its ``backup``
        is a file directly in this state dir's ``backups/``."""
        params = record.params
        if "file" in params:
            try:
                root.confined(str(params["file"]))
            except UnsafePathError as exc:
                raise JournalEntryRefused("its file %s" % exc) from None
        backup = params.get("backup")
        if backup:
            path = Path(os.path.abspath(str(backup)))
            inside = str(path.parent) == str(self.backups) and path.name not in ("", ".", "..")
            if not inside or not str(backup).startswith("/") or ".." in Path(str(backup)).parts:
                raise JournalEntryRefused("its backup %r is not in %s" % (str(backup)[:200], self.backups))

    # -- reading -------------------------------------------------------------------------------------
    def events(self) -> Iterator[Dict[str, Any]]:
        self._secure(create=False)
        try:
            fd = os.open(str(self.path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise JournalError("cannot read the change journal %s: %s" % (self.path, _why(exc))) from None
        with os.fdopen(fd, "rb") as handle:
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
                    at=str(event.get("at", "")), state="planned", params=_params(event),
                    batch=str(event.get("batch", "")),
                )
            elif cid in records:
                record = records[cid]
                if kind in ("applied", "failed"):
                    record.state = kind
                    record.params.update(_params(event))
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
