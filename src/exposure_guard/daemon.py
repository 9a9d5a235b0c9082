"""``exposure-guard run``: check every interval (+ up to 10% jitter), fix per policy, record, check in."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Any, Optional, Tuple

import schedule

from exposure_guard.atomicio import atomic_write
from exposure_guard.context import CheckContext
from exposure_guard.core import check_once, fix_once, plan_fixes, write_last_report
from exposure_guard.errors import EXIT_FINDINGS, EXIT_OK, ExposureGuardError, LockedError
from exposure_guard.qts.eventlog import ERROR, INFO, WARNING, log_event, notify
from exposure_guard.qts.root import QtsRoot
from exposure_guard.report import Report
from exposure_guard.settings import Settings

VERDICT_FILE = "last-verdict"  # the verdict of the previous cycle: Notification Center hears of changes only


class InstanceLock:
    """One agent per state dir: an flock that the kernel drops if the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Optional[IO[str]] = None

    def __enter__(self) -> InstanceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Never through a link: the pid is written after truncating, so a planted link would wipe its target.
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        handle = os.fdopen(fd, "r+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise LockedError("another exposure-guard agent is running (lock %s held)" % self.path) from None
        handle.seek(0)
        handle.truncate()
        handle.write("%d\n" % os.getpid())
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class Daemon:
    def __init__(self, root: QtsRoot, settings: Settings, state_dir: Path, offline: bool = False) -> None:
        self.root = root
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.offline = offline
        self.stop_event = threading.Event()
        self.cycles = 0
        self.last_checkin = ""
        self._settings_stamp = self._stamp()

    # -- settings changed on disk (the page, or the owner by hand) -------------------------------------
    def _stamp(self) -> Optional[Tuple[int, int]]:
        try:
            info = os.stat(str(self.settings.path)) if self.settings.path else None
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size) if info else None

    def _reload_settings(self) -> None:
        """Use the settings file as it is now when it changed since the last cycle; a file that does not load
        keeps the previous settings (and says why in the event log)."""
        stamp = self._stamp()
        if stamp is None or stamp == self._settings_stamp or self.settings.path is None:
            return
        self._settings_stamp = stamp
        from exposure_guard.checks.runner import validate_policies
        from exposure_guard.settings import load_settings

        try:
            fresh = load_settings(self.settings.path, environ=os.environ, required=True)
            validate_policies(fresh)
        except ExposureGuardError as exc:
            log_event(self.root, WARNING, "the settings file changed but cannot be used (%s); keeping the previous "
                      "settings" % exc)
            return
        self.settings = fresh
        log_event(self.root, INFO, "settings reloaded (every %ds, mode %s)" % (fresh.get("agent", "interval"),
                                                                           fresh.mode))

    # -- one cycle ------------------------------------------------------------------------------------
    def cycle(self) -> Report:
        self._reload_settings()
        from exposure_guard.checkin import with_server_prober  # requests: only when a cycle runs

        settings = with_server_prober(self.settings, self.state_dir)  # the fleet's prober unless the owner set one
        ctx = CheckContext(self.root, settings, offline=self.offline, state_dir=self.state_dir)
        run = check_once(ctx)
        report = run.report
        planned = plan_fixes(ctx, run.outcomes, daemon=True)
        if planned:
            fixed = fix_once(ctx, planned)
            report = fixed.report
            for line in fixed.result.failed:
                log_event(self.root, ERROR, "fix failed: " + line)
            for change in report.changes:
                log_event(self.root, WARNING, "changed %s from %r to %r (undo: exposure-guard undo %s)"
                          % (change["target"], change["before"], change["after"], change["change_id"]))
        self.cycles += 1
        problem = write_last_report(self.state_dir, report)
        if problem:
            log_event(self.root, WARNING, problem)
        self._log_verdict(report)
        self._check_in(report.to_dict())
        return report

    def _log_verdict(self, report: Report) -> None:
        verdict = report.verdict()
        failing = [f.id for f in report.findings if f.status == "fail"]
        level = {"EXPOSED": ERROR, "AT RISK": WARNING}.get(verdict, INFO)
        message = "%s: %d failing check(s)%s" % (verdict, len(failing), (": " + ", ".join(failing[:8])) if failing
                                                  else "")
        log_event(self.root, level, message)
        previous = self._previous_verdict()
        if verdict != previous:  # one notification when the verdict changes, not one per run
            notify(self.root, level, ("%s (was %s)" % (message, previous)) if previous else message)
            try:
                atomic_write(self.state_dir / VERDICT_FILE, verdict.encode("ascii") + b"\n", mode=0o600)
            except OSError as exc:
                log_event(self.root, WARNING, "cannot remember the verdict in %s: %s" % (self.state_dir, exc))

    def _previous_verdict(self) -> str:
        try:
            text = (self.state_dir / VERDICT_FILE).read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return ""
        return text if text in ("EXPOSED", "AT RISK", "OK") else ""

    def _check_in(self, document: dict) -> None:
        from exposure_guard import checkin

        # `enroll --server URL` records the server, so settings need not repeat it.
        if not self.settings.get("server", "url") and not (self.state_dir / checkin.ENROLLMENT_FILE).exists():
            self.last_checkin = "check-in: none (not enrolled with a server, and [server] url is empty)"
            return
        try:
            checkin.spool_report(self.state_dir, document, self.settings.get("server", "spool_max"))
            result = checkin.deliver_spool(self.settings, self.state_dir, deadline=60)
            self.last_checkin = result.summary()
            if getattr(result, "error", None):
                log_event(self.root, WARNING, "check-in: %s" % result.error)
        except ExposureGuardError as exc:
            self.last_checkin = "check-in failed: %s" % exc
            log_event(self.root, WARNING, "check-in: %s" % exc)

    # -- entry points ---------------------------------------------------------------------------------
    def run_once_locked(self) -> int:
        with InstanceLock(self.state_dir / "agent.lock"):
            report = self.cycle()
        # One run from a shell: say what happened to the report (the daemon only logs it).
        sys.stdout.write("%s; %s\n" % (report.verdict(), self.last_checkin))
        return EXIT_FINDINGS if report.failing(self.settings.get("agent", "fail_on")) else EXIT_OK

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            self.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def next_delay(self) -> float:
        interval = self.settings.get("agent", "interval")
        return interval + random.uniform(0, interval * 0.1)

    def run_forever(self) -> int:
        self._install_signal_handlers()
        scheduler = schedule.Scheduler()
        with InstanceLock(self.state_dir / "agent.lock"):
            log_event(self.root, INFO, "agent started (pid %d, every %ds, mode %s)"
                      % (os.getpid(), self.settings.get("agent", "interval"), self.settings.mode))
            self._safe_cycle()

            def job() -> Any:
                self._safe_cycle()
                # Re-arm with fresh jitter so a fleet does not drift into lock-step.
                scheduler.clear()
                scheduler.every(int(self.next_delay())).seconds.do(job)
                return schedule.CancelJob

            scheduler.every(int(self.next_delay())).seconds.do(job)
            while not self.stop_event.is_set():
                scheduler.run_pending()
                wait = scheduler.idle_seconds
                self.stop_event.wait(min(max(wait if wait is not None else 1.0, 0.05), 5.0))
            log_event(self.root, INFO, "agent stopped")
        return EXIT_OK

    def _safe_cycle(self) -> None:
        try:
            self.cycle()
        except ExposureGuardError as exc:
            log_event(self.root, ERROR, "check run failed: %s" % exc)
        except Exception as exc:  # the daemon must survive a bad cycle
            log_event(self.root, ERROR, "internal error in check run: %r" % exc)


__all__ = ["Daemon", "InstanceLock"]
