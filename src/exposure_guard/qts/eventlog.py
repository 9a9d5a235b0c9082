"""Write to the QTS event log with ``/sbin/log_tool`` (0 info, 1 warning, 2 error), else stderr."""

from __future__ import annotations

import subprocess
import sys

from exposure_guard.contracts.terminal import clean
from exposure_guard.qts.root import QtsRoot

INFO, WARNING, ERROR = 0, 1, 2


def log_event(root: QtsRoot, level: int, message: str) -> bool:
    """Returns True when QTS's log took it."""
    text = "[ExposureGuard] " + clean(message.replace("\n", " "))[:900]  # shown in QTS's log and terminals
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
