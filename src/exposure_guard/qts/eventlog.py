"""Write to the QTS event log with ``/sbin/log_tool`` (0 info, 1 warning, 2 error), else stderr; and, for the
few events an owner must see, to QTS's Notification Center with ``/usr/local/sbin/notify`` where it exists."""

from __future__ import annotations

import subprocess
import sys

from exposure_guard.contracts.terminal import clean
from exposure_guard.qts.root import QtsRoot

INFO, WARNING, ERROR = 0, 1, 2


def _one_line(message: str, limit: int) -> str:
    """``message`` as one inert line (control sequences shown, not run) of at most ``limit`` characters."""
    return clean(message.replace("\n", " "))[:limit]


def log_event(root: QtsRoot, level: int, message: str) -> bool:
    """Returns True when QTS's log took it."""
    text = "[ExposureGuard] " + _one_line(message, 900)  # shown in QTS's log and terminals
    tool = root.tool("/sbin/log_tool")
    if tool:
        try:
            proc = subprocess.run(
                [tool, "-t%d" % level, "-uSystem", "-p127.0.0.1", "-mlocalhost", "-a", text],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if proc.returncode == 0:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    sys.stderr.write("%s %s\n" % (("info", "warning", "error")[level], text))
    return False


# QDK's installer calls `notify send -A A039 -C C001 -M <id> -l info|error -t 3 "<template with {0} {1}>" ARGS`.
# The app, category and message ids are App Center's own; none is registered for other packages, so this is
# a best guess that fails safe: when notify is missing or refuses, the event is still in the event log (where
# Notification Center's own rules for system warnings and errors pick it up).
NOTIFY_LEVELS = {INFO: "info", WARNING: "warn", ERROR: "error"}


def notify(root: QtsRoot, level: int, message: str) -> bool:
    """Also raise ``message`` in Notification Center; returns True when notify took it."""
    tool = root.tool("/usr/local/sbin/notify")
    if not tool:
        return False
    text = _one_line(message, 500)
    try:
        proc = subprocess.run(
            [tool, "send", "-A", "A039", "-C", "C001", "-M", "46", "-l", NOTIFY_LEVELS[level], "-t", "3",
             "[{0}] {1}", "ExposureGuard", text],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0
