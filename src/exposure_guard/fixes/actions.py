"""Safe fixes: planned actions, journaled before they are applied, each reversible with ``undo``.

An action kind knows how to tell whether it is still needed (re-running is a no-op), how to apply
itself and how to undo itself from its journal record alone. New kinds (e.g. IGD mapping deletion)
register in ``ACTION_KINDS``. Nothing here may touch admin ports, HTTPS, accounts or the firewall.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Type

from exposure_guard.atomicio import atomic_write
from exposure_guard.checks.context import CheckContext
from exposure_guard.errors import ConfigFileError, ExposureGuardError, JournalError
from exposure_guard.journal import ChangeJournal, ChangeRecord, new_change_id
from exposure_guard.qts.config import parse_bool, read_bytes_capped
from exposure_guard.qts.services import find_processes, start_daemon, stop_daemon
from exposure_guard.report import utc_now

# Keys a fix must never change, whatever a check asks: they are the owner's ways in.
PROTECTED_KEYS = frozenset(
    {
        ("system", "web access port"),
        ("stunnel", "enable"),
        ("stunnel", "port"),
        ("system", "force ssl"),
        ("login", "ssh enable"),
        ("login", "ssh port"),
    }
)


def _sha256(path: Path) -> Optional[str]:
    try:
        return hashlib.sha256(read_bytes_capped(path)).hexdigest()
    except OSError:
        return None


class Action:
    """One reversible change. Subclasses set ``kind`` and implement the four methods."""

    kind = ""

    def __init__(self, check_id: str) -> None:
        self.check_id = check_id

    @property
    def target(self) -> str:
        raise NotImplementedError

    def current(self, ctx: CheckContext) -> Optional[str]:
        raise NotImplementedError

    @property
    def after(self) -> Optional[str]:
        raise NotImplementedError

    def needed(self, ctx: CheckContext) -> bool:
        return self.current(ctx) != self.after

    def params(self) -> Dict[str, Any]:
        raise NotImplementedError

    def apply(self, ctx: CheckContext, journal: ChangeJournal, change_id: str) -> Dict[str, Any]:
        """Do it; return extra params needed to undo (hashes, backups)."""
        raise NotImplementedError

    @classmethod
    def undo(cls, ctx: CheckContext, record: ChangeRecord) -> str:
        """Revert ``record``; return a one-line description of what was done."""
        raise NotImplementedError

    def describe(self, ctx: CheckContext) -> str:
        return "%s: %s → %s" % (self.target, self.current(ctx), self.after)


class ConfigKeyAction(Action):
    """``setcfg SECTION KEY VALUE -f FILE`` with a backup; undo restores the exact bytes."""

    kind = "config-key"

    def __init__(self, check_id: str, file: str, section: str, key: str, value: str) -> None:
        super().__init__(check_id)
        if (section.lower(), key.lower()) in PROTECTED_KEYS:
            raise ExposureGuardError("refusing to plan a change of [%s] %s: it could lock the owner out"
                                     % (section, key))
        self.file, self.section, self.key, self.value = file.lstrip("/"), section, key, value

    @property
    def target(self) -> str:
        return "/%s [%s] %s" % (self.file, self.section, self.key)

    @property
    def after(self) -> Optional[str]:
        return self.value

    def current(self, ctx: CheckContext) -> Optional[str]:
        return ctx.config.getcfg(self.section, self.key, self.file)

    def needed(self, ctx: CheckContext) -> bool:
        now = self.current(ctx)
        if parse_bool(now) is not None and parse_bool(self.value) is not None:
            return parse_bool(now) != parse_bool(self.value)
        return now != self.value

    def params(self) -> Dict[str, Any]:
        return {"file": self.file, "section": self.section, "key": self.key, "value": self.value}

    def apply(self, ctx: CheckContext, journal: ChangeJournal, change_id: str) -> Dict[str, Any]:
        path = ctx.root.path(self.file)
        backup = journal.backup_file(path, "/" + self.file, change_id)
        before_sha = _sha256(path)
        ctx.config.setcfg(self.section, self.key, self.value, self.file)
        return {"backup": backup, "sha256_before": before_sha, "sha256_after": _sha256(path)}

    @classmethod
    def undo(cls, ctx: CheckContext, record: ChangeRecord) -> str:
        p = record.params
        path = ctx.root.path(p["file"])
        backup = Path(p.get("backup") or "")
        if p.get("backup") and backup.is_file() and _sha256(path) == p.get("sha256_after"):
            # Nothing else touched the file since: put back the exact original bytes.
            try:
                atomic_write(path, backup.read_bytes())
            except OSError as exc:
                raise ConfigFileError("cannot restore %s: %s" % (record.target, exc.strerror)) from None
            ctx.config.invalidate(p["file"])
            return "restored the exact original bytes of /%s" % p["file"]
        # The file changed since (QTS or the owner edited it): revert only our key, keep the rest.
        if record.before is None:
            ctx.config.erase(p["section"], p["key"], p["file"])
        else:
            ctx.config.setcfg(p["section"], p["key"], record.before, p["file"])
        return "set %s back to %r (the file had other changes since; they were kept)" % (record.target, record.before)


class DaemonStopAction(Action):
    """Stop a QTS daemon through ``daemon_mgr``; undo starts it again only if it had been running."""

    kind = "daemon-stop"

    def __init__(self, check_id: str, name: str, command: str) -> None:
        super().__init__(check_id)
        self.name, self.command = name, command

    @property
    def target(self) -> str:
        return "process %s" % self.name

    @property
    def after(self) -> Optional[str]:
        return "stopped"

    def current(self, ctx: CheckContext) -> Optional[str]:
        return "running" if find_processes(ctx.root, self.name) else "stopped"

    def params(self) -> Dict[str, Any]:
        return {"name": self.name, "command": self.command}

    def apply(self, ctx: CheckContext, journal: ChangeJournal, change_id: str) -> Dict[str, Any]:
        return {"result": stop_daemon(ctx.root, self.name, self.command)}

    @classmethod
    def undo(cls, ctx: CheckContext, record: ChangeRecord) -> str:
        if record.before != "running":
            return "%s was not running before; left stopped" % record.params["name"]
        return start_daemon(ctx.root, record.params["name"], record.params["command"])


ACTION_KINDS: Dict[str, Type[Action]] = {ConfigKeyAction.kind: ConfigKeyAction, DaemonStopAction.kind: DaemonStopAction}


def register_action_kind(cls: Type[Action]) -> Type[Action]:
    ACTION_KINDS[cls.kind] = cls
    return cls


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


def apply_actions(ctx: CheckContext, journal: ChangeJournal, planned: List[PlannedAction],
                  on_applied: Optional[Callable[[ChangeRecord], None]] = None) -> FixResult:
    result = FixResult()
    batch = "fix-" + new_change_id()[4:]
    for item in planned:
        action = item.action
        if not action.needed(ctx):
            result.skipped.append(action.target)
            continue
        change_id = new_change_id()
        base = {"change_id": change_id, "check_id": action.check_id, "kind": action.kind,
                "target": action.target, "before": item.before, "after": action.after, "params": action.params(),
                "batch": batch}
        journal.append(dict(base, event="planned"))  # journaled before it is applied
        try:
            extra = action.apply(ctx, journal, change_id)
        except (ExposureGuardError, OSError) as exc:
            journal.append({"change_id": change_id, "event": "failed", "detail": str(exc)})
            result.failed.append("%s: %s" % (action.target, exc))
            continue
        journal.append({"change_id": change_id, "event": "applied", "params": extra})
        record = ChangeRecord(change_id, action.check_id, action.kind, action.target, item.before, action.after,
                              utc_now(), "applied", dict(action.params(), **extra), batch=batch)
        result.applied.append(record)
        if on_applied:
            on_applied(record)
    ctx.refresh()
    return result


def undo_changes(ctx: CheckContext, journal: ChangeJournal, records: List[ChangeRecord]) -> List[str]:
    """Undo in reverse order; returns a line per change. Already-undone changes are skipped."""
    lines = []
    for record in reversed(records):
        if record.state == "undone":
            lines.append("%s already undone" % record.change_id)
            continue
        if record.state == "failed":
            lines.append("%s had failed; nothing to undo" % record.change_id)
            continue
        kind = ACTION_KINDS.get(record.kind)
        if kind is None:  # kinds defined by a check family (e.g. igd-mapping-delete) register on import
            from exposure_guard.checks.registry import _load_families

            _load_families()
            kind = ACTION_KINDS.get(record.kind)
        if kind is None:
            raise JournalError("change %s is of unknown kind %r (written by a newer agent?)" % (record.change_id,
                                                                                              record.kind))
        detail = kind.undo(ctx, record)
        journal.append({"change_id": record.change_id, "event": "undone", "detail": detail})
        lines.append("%s undone: %s" % (record.change_id, detail))
    ctx.refresh()
    return lines


def plan_fixes(ctx: CheckContext, outcomes: Dict[str, Any], *, daemon: bool) -> List[PlannedAction]:
    """Planned actions for failing fixable checks. The `fix` command fixes every one the owner has not set to
    ``report`` or ``ignore`` in [checks]; the daemon only those whose policy is ``fix``."""
    from exposure_guard.checks.registry import get_check

    planned: List[PlannedAction] = []
    for check_id, outcome in outcomes.items():
        check = get_check(check_id)
        if check is None or check.plan_fix is None or outcome.status != "fail":
            continue
        override = ctx.settings.policies.get(check_id)
        if daemon and ctx.settings.policy(check_id) != "fix":
            continue
        if not daemon and override in ("report", "ignore"):
            continue
        planned.extend(plan(ctx, check.plan_fix(ctx, outcome)))
    return planned
