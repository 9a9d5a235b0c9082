"""Planning, applying and undoing fix actions: the journal sees every change before it happens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from exposure_guard.context import CheckContext
from exposure_guard.contracts import utc_now
from exposure_guard.errors import ExposureGuardError, JournalEntryRefused, JournalError
from exposure_guard.fixes.actions import ACTION_KINDS, Action
from exposure_guard.fixes.journal import ChangeJournal, ChangeRecord, new_change_id


@dataclass
class PlannedAction:
    action: Action
    before: Optional[str]
    description: str


@dataclass
class FixResult:
    applied: List[ChangeRecord] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # already in the wanted state
    failed: List[str] = field(default_factory=list)


def plan(ctx: CheckContext, actions: List[Action]) -> List[PlannedAction]:
    out = []
    for action in actions:
        if action.needed(ctx):
            out.append(PlannedAction(action, action.current(ctx), action.describe(ctx)))
    return out


def apply_actions(ctx: CheckContext, journal: ChangeJournal, planned: List[PlannedAction]) -> FixResult:
    """Apply each planned action still needed, journaling it before and after; a failed action is recorded
    and the others go ahead."""
    result = FixResult()
    batch = "fix-" + new_change_id()[4:]
    for item in planned:
        action = item.action
        if not action.needed(ctx):
            result.skipped.append(action.target)
            continue
        change_id = new_change_id()
        at = utc_now()  # the journal's and the report's time of this change
        base = {"change_id": change_id, "check_id": action.check_id, "kind": action.kind,
                "target": action.target, "before": item.before, "after": action.after, "params": action.params(),
                "batch": batch, "at": at}
        journal.append(dict(base, event="planned"))  # journaled before it is applied
        try:
            extra = action.apply(ctx, journal, change_id)
        except (ExposureGuardError, OSError) as exc:
            journal.append({"change_id": change_id, "event": "failed", "detail": str(exc)})
            result.failed.append("%s: %s" % (action.target, exc))
            continue
        journal.append({"change_id": change_id, "event": "applied", "params": extra})
        record = ChangeRecord(change_id, action.check_id, action.kind, action.target, item.before, action.after,
                              at, "applied", dict(action.params(), **extra), batch=batch)
        result.applied.append(record)
    ctx.refresh()
    return result


class UndoLines(List[str]):
    """A line per change; ``refused`` counts journal lines refused as unsafe or damaged (ChangeJournal.vet and
    the action kinds), ``failed`` the undos that went wrong (the others still go ahead)."""

    refused = 0
    failed = 0


def undo_changes(ctx: CheckContext, journal: ChangeJournal, records: List[ChangeRecord]) -> UndoLines:
    """Undo in reverse order; returns a line per change. Already-undone changes are skipped; a journal line
    whose file leaves the checked root, whose backup is not in ``backups/`` or that is damaged or aims at a
    protected key is refused, and an undo that fails is reported: the others go on either way."""
    lines = UndoLines()
    for record in reversed(records):
        if record.state == "undone":
            lines.append("%s already undone" % record.change_id)
            continue
        if record.state == "failed":
            lines.append("%s had failed; nothing to undo" % record.change_id)
            continue
        try:
            kind = ACTION_KINDS.get(record.kind)
            if kind is None:
                raise JournalError("it is of unknown kind %r (written by a newer agent?)" % record.kind[:60])
            journal.vet(record, ctx.root)
            detail = kind.undo(ctx, record)
        except JournalEntryRefused as exc:
            lines.append("%s refused: %s; not undone (the journal line was not written by this agent, or the "
                         "tree moved)" % (record.change_id, exc))
            lines.refused += 1
            continue
        except (ExposureGuardError, OSError) as exc:
            lines.append("%s FAILED to undo: %s" % (record.change_id, exc))
            lines.failed += 1
            continue
        journal.append({"change_id": record.change_id, "event": "undone", "detail": detail})
        lines.append("%s undone: %s" % (record.change_id, detail))
    ctx.refresh()
    return lines
