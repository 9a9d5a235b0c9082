"""Running QTS daemons: find them in /proc and stop them the way QTS does (``daemon_mgr``)."""

from __future__ import annotations

import os
from typing import Dict, List

from exposure_guard.qts.root import QtsRoot

# How QTS registers these daemons with daemon_mgr (docs/qts-facts.md, "Processes and daemon_mgr"). Only the
# fallback: the command a daemon is stopped with is read from the running process (running_command).
UPNPCD_COMMAND = "/sbin/upnpcd -i 300 &"
TELNETD_COMMAND = "/usr/sbin/utelnetd"


def process_table(root: QtsRoot) -> Dict[str, List[int]]:
    """Every running process by name: its command name (``/proc/PID/comm``) and its argv[0] basename."""
    table: Dict[str, List[int]] = {}
    proc = root.path("proc")
    try:
        entries = os.listdir(str(proc))
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        base = proc / entry
        names = set()
        try:
            names.add((base / "comm").read_text("utf-8", "replace").strip())
        except OSError:
            pass
        try:
            argv0 = (base / "cmdline").read_bytes().split(b"\0", 1)[0].decode("utf-8", "replace")
            names.add(os.path.basename(argv0))
        except OSError:
            pass
        for name in names - {""}:
            table.setdefault(name, []).append(int(entry))
    return table


def find_processes(root: QtsRoot, name: str) -> List[int]:
    """PIDs whose command name or argv[0] basename is ``name``."""
    return sorted(process_table(root).get(name, []))


def running_command(root: QtsRoot, name: str, registered: str) -> str:
    """The command string daemon_mgr knows a running daemon by: the process's own command line from
    /proc (argv joined by spaces), keeping the registration's trailing `` &`` (QTS starts upnpcd as
    ``/sbin/upnpcd -i 300 &``). daemon_mgr stops only the exact string it started: with a guessed one
    its watchdog starts the daemon again. ``registered`` is used when no process is found."""
    for pid in find_processes(root, name):
        try:
            raw = root.path("proc/%d/cmdline" % pid).read_bytes()[:4096]
        except OSError:
            continue
        argv = [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
        if argv:
            return " ".join(argv) + (" &" if registered.rstrip().endswith("&") else "")
    return registered


def stop_daemon(root: QtsRoot, name: str, command: str) -> str:
    """Stop a QTS-managed daemon. Live: ``/sbin/daemon_mgr NAME stop "COMMAND"`` (so QTS's watchdog does
    not restart it), then SIGTERM whatever is left. Fake trees: nothing to signal; says what it would do."""
    import signal
    import subprocess  # here, not at the top: a check that starts no process should not load it

    tool = root.tool("/sbin/daemon_mgr")
    if tool:
        subprocess.run([tool, name, "stop", command], capture_output=True, timeout=30, check=False)
    if root.is_live:
        for pid in find_processes(root, name):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        return "stopped %s via %s" % (name, tool or "SIGTERM")
    return "would stop %s (not a live system)" % name


def start_daemon(root: QtsRoot, name: str, command: str) -> str:
    import subprocess

    tool = root.tool("/sbin/daemon_mgr")
    if tool:
        subprocess.run([tool, name, "start", command], capture_output=True, timeout=30, check=False)
        return "started %s via %s" % (name, tool)
    return "would start %s (not a live system)" % name
