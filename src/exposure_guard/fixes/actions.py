"""Fix actions: one reversible change each, journaled before it is applied and undone from its journal
record alone.

An action kind knows how to tell whether it is still needed (re-running is a no-op), how to apply itself
and how to undo itself. Every kind registers in ``ACTION_KINDS`` (``fixes/__init__`` loads them all, so
``undo`` finds a kind without loading any check). Nothing here may touch admin ports, HTTPS, accounts or
the firewall: ``PROTECTED_KEYS`` refuses them at the action level, whatever a check asks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Optional, Type

from exposure_guard.atomicio import atomic_write, read_bytes_nofollow
from exposure_guard.context import CheckContext
from exposure_guard.errors import ConfigFileError, ExposureGuardError, JournalEntryRefused
from exposure_guard.fixes.journal import ChangeJournal, ChangeRecord
from exposure_guard.qts.config import parse_bool, read_bytes_capped
from exposure_guard.qts.services import find_processes, running_command, start_daemon, stop_daemon

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


def is_protected(section: str, key: str) -> bool:
    """Matched the way the config reader matches names (case and surrounding blanks ignored), so no spelling
    of a protected key gets through."""
    return (section.strip().lower(), key.strip().lower()) in PROTECTED_KEYS


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
        if is_protected(section, key):
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
        # Decided on the file as it is now, not as the checks read it (plan and apply both ask this first):
        # between them the owner (or QTS) may have changed it, and then the action is skipped.
        ctx.config.invalidate(self.file)
        now = self.current(ctx)
        if parse_bool(now) is not None and parse_bool(self.value) is not None:
            return parse_bool(now) != parse_bool(self.value)
        return now != self.value

    def params(self) -> Dict[str, Any]:
        return {"file": self.file, "section": self.section, "key": self.key, "value": self.value}

    def apply(self, ctx: CheckContext, journal: ChangeJournal, change_id: str) -> Dict[str, Any]:
        path = ctx.root.confined(self.file)  # a config file linked out of a --root tree is not ours to change
        backup = journal.backup_file(path, "/" + self.file, change_id)
        ctx.config.setcfg(self.section, self.key, self.value, self.file)
        return {"backup": backup, "sha256_after": _sha256(path)}

    @classmethod
    def undo(cls, ctx: CheckContext, record: ChangeRecord) -> str:
        p = record.params
        file, section, key = (p.get(name) for name in ("file", "section", "key"))
        if not all(isinstance(v, str) and v for v in (file, section, key)) or \
                not isinstance(record.before, (str, type(None))):
            raise JournalEntryRefused("it does not name a file, section and key with a text value before")
        assert isinstance(file, str) and isinstance(section, str) and isinstance(key, str)  # for mypy
        if is_protected(section, key):  # a forged line must not reach the owner's way in either
            raise JournalEntryRefused("it would change [%s] %s, which could lock the owner out" % (section, key))
        path = ctx.root.confined(file)  # the journal line was vetted; links may have changed since
        backup = Path(str(p.get("backup") or ""))
        if p.get("backup") and backup.is_file() and _sha256(path) == p.get("sha256_after"):
            # Nothing else touched the file since: put back the exact original bytes.
            try:
                atomic_write(path, read_bytes_nofollow(backup))
            except OSError as exc:
                raise ConfigFileError("cannot restore %s: %s" % (record.target, exc.strerror)) from None
            ctx.config.invalidate(file)
            return "restored the exact original bytes of /%s" % file
        # The file changed since (QTS or the owner edited it), or the fix never got to say "applied": revert
        # only our key, keep the rest.
        if record.before is None:
            ctx.config.erase(section, key, file)
        else:
            ctx.config.setcfg(section, key, record.before, file)
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
        # Stop it with the command line it really runs with (also what undo starts it with again).
        command = running_command(ctx.root, self.name, self.command)
        return {"result": stop_daemon(ctx.root, self.name, command), "command": command}

    @classmethod
    def undo(cls, ctx: CheckContext, record: ChangeRecord) -> str:
        if record.before != "running":
            return "%s was not running before; left stopped" % record.params["name"]
        return start_daemon(ctx.root, record.params["name"], record.params["command"])


ACTION_KINDS: Dict[str, Type[Action]] = {ConfigKeyAction.kind: ConfigKeyAction, DaemonStopAction.kind: DaemonStopAction}


def register_action_kind(cls: Type[Action]) -> Type[Action]:
    ACTION_KINDS[cls.kind] = cls
    return cls
